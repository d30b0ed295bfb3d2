"""Writing outputs safely: check a destination before any work, write atomically, sweep what a kill left.

Why one module: every verb writes files (model folders, training states, evaluation records,
synthetic scenes, maps), and each of three failures costs a user something. A destination that
cannot be written, found only at the last write, wastes the whole run: `check_output_folder` and
`check_output_file` fail at once, before any work. A file written in place and interrupted is
truncated: `atomic_write` writes a hidden temporary file next to the target and renames it (atomic
on POSIX), so the target is always a complete old or new version. A `kill -9` during a write
leaves that temporary file behind: its name has one recognisable shape, so `remove_stale_temps`
sweeps it on the next start.

A written file gets the mode any new file of the user gets (0666 less the umask: 0644 under the
usual 022, 0664 under a lab's shared 002). `tempfile.mkstemp` would give 0600 and the rename
would keep it, so results in a shared folder could be read by their writer only; the temporary
file is created here with `os.open(..., 0o666)`, the kernel applies the umask as for any file, and
a writer that replaces the file by its own (safetensors does, with 0600) gets that mode back.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from eclip.errors import OutputError

#: `.<target name>.<8 random characters>.tmp`, the only shape of temporary file `atomic_write` makes.
_TEMP = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def atomic_write(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary file next to `target`, then rename it onto `target`.

    The temporary file is removed if `write` fails (an exception, including KeyboardInterrupt);
    only a hard kill can leave it, and `remove_stale_temps` sweeps it later.
    """
    target = Path(target)
    try:
        tmp = _create_temp(target)
    except OSError as err:
        raise _naming(err, target, None) from err
    mode = tmp.stat().st_mode & 0o777  # what the umask gave the new file
    try:
        write(tmp)
        if tmp.stat().st_mode & 0o777 != mode:  # a writer that replaced the file (safetensors makes it 0600)
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as err:
        failure = _naming(err, target, tmp) if isinstance(err, Exception) else err  # before the unlink frees the disk
        tmp.unlink(missing_ok=True)
        if failure is err:
            raise
        raise failure from err
    return target


#: How a native writer reports an operating-system error in its message (safetensors: "I/O error: ... (os error 28)").
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _naming(err: Exception, target: Path, tmp: Path | None) -> Exception:
    """The error of a failed write, as an OSError that names `target` (not the hidden temporary file), when it is one.

    A full disk reaches a writer in several forms: an OSError without a file name (`file.write`,
    PIL, matplotlib), a short write without an errno (numpy: "100000 requested and 2032 written"),
    or a library's own error carrying the OS error in its text (safetensors). Each becomes
    `OSError(errno, reason, target)`, so the message names the file the user asked for. Any other
    error, and an OSError about another file (a source the writer read), is returned unchanged.
    """
    if isinstance(err, OSError):
        if err.filename not in (None, str(tmp), tmp):
            return err
        number = err.errno
    else:
        found = _OS_ERROR.search(str(err))
        if found is None:
            return err
        number = int(found.group(1))
    if number is None and _disk_is_full(target.parent):
        number = errno.ENOSPC
    reason = os.strerror(number) if number else (getattr(err, "strerror", None) or str(err))
    return OSError(number, reason, str(target))


def _disk_is_full(folder: Path) -> bool:
    """True when the file system of `folder` has no block left for this user."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


def _create_temp(target: Path) -> Path:
    """A new empty file `.<target name>.<8 random characters>.tmp` next to `target`, with the umask's mode."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{target.parent}: no free temporary name for {target.name} after 100 tries")


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `target` atomically."""
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def temp_target(name: str) -> str | None:
    """The target name a temporary file of `atomic_write` called `name` was meant for, else None."""
    match = _TEMP.match(name)
    return match.group("target") if match else None


def remove_stale_temps(folder: str | Path, targets: Iterable[str] | None = None) -> list[Path]:
    """Delete the temporary files a killed `atomic_write` left in `folder` (for `targets` only, if given)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    wanted = None if targets is None else set(targets)
    removed = []
    for path in folder.iterdir():
        target = temp_target(path.name)
        if target is not None and (wanted is None or target in wanted) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _nearest_existing(path: Path) -> Path:
    """`path` itself if it exists, else its closest existing ancestor."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _named(path: Path, option: str | None) -> str:
    """How a message names `path`: after the caller's name for it (`option`), when it gives one."""
    return f"{option} {path}" if option else str(path)


def _check_can_create_in(base: Path, path: Path, option: str | None) -> None:
    """Fail unless a file can be created in the existing folder `base` (`path`, named with `option`, in the message).

    A real probe (create and delete a hidden empty file) rather than `os.access`: access() says
    yes to root on /proc or /sys, and knows nothing of quotas or some network file systems.
    """
    if not base.is_dir():
        raise OutputError(f"{_named(path, option)}: {base} is a file, so nothing can be written under it; "
                          "pass a path that is not inside a file")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".eclip-probe.", suffix=".tmp")
    except OSError as err:
        raise OutputError(f"{_named(path, option)}: cannot write in {base} ({err.strerror or err}); "
                          "pass a path on a writable disk where you have write permission") from err
    os.close(fd)
    os.unlink(probe)


def check_output_folder(path: str | Path, option: str | None = None) -> Path:
    """Fail now, with one line naming `path` and the fix, if `path` cannot be (or become) a folder we write into.

    `option` is what the caller calls the path (a command line passes its option's name); the
    message names the path alone without it. Creates nothing: a missing folder is made by the
    first write, so a run refused for another reason leaves no empty folder behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{_named(path, option)}: exists and is a file, not a folder; pass a folder path (new or existing)")
    _check_can_create_in(_nearest_existing(path), path, option)
    return path


def check_output_file(path: str | Path, option: str | None = None) -> Path:
    """Fail now if the file `path` cannot be written (atomically, i.e. created in its folder); `option` as above."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{_named(path, option)}: is a folder; pass a file path, e.g. {path / 'results.json'}")
    _check_can_create_in(_nearest_existing(path.parent), path, option)
    return path

"""The server's temporary files: one root, two bounded areas, removed whole at shutdown.

The root is Gradio's temporary folder too (`GRADIO_TEMP_DIR` points at it while the page is
built), so nothing the server writes lands anywhere else, and files eclip writes there are served
as they are, not copied into a cache of Gradio's. Inside it:
- `eclip/requests/<id>/`: one folder per request (the upload's copy, the `.npy` maps, the map
  tiles, the overlay figures), written once. Before a request writes anything it reserves an upper
  bound of what it will write; the oldest finished folders are removed first until the reservations
  and the finished folders fit the quota, and at most `keep` folders are kept. The page keeps the
  folder's id in the session, never the maps;
- `eclip/static/`: the sample thumbnails, written once at start-up;
- everything else is Gradio's (files posted to its upload route, its own cached outputs): swept
  after every upload, oldest first, down to its own quota in bytes and in files
  (`Workspace.sweep_gradio`).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eclip.errors import OutputError

log = logging.getLogger(__name__)

MiB = 2**20


@dataclass(frozen=True)
class Quotas:
    """Disk the server may use under its root; every value is an option of `eclip serve`."""

    requests_bytes: int = 1024 * MiB  # the per-request folders together
    gradio_bytes: int = 256 * MiB  # Gradio's upload route and caches together
    gradio_files: int = 2000  # files in Gradio's area (a flood of tiny uploads)
    keep: int = 64  # request folders kept at most


def tree_size(path: Path) -> int:
    """Bytes of the files under `path` (0 if it is gone)."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total


class Workspace:
    """The temporary root of one server, its per-request folders under a quota, and Gradio's area under another.

    Thread-safe: requests run in Gradio's worker threads, uploads in its event loop.
    """

    def __init__(self, quotas: Quotas = Quotas(), root: Path | None = None) -> None:
        self.quotas = quotas
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="eclip-serve-"))
        self.ours = self.root / "eclip"
        self.requests = self.ours / "requests"
        self.static = self.ours / "static"
        self.requests.mkdir(parents=True, exist_ok=True)
        self.static.mkdir(parents=True, exist_ok=True)
        self._sizes: OrderedDict[str, int] = OrderedDict()  # request id -> bytes (finished) or bytes reserved, oldest first
        self._open: set[str] = set()  # ids still being written (never removed to make room)
        self._active = 0  # requests running (close waits for them)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self.forget: Callable[[set[str]], None] | None = None  # told the paths a sweep removed (Gradio's file sets)

    # ------------------------------------------------------------- requests
    def new_folder(self, reserve: int) -> Path:
        """A new request folder, with `reserve` bytes (an upper bound of what the request writes) set aside.

        Finished folders are removed oldest first until the folders and the reservations fit the
        quota; `OutputError` if the reservation cannot fit even so.
        """
        reserve = max(0, int(reserve))
        if reserve > self.quotas.requests_bytes:
            raise OutputError(f"this request would write up to {reserve / MiB:.0f} MiB, more than the server's "
                              f"{self.quotas.requests_bytes / MiB:.0f} MiB for results; ask for fewer texts, methods or "
                              "models, or send a smaller image")
        with self._lock:
            if self._closed:
                raise OutputError("the server is shutting down; try again once it is back")
            removed = self._make_room(reserve, slot=True)
            if self._used() + reserve > self.quotas.requests_bytes:
                raise OutputError("the server's disk for results is taken by requests still running; try again in a moment")
            folder = Path(tempfile.mkdtemp(dir=self.requests))
            self._sizes[folder.name] = reserve
            self._open.add(folder.name)
        self._remove_all(removed)
        return folder

    def reserve(self, folder: Path, reserve: int) -> bool:
        """Set `reserve` more bytes aside for a finished folder that gets more files (the downloads), making room as
        `new_folder` does; False if the folder is gone or the bytes do not fit (the caller then writes nothing)."""
        with self._lock:
            if folder.name not in self._sizes or self._closed:
                return False
            self._open.add(folder.name)
            removed = self._make_room(reserve, slot=False)
            fits = self._used() + reserve <= self.quotas.requests_bytes
            if fits:
                self._sizes[folder.name] += reserve
            else:
                self._open.discard(folder.name)
        self._remove_all(removed)
        return fits

    def settle(self, folder: Path) -> int:
        """Count `folder` at its real size, no longer at its reservation, once its last file is written; returns it."""
        size = tree_size(folder)
        with self._lock:
            if folder.name in self._sizes:
                self._sizes[folder.name] = size
                self._open.discard(folder.name)
        return size

    def _used(self) -> int:
        return sum(self._sizes.values())

    def _make_room(self, reserve: int, slot: bool) -> list[str]:
        """Drop finished folders oldest first (under the lock) until `reserve` more bytes fit (and a folder more, if
        `slot`); returns their ids, for removal outside the lock."""
        removed = []
        while self._used() + reserve > self.quotas.requests_bytes or (slot and len(self._sizes) >= self.quotas.keep):
            oldest = next((rid for rid in self._sizes if rid not in self._open), None)
            if oldest is None:
                break
            del self._sizes[oldest]
            removed.append(oldest)
        return removed

    def _remove_all(self, ids: list[str]) -> None:
        for rid in ids:
            self._remove(self.requests / rid)

    def folder(self, request_id: str | None) -> Path | None:
        """The folder of a request this workspace made and still keeps, by id; None otherwise (never a path from outside)."""
        with self._lock:
            if request_id in self._sizes:
                return self.requests / request_id
        return None

    def discard(self, folder: Path) -> None:
        """Remove a request folder at once (a request that failed)."""
        with self._lock:
            self._sizes.pop(folder.name, None)
            self._open.discard(folder.name)
        self._remove(folder)

    @contextmanager
    def job(self) -> Iterator[None]:
        """Mark a request as running: `close` waits for it before removing the files."""
        with self._lock:
            if self._closed:
                raise OutputError("the server is shutting down; try again once it is back")
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                self._idle.notify_all()

    def usage(self) -> dict[str, int]:
        """Bytes and files now on disk: the request folders, and Gradio's area."""
        files = self._gradio_files()
        return {"requests_bytes": tree_size(self.requests), "gradio_bytes": sum(size for _, size, _ in files),
                "gradio_files": len(files), "request_folders": len(self._sizes)}

    # ------------------------------------------------------------- Gradio's area
    def _gradio_files(self) -> list[tuple[float, int, Path]]:
        """(mtime, bytes, path) of every file under the root outside eclip's own folder."""
        found = []
        for folder, dirs, names in os.walk(self.root):
            if Path(folder) == self.root and self.ours.name in dirs:
                dirs.remove(self.ours.name)
            for name in names:
                path = Path(folder) / name
                try:
                    info = path.lstat()
                except FileNotFoundError:
                    continue
                found.append((info.st_mtime, info.st_size, path))
        return found

    def sweep_gradio(self, incoming: int = 0, max_age: float | None = None) -> int:
        """Remove Gradio's files oldest first until they and `incoming` more bytes (and one more file) fit its quotas,
        and those older than `max_age` seconds; returns the bytes removed."""
        files = sorted(self._gradio_files())
        total, count = sum(size for _, size, _ in files), len(files)
        now, freed, removed = time.time(), 0, set()
        for mtime, size, path in files:
            over = total + incoming > self.quotas.gradio_bytes or count + (1 if incoming else 0) > self.quotas.gradio_files
            if not over and (max_age is None or now - mtime <= max_age):
                break
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            total, count, freed = total - size, count - 1, freed + size
            removed.add(str(path))
            try:
                path.parent.rmdir()  # Gradio keeps each upload in a folder of its own
            except OSError:
                pass
        if removed and self.forget is not None:
            self.forget(removed)
        return freed

    # ------------------------------------------------------------- shutdown
    def close(self, wait: float = 30.0) -> None:
        """Refuse new requests, wait up to `wait` seconds for the running ones, and remove the whole root."""
        with self._lock:
            self._closed = True
            deadline = time.monotonic() + wait
            while self._active and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
            if self._active:
                log.warning("%d request(s) still running at shutdown; removing their files anyway", self._active)
        shutil.rmtree(self.root, ignore_errors=True)

    def _remove(self, folder: Path) -> None:
        paths = {str(p) for p in folder.rglob("*")} if self.forget is not None else set()
        shutil.rmtree(folder, ignore_errors=True)
        if paths and self.forget is not None:
            self.forget(paths)

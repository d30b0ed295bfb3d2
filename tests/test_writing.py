"""Outputs are checked before any work, written atomically, and what a killed write leaves is swept."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from eclip.cli.messages import for_command_line, given_value, usage_message
from eclip.device import resolve_device
from eclip.errors import DeviceError, OutputError
from eclip.writing import atomic_write, atomic_write_text, check_output_file, check_output_folder, remove_stale_temps, temp_target


def test_atomic_write_replaces_whole_and_leaves_nothing_when_the_write_fails(tmp_path):
    target = tmp_path / "r.json"
    atomic_write_text(target, "old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_full_disk_names_the_file_not_its_temporary(tmp_path):
    """file.write, PIL and matplotlib raise ENOSPC without a file name; the error names the file the user asked for."""
    target = tmp_path / "maps.npy"

    def full(tmp):
        with open(tmp, "wb") as f:
            f.write(b"x")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as caught:
        atomic_write(target, full)
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(target))
    assert list(tmp_path.iterdir()) == []


def test_a_native_writer_s_os_error_names_the_file(tmp_path):
    class SafetensorError(Exception):  # safetensors reports the OS error in its text
        pass

    def full(tmp):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "model.safetensors", full)
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(tmp_path / "model.safetensors"))
    assert isinstance(caught.value.__cause__, SafetensorError)


def test_an_error_about_another_file_or_of_another_kind_is_left_as_it_is(tmp_path):
    def copy_missing(tmp):
        shutil.copy(tmp_path / "missing.txt", tmp)

    with pytest.raises(FileNotFoundError) as caught:
        atomic_write(tmp_path / "copy.txt", copy_missing)
    assert caught.value.filename == str(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="not an I/O error"):
        atomic_write(tmp_path / "x.txt", lambda tmp: (_ for _ in ()).throw(ValueError("not an I/O error")))


def _private_mounts() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


_FILL = """
import json, sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from eclip.writing import atomic_write, atomic_write_text

root, noise = Path(sys.argv[1]), np.random.default_rng(0).random((300, 300))

def npy(tmp):
    with open(tmp, "wb") as f:
        np.save(f, noise)

def figure(tmp):
    fig = plt.figure()
    plt.imshow(noise)
    fig.savefig(tmp, format="png")

writers = {"maps.npy": npy, "overlay.png": lambda tmp: Image.fromarray((noise * 255).astype(np.uint8)).save(tmp, format="PNG"),
           "figure.png": figure, "model.safetensors": lambda tmp: save_file({"w": torch.from_numpy(noise)}, str(tmp)),
           "record.json": lambda tmp: tmp.write_text("x" * 200_000)}
seen = {}
for name, write in writers.items():
    try:
        atomic_write(root / name, write)
        seen[name] = "written"
    except OSError as err:
        seen[name] = [err.errno, err.filename, err.strerror]
print(json.dumps({"seen": seen, "left": sorted(p.name for p in root.iterdir())}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not _private_mounts(), reason="no private mount namespace here (needs unshare and the right to mount)")
def test_a_real_full_disk_is_named_for_every_writer_and_through_the_cli(tmp_path):
    """A 64 KiB tmpfs in a private mount namespace: numpy, PIL, matplotlib, safetensors and text writes, then `eclip synth`."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = f'mount -t tmpfs -o size=64k none {disk} && "$0" "$@"'
    done = subprocess.run(["unshare", "-m", "sh", "-c", mount, sys.executable, "-c", _FILL, str(disk)],
                          capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for name, seen in result["seen"].items():
        assert seen == [errno.ENOSPC, str(disk / name), os.strerror(errno.ENOSPC)], (name, seen)
    assert result["left"] == []  # no temporary file stays behind
    synth = subprocess.run(["unshare", "-m", "sh", "-c", mount, sys.executable, "-m", "eclip.cli", "synth", str(disk / "scenes"),
                            "--n", "200"], capture_output=True, text=True, timeout=300)
    errors = [line for line in synth.stderr.splitlines() if line.startswith("eclip: error: ")]  # after the progress bar's lines
    assert synth.returncode == 2 and len(errors) == 1 and "Traceback" not in synth.stderr, synth.stderr
    assert errors[0].startswith(f"eclip: error: {disk / 'scenes'}/") and "No space left on device" in errors[0], errors


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask):
    """A lab that shares result folders can read them: 0666 less the umask, as for any new file (mkstemp's 0600 is not kept)."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
        atomic_write_text(tmp_path / "r.json", "{}")  # replacing a file: the new one gets the mode too
        atomic_write(tmp_path / "m.png", lambda tmp: Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp, format="PNG"))
        atomic_write(tmp_path / "w.safetensors", lambda tmp: save_file({"w": torch.zeros(2)}, str(tmp)))  # replaces the file
    finally:
        os.umask(previous)
    for name in ("r.json", "m.png", "w.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "r.json", "w.safetensors"]


def test_stale_temporary_files_are_recognised_and_swept_by_target(tmp_path):
    atomic_write_text(tmp_path / "keep.txt", "x")
    stale = [tmp_path / ".model.safetensors.k3j_9x0a.tmp", tmp_path / ".losses.json.abcdefgh.tmp"]
    other = [tmp_path / ".model.safetensors.tmp", tmp_path / "model.safetensors.abcdefgh.tmp", tmp_path / ".x.abcdefgh.tmp"]
    for path in stale + other:
        path.write_text("partial")
    assert temp_target(stale[0].name) == "model.safetensors" and temp_target(other[0].name) is None
    assert sorted(remove_stale_temps(tmp_path, ["model.safetensors", "losses.json"])) == sorted(stale)
    assert all(p.exists() for p in other) and (tmp_path / "keep.txt").exists()


def test_output_checks_name_the_path_and_create_nothing(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="notes.txt: exists and is a file"):
        check_output_folder(a_file)
    with pytest.raises(OutputError, match="is a file, so nothing can be written under it"):
        check_output_folder(a_file / "deeper" / "out")
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path)
    with pytest.raises(OutputError, match="cannot write in /proc"):
        check_output_folder("/proc/eclip-out")
    assert check_output_folder(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert check_output_file(tmp_path / "new" / "r.json") == tmp_path / "new" / "r.json"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


@pytest.mark.parametrize("spec", ["banana", "CPU", "", "cuda:x", "xla", "meta"])
def test_device_spellings_outside_cpu_cuda_mps_are_refused(spec):
    with pytest.raises(DeviceError, match="device=.*use device=cpu") as caught:
        resolve_device(spec)
    assert "--" not in str(caught.value)  # a library message names the argument; the command line shows its option


def test_device_cpu_and_a_missing_gpu():
    import torch

    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_usage_messages_read_the_value_back_from_the_command_line():
    import typer
    from typer.testing import CliRunner

    import eclip.cli as cli

    assert given_value(["--n", "3", "--n=0"], ["--n"]) == "0" and given_value(["-o", "x"], ["--out", "-o"]) == "x"
    result = CliRunner().invoke(cli.app, ["shift", "--n", "-3"], standalone_mode=False)
    assert isinstance(result.exception, typer.BadParameter)
    assert usage_message(result.exception, ["shift", "--n", "-3"]) == "--n -3: must be >= 1; see `eclip shift --help`"


def test_library_messages_read_as_options_on_the_command_line():
    """`name=value` of an option of the verb run becomes `--name value`; anything else stays as written."""
    message = "device='banana' is not a device; use device=cpu (batch_size=0, HF_HUB_OFFLINE=1, x=2, /a/device=3)"
    assert for_command_line(message, ["--debug", "explain", "img.png"]) == (
        "--device 'banana' is not a device; use --device cpu (--batch-size 0, HF_HUB_OFFLINE=1, x=2, /a/device=3)")
    assert for_command_line("n=0: pass n=1 or more", ["synth", "out"]) == "--n 0: pass --n 1 or more"
    assert for_command_line("device=cpu", ["synth", "out"]) == "device=cpu"  # synth has no --device
    assert for_command_line("device=cpu", ["explian"]) == "device=cpu"

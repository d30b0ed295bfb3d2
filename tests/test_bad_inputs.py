"""Bad inputs through the real CLI: one line on stderr naming the value, exit code 2, no traceback, nothing touched.

Each case runs `python -m eclip.cli ...` in a fresh process inside a sandbox folder that holds
every input (tiny images, a tiny model folder, a synthetic dataset, a finished training run, a
crafted pickle) and is the working directory, so default outputs would land there too. The
sandbox is fingerprinted (every path, size, modification time) before and after each case: a
refused command must write nothing and change or remove nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import RN_CFG, TEXT_CFG, VIT_CFG, make_open_clip
from PIL import Image

from eclip.data.synthetic import SceneConfig, write_dataset
from eclip.models.folder import save_model_folder

PRE = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
VIT = {"arch": "vit", "open_clip": {"embed_dim": 24, "vision_cfg": dict(VIT_CFG), "text_cfg": dict(TEXT_CFG)},
       "preprocess": {"image_size": 32, **PRE}}
RN = {"arch": "resnet", "open_clip": {"embed_dim": 24, "vision_cfg": dict(RN_CFG), "text_cfg": dict(TEXT_CFG)},
      "preprocess": {"image_size": 96, **PRE}}


def eclip(args: list[str], cwd: Path, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ECLIP_DEBUG"}
    command = [sys.executable, "-m", "eclip.cli", *args]
    return subprocess.run((wrap or []) + command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """Every input the cases point at, made once: tiny and seeded."""
    box = tmp_path_factory.mktemp("sandbox")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 36, 3), dtype=np.uint8)).save(box / "img.png")
    (box / "empty").mkdir()
    (box / "notes.txt").write_text("a file, not a folder\n")
    (box / "results.json").mkdir()
    save_model_folder(box / "tiny", make_open_clip("vit"), VIT)
    save_model_folder(box / "mismatch", make_open_clip("vit"), VIT)  # ViT weights ...
    (box / "mismatch" / "config.json").write_text(json.dumps({**RN, "format": "eclip-model/1"}))  # ... under a ResNet config
    (box / "tiny.json").write_text(json.dumps(VIT))
    wide = {**VIT, "open_clip": {**VIT["open_clip"], "vision_cfg": {**VIT_CFG, "width": 10**6}}}
    save_model_folder(box / "wide", make_open_clip("vit"), wide)  # a config asking for a network of 10^6 channels
    broken = make_open_clip("vit")
    with torch.no_grad():
        broken.visual.proj[0, 0] = float("nan")
    save_model_folder(box / "nan", broken, VIT)
    write_dataset(box / "data", n=2, seed=1, config=SceneConfig(image_size=32))
    done = eclip(["train", "--config", "tiny.json", "--out", "run", "--steps", "2", "--batch-size", "4", "--warmup", "1",
                  "--scene-size", "32"], box)
    assert done.returncode == 0, done.stderr
    shutil.copytree(box / "run", box / "badstate")  # a training state whose header says step "ten"
    _rewrite_step(box / "badstate" / "train_state.safetensors", "ten")
    (box / "pickled").mkdir()
    torch.save({"step": 1, "model": _Payload(box / "pwned")}, box / "pickled" / "train_state.pt")
    return box


def _rewrite_step(path: Path, step) -> None:
    """Put `step` into the JSON header of a training state, keeping its tensors (what a hand edit can do)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    saved = json.loads(metadata["eclip_train_state"])
    saved["state"]["step"] = step
    save_file(tensors, str(path), metadata={"eclip_train_state": json.dumps(saved)})


def fingerprint(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under `root`, with size and modification time for files (a folder's own time changes when a
    writability probe comes and goes, which writes nothing)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in sorted(root.rglob("*"))}


IMG, TINY, DATA = "img.png", ["--model", "tiny"], ["--dataset", "synthetic", "--root", "data"]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")

# (id, arguments, what the message must name), or a pytest.param of the last two
CASES = [
    # explain
    ("explain-size-0", ["explain", IMG, "--text", "a", *TINY, "--size", "0"], ["--size 0"]),
    ("explain-size-negative", ["explain", IMG, "--text", "a", *TINY, "--size", "-5"], ["--size -5"]),
    ("explain-size-huge", ["explain", IMG, "--text", "a", *TINY, "--size", "100000"], ["--size 100000"]),
    ("explain-size-word", ["explain", IMG, "--text", "a", *TINY, "--size", "big"], ["--size big"]),
    ("explain-batch-0", ["explain", IMG, "--text", "a", *TINY, "--batch-size", "0"], ["--batch-size 0"]),
    ("explain-batch-negative", ["explain", IMG, "--text", "a", *TINY, "--batch-size", "-2"], ["--batch-size -2"]),
    ("explain-map-size-negative", ["explain", IMG, "--text", "a", *TINY, "--map-size", "-1"], ["--map-size -1"]),
    ("explain-template-no-braces", ["explain", IMG, "--text", "a", *TINY, "--template", "a photo"], ["'a photo'"]),
    ("explain-template-bad-field", ["explain", IMG, "--text", "a", *TINY, "--template", "a {x} of {}"], ["a {x} of {}"]),
    ("explain-device-banana", ["explain", IMG, "--text", "a", *TINY, "--device", "banana"], ["banana"]),
    pytest.param(["explain", IMG, "--text", "a", *TINY, "--device", "cuda"], ["--device cuda"], marks=NO_GPU, id="explain-device-cuda"),
    ("explain-empty-folder", ["explain", "empty", "--text", "a", *TINY], ["no image found in empty"]),
    ("explain-missing-file", ["explain", "nope.png", "--text", "a", *TINY], ["nope.png"]),
    ("explain-out-is-file", ["explain", IMG, "--text", "a", *TINY, "-o", "notes.txt"], ["notes.txt"]),
    ("explain-out-under-file", ["explain", IMG, "--text", "a", *TINY, "-o", "notes.txt/maps"], ["notes.txt"]),
    ("explain-out-unwritable", ["explain", IMG, "--text", "a", *TINY, "-o", "/proc/eclip-out"], ["/proc/eclip-out"]),
    ("explain-unknown-method", ["explain", IMG, "--text", "a", *TINY, "--method", "nope"], ["'nope'"]),
    ("explain-config-does-not-fit-weights", ["explain", IMG, "--text", "a", "--model", "mismatch"], ["mismatch"]),
    ("explain-empty-text", ["explain", IMG, "--text", " ", *TINY], ["--text"]),
    ("explain-model-typo", ["explain", IMG, "--model", "synth-vit-eclipse"], ["did you mean synth-vit-eclip?"]),
    ("explain-model-folder-missing", ["explain", IMG, "--text", "a", "--model", "runs/nothing"], ["runs/nothing: no such folder"]),
    ("explain-model-config-too-wide", ["explain", IMG, "--text", "a", "--model", "wide"],
     ["wide/config.json", "open_clip.vision_cfg.width is 1000000"]),
    ("explain-model-nan-weights", ["explain", IMG, "--text", "a", "--model", "nan"], ["nan/model.safetensors", "visual.proj", "NaN"]),
    ("explain-pretrained-for-a-folder", ["explain", IMG, "--text", "a", *TINY, "--pretrained", "openai"], ["--pretrained openai"]),
    ("explain-unknown-option", ["explain", IMG, "--bogus"], ["--bogus"]),
    ("explain-template-only-escaped-braces", ["explain", IMG, "--text", "a", *TINY, "--template", "{{}}"],
     ["--template '{{}}'", "has no {} where the text goes"]),
    ("explain-interactions-function-words-only", ["explain", IMG, "--text", "the of", *TINY, "--method", "interactions"],
     ["--text 'the of'", "no content word"]),
    # decompose and textspan: as strict as explain
    ("decompose-empty-folder", ["decompose", "empty", "--text", "a", *TINY], ["no image found in empty"]),
    ("decompose-missing-file", ["decompose", "nope.png", "--text", "a", *TINY], ["nope.png: no such file or folder"]),
    ("decompose-size-0", ["decompose", IMG, "--text", "a", *TINY, "--size", "0"], ["--size 0", ">= 16"]),
    ("decompose-size-30000", ["decompose", IMG, "--text", "a", *TINY, "--size", "30000"], ["--size 30000", "<= 4096"]),
    ("decompose-template-only-escaped-braces", ["decompose", IMG, "--text", "a", *TINY, "--template", "{{}}"], ["--template '{{}}'"]),
    ("decompose-out-is-file", ["decompose", IMG, "--text", "a", *TINY, "-o", "notes.txt"], ["notes.txt"]),
    ("textspan-layers-beyond-the-model", ["textspan", IMG, *TINY, "--layers", "99"], ["--layers 99", "has 2 layers"]),
    ("textspan-layers-0", ["textspan", IMG, *TINY, "--layers", "0"], ["--layers 0"]),
    ("textspan-out-is-file", ["textspan", IMG, *TINY, "-o", "notes.txt"], ["notes.txt"]),
    ("textspan-pool-missing", ["textspan", IMG, *TINY, "--pool", "nopool.txt"], ["nopool.txt: no such file or folder"]),
    ("textspan-template-only-escaped-braces", ["textspan", IMG, *TINY, "--template", "{{}}"], ["--template '{{}}'"]),
    # evaluate
    ("evaluate-threshold-step-0", ["evaluate", *DATA, *TINY, "--threshold-step", "0"], ["--threshold-step 0"]),
    ("evaluate-threshold-step-negative", ["evaluate", *DATA, *TINY, "--threshold-step", "-0.1"], ["--threshold-step -0.1"]),
    ("evaluate-threshold-step-not-dividing", ["evaluate", *DATA, *TINY, "--threshold-step", "0.3"], ["--threshold-step 0.3"]),
    ("evaluate-out-is-folder", ["evaluate", *DATA, *TINY, "-o", "results.json"], ["results.json"]),
    ("evaluate-out-under-file", ["evaluate", *DATA, *TINY, "-o", "notes.txt/r.json"], ["notes.txt"]),
    ("evaluate-out-unwritable", ["evaluate", *DATA, *TINY, "-o", "/proc/eclip/r.json"], ["/proc/eclip/r.json"]),
    ("evaluate-device-banana", ["evaluate", *DATA, *TINY, "--device", "banana"], ["banana"]),
    ("evaluate-batch-0", ["evaluate", *DATA, *TINY, "--batch-size", "0"], ["--batch-size 0"]),
    ("evaluate-limit-negative", ["evaluate", *DATA, *TINY, "--limit", "-1"], ["--limit -1"]),
    ("evaluate-limit-0", ["evaluate", *DATA, *TINY, "--limit", "0"], ["--limit 0"]),
    ("evaluate-template-no-braces", ["evaluate", *DATA, *TINY, "--template", "shapes"], ["'shapes'"]),
    ("evaluate-baseline-banana", ["evaluate", *DATA, *TINY, "--perturbation-baseline", "banana"], ["'banana'"]),
    ("evaluate-missing-root", ["evaluate", "--dataset", "synthetic", "--root", "nowhere", *TINY], ["nowhere"]),
    ("evaluate-unknown-dataset", ["evaluate", "--dataset", "imagenet", "--root", "data", *TINY], ["imagenet"]),
    ("evaluate-no-root", ["evaluate", *TINY], ["--root"]),
    ("evaluate-dataset-typo", ["evaluate", "--dataset", "synthetc", "--root", "data", *TINY], ["did you mean synthetic?"]),
    # shift
    ("shift-n-0", ["shift", *TINY, "--n", "0"], ["--n 0"]),
    ("shift-n-negative", ["shift", *TINY, "--n", "-3"], ["--n -3"]),
    ("shift-batch-0", ["shift", *TINY, "--batch-size", "0"], ["--batch-size 0"]),
    ("shift-template-no-braces", ["shift", *TINY, "--template", "a photo"], ["'a photo'"]),
    ("shift-device-banana", ["shift", *TINY, "--device", "banana"], ["banana"]),
    ("shift-out-is-file", ["shift", *TINY, "-o", "notes.txt"], ["notes.txt"]),
    ("shift-data-not-a-dataset", ["shift", "empty", *TINY], ["empty"]),
    # train
    ("train-batch-0", ["train", "--config", "tiny.json", "--out", "new", "--batch-size", "0"], ["--batch-size 0"]),
    ("train-steps-negative", ["train", "--config", "tiny.json", "--out", "new", "--steps", "-3"], ["--steps -3"]),
    ("train-steps-0", ["train", "--config", "tiny.json", "--out", "new", "--steps", "0"], ["--steps 0"]),
    ("train-lr-negative", ["train", "--config", "tiny.json", "--out", "new", "--lr", "-1"], ["--lr -1"]),
    ("train-data-seed-negative", ["train", "--config", "tiny.json", "--out", "new", "--data-seed", "-1"], ["--data-seed -1"]),
    ("train-mask-mass-0", ["train", "--model", "tiny", "--out", "new", "--mask-mass", "0"], ["--mask-mass 0"]),
    ("train-out-is-file", ["train", "--config", "tiny.json", "--out", "notes.txt", "--steps", "2"], ["notes.txt"]),
    ("train-device-banana", ["train", "--config", "tiny.json", "--out", "new", "--device", "banana"], ["banana"]),
    pytest.param(["train", "--config", "tiny.json", "--out", "new", "--device", "cuda"], ["--device cuda"], marks=NO_GPU,
                 id="train-device-cuda"),
    ("train-unknown-pooling", ["train", "--model", "tiny", "--out", "new", "--pooling", "banana"], ["'banana'"]),
    ("train-existing-run-without-resume", ["train", "--config", "tiny.json", "--out", "run", "--steps", "2"], ["run", "--resume"]),
    ("train-resume-with-other-lr", ["train", "--config", "tiny.json", "--out", "run", "--steps", "2", "--batch-size", "4",
                                    "--warmup", "1", "--scene-size", "32", "--lr", "0.001", "--resume"], ["lr", "0.001"]),
    ("train-resume-with-other-batch", ["train", "--config", "tiny.json", "--out", "run", "--steps", "2", "--batch-size", "8",
                                       "--warmup", "1", "--scene-size", "32", "--resume"], ["batch_size", "8"]),
    ("train-resume-a-model-without-training-state", ["train", "--config", "tiny.json", "--out", "tiny", "--steps", "2", "--resume"],
     ["nothing to resume in --out tiny", "model.safetensors"]),
    ("train-resume-state-field-of-the-wrong-type", ["train", "--config", "tiny.json", "--out", "badstate", "--steps", "2",
                                                    "--batch-size", "4", "--warmup", "1", "--scene-size", "32", "--resume"],
     ["badstate/train_state.safetensors", "`step`"]),
    ("train-crafted-pickle-without-resume", ["train", "--config", "tiny.json", "--out", "pickled", "--steps", "2"], ["pickled"]),
    ("train-crafted-pickle-with-resume", ["train", "--config", "tiny.json", "--out", "pickled", "--steps", "2", "--resume"],
     ["train_state.pt"]),
    # the other verbs
    ("synth-n-0", ["synth", "scenes", "--n", "0"], ["--n 0"]),
    ("synth-out-is-file", ["synth", "notes.txt", "--n", "2"], ["notes.txt"]),
    ("demo-device-banana", ["demo", "--device", "banana"], ["banana"]),
    ("report-missing-results", ["report", "nope.json"], ["nope.json"]),
    ("unknown-verb", ["explian"], ["explian"]),
    ("mistyped-verb", ["evalute"], ["unknown verb 'evalute'; did you mean evaluate?"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, names", [pytest.param(*c[1:], id=c[0]) if isinstance(c[0], str) else c for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(sandbox, args, names):
    before = fingerprint(sandbox)
    done = eclip(args, sandbox)
    message = done.stderr.strip()
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr + done.stdout
    assert len(message.splitlines()) == 1 and message.startswith("eclip: error: "), message
    for name in names:
        assert name in message, (name, message)
    assert fingerprint(sandbox) == before
    assert not (sandbox / "pwned").exists()


@pytest.mark.slow
def test_read_only_file_system_is_one_line_and_writes_nothing(sandbox, tmp_path):
    """-o on a read-only mount (a tmpfs mounted read-only in a private mount namespace, where the system allows it)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (needs unshare and the right to mount)")
    ro = tmp_path / "ro"
    ro.mkdir()
    script = f'mount -t tmpfs -o ro none {ro} && exec "$0" "$@"'
    for verb in (["explain", IMG, "--text", "a", *TINY, "-o", str(ro / "maps")],
                 ["evaluate", *DATA, *TINY, "-o", str(ro / "r.json")],
                 ["train", "--config", "tiny.json", "--out", str(ro / "run"), "--steps", "2"]):
        done = eclip(verb, sandbox, wrap=["unshare", "-m", "sh", "-c", script])
        assert done.returncode == 2 and "Read-only file system" in done.stderr and str(ro) in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert list(ro.iterdir()) == []


@pytest.mark.slow
def test_debug_shows_the_full_traceback(sandbox):
    env = {**os.environ, "ECLIP_DEBUG": "1"}
    command = [sys.executable, "-m", "eclip.cli", "explain", IMG, "--text", "a", *TINY, "--device", "banana"]
    done = subprocess.run(command, cwd=sandbox, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" in done.stderr and "DeviceError" in done.stderr
    flag = eclip(["--debug", "explain", IMG, "--text", "a", *TINY, "--device", "banana"], sandbox)
    assert "Traceback" in flag.stderr and "DeviceError" in flag.stderr

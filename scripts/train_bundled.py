"""Train the bundled models on one machine with a GPU: the vanilla CLIPs, then the ECLIP ablation.

The recipe behind `src/eclip/assets/models/*/RECIPE.md`, as one command, in stages:
1. fine-tuning pairs: scenes of the training seed 1001 written once as WebDataset shards (all
   captions, and the same scenes with captions that name no background), so that every
   fine-tune of the ablation reads the same pairs instead of drawing them again;
2. a short probe of both vanilla trainings side by side (drawing scenes is the bottleneck), from
   which the number of steps that fits `--vanilla-seconds` is set;
3. the vanilla `synth-vit` and `synth-rn`, trained from scratch side by side on the endless
   synthetic stream of seed 1000 (`eclip train --config ... --workers N`), exported as float16;
4. the ECLIP ablation of each (`bench/eclip_ablation.py`): every setting fine-tuned from the
   float16 vanilla model, measured on the validation and the test seed.
Then `--pack DIR` writes what a machine that lends its GPU for a few minutes can send back: the
vanilla model folders, the ablation tables, and the fine-tunes the selection rule keeps
(`select`), each stored as the tensors that differ from its vanilla parent (`delta_state`).

    python scripts/train_bundled.py --out runs/bundled --device cuda --workers 14 --vanilla-seconds 240 --pack out/pack
    python scripts/train_bundled.py --unpack out/pack --out runs/bundled      # rebuild the fine-tunes' folders

`--pack-issue20 OUT --pack DIR` packs what `scripts/gpu_issue20.sh` made in OUT (`pack_issue20`).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ARCHS = ("vit", "rn")
VIT_SETTINGS = [
    "attention", "avg", "max", "max+normalized",
    "masked_max/cls_attention/0.6",
    "masked_max/cls_attention/0.6+bgneg",
    "masked_max/cls_attention/0.6+objects",
    "masked_max/cls_attention/0.6+bgneg+objects",
    "masked_max/cls_attention/0.6+current",
    "masked_max/cls_attention/0.6+current+bgneg",
    "masked_max/cls_attention/0.6+normalized+bgneg",
    "masked_max/cls_attention/0.4+bgneg",
    "masked_max/cls_attention/0.8+bgneg",
    "masked_max/similarity/0.6+bgneg",
    "masked_max/cls_attention/0.6+bgneg+last2",
    "masked_max/cls_attention/0.6+bgneg+lr5e-5",
    "masked_max/cls_attention/0.6+bgneg+lr5e-4",
    "masked_max/cls_attention/0.6+bgneg+steps1500",
    "masked_max/rollout/0.6+bgneg",
]
PAPER_SETTING = "masked_max/cls_attention/0.6"
REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "src" / "eclip" / "assets" / "models"


def eclip(*args: str) -> list[str]:
    return [sys.executable, "-c", "from eclip.cli import main; main()", *args]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_all(commands: dict[str, list[str]], logs: Path, timeout: float | None = None) -> dict[str, float]:
    """Run commands side by side; {name: wall seconds}. A command that fails stops the script."""
    logs.mkdir(parents=True, exist_ok=True)
    began = time.time()
    running = {}
    for name, command in commands.items():
        log(f"start {name}: {' '.join(command[3:] if command[1] == '-c' else command)}")
        running[name] = subprocess.Popen(command, stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT)
    walls = {}
    for name, process in running.items():
        try:
            process.wait(timeout=None if timeout is None else max(1.0, timeout - (time.time() - began)))
        except subprocess.TimeoutExpired:
            for other in running.values():
                other.kill()
            raise SystemExit(f"{name} ran past its time; see {logs}") from None
        walls[name] = time.time() - began
        if process.returncode:
            raise SystemExit(f"{name} failed (exit {process.returncode}); see {logs / (name + '.log')}")
    return walls


def export_half(run: Path, target: Path) -> None:
    """The trained run folder -> a float16 model folder (the bundled form)."""
    from eclip.models.folder import load_model_folder, save_model_folder

    model, config = load_model_folder(run)
    config.pop("format", None)
    save_model_folder(target, model, config, half=True)
    for name in ("losses.json",):
        if (run / name).exists():
            (target / name).write_text((run / name).read_text())


def delta_state(child: Path, parent: Path) -> dict:
    """The float16 tensors of `child` that differ from `parent`'s; the token embedding as changed rows only."""
    import torch
    from safetensors.torch import load_file

    a = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(child / "model.safetensors")).items()}
    b = load_file(str(parent / "model.safetensors"))
    out = {}
    for key, value in a.items():
        if key in b and torch.equal(value, b[key].to(value.dtype)):
            continue
        if key == "token_embedding.weight" and key in b:
            rows = (value != b[key].to(value.dtype)).any(dim=1).nonzero().flatten()
            out["token_embedding.rows"] = rows
            out["token_embedding.values"] = value[rows].contiguous()
            continue
        out[key] = value.contiguous()
    return out


def apply_delta(parent: Path, delta: dict) -> dict:
    """Inverse of `delta_state`: the child's full float16 state."""
    from safetensors.torch import load_file

    state = load_file(str(parent / "model.safetensors"))
    for key, value in delta.items():
        if key == "token_embedding.rows":
            continue
        if key == "token_embedding.values":
            state["token_embedding.weight"] = state["token_embedding.weight"].clone()
            state["token_embedding.weight"][delta["token_embedding.rows"]] = value
            continue
        state[key] = value
    return state


def select(rows: list[dict], keep_masked: int = 2) -> list[str]:
    """The fine-tunes worth keeping, chosen on the validation set only: the paper's own setting,
    the `keep_masked` masked max settings and the best other head by validation mSC."""
    tuned = [r for r in rows if r["setting"] != "vanilla"]
    by_msc = sorted(tuned, key=lambda r: r["validation"]["score_contrast"], reverse=True)
    masked = [r["setting"] for r in by_msc if r["pooling"] == "masked_max"][:keep_masked]
    other = [r["setting"] for r in by_msc if r["pooling"] != "masked_max"][:1]
    chosen = [PAPER_SETTING] + masked + other
    return list(dict.fromkeys(s for s in chosen if any(r["setting"] == s for r in tuned)))


def pack(out: Path, target: Path) -> None:
    """Files for the trip back (at most a few, each under 16 MB): models, tables, logs, kept fine-tunes."""
    from safetensors.torch import save_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from eclip_ablation import folder_name

    target.mkdir(parents=True, exist_ok=True)
    for arch in ARCHS:
        folder = out / "models" / f"synth-{arch}"
        if folder.exists():
            with tarfile.open(target / f"vanilla-{arch}.tar", "w") as tar:
                tar.add(folder, arcname=f"synth-{arch}")
        table = out / f"ablation-{arch}" / "ablation.json"
        if not table.exists():
            continue
        rows = json.loads(table.read_text())["rows"]
        with tarfile.open(target / f"finetunes-{arch}.tar", "w") as tar:
            for setting in select(rows):
                run = out / f"ablation-{arch}" / "runs" / folder_name(setting)
                delta = out / "deltas" / arch / folder_name(setting)
                delta.mkdir(parents=True, exist_ok=True)
                save_file(delta_state(run, folder), str(delta / "delta.safetensors"))
                (delta / "config.json").write_text((run / "config.json").read_text())
                for name in ("losses.json", "wall_s.txt"):
                    if (run / name).exists():
                        (delta / name).write_text((run / name).read_text())
                tar.add(delta, arcname=f"{arch}/{folder_name(setting)}")
    with tarfile.open(target / "results.tar", "w") as tar:
        for name in ("ablation-vit", "ablation-rn"):
            for file in ("ablation.json", "ablation.md", "commands.log"):
                if (out / name / file).exists():
                    tar.add(out / name / file, arcname=f"{name}/{file}")
        for extra in ("logs", "timings.json"):
            if (out / extra).exists():
                tar.add(out / extra, arcname=extra)


def select_issue20(rows: list[dict], tolerance: float = 0.01) -> list[str]:
    """The fine-tunes worth keeping, chosen on the validation seed only: the best ITSM mSC, and the best
    whose zero-shot accuracy stays within `tolerance` (one point) of the vanilla model's."""
    vanilla = next(r for r in rows if r["setting"] == "vanilla")["validation"]["zero_shot"]
    tuned = sorted((r for r in rows if r["setting"] != "vanilla"), key=lambda r: r["validation"]["score_contrast"], reverse=True)
    keepers = [r for r in tuned if r["validation"]["zero_shot"] >= vanilla - tolerance]
    return list(dict.fromkeys(r["setting"] for r in tuned[:1] + keepers[:1]))


def pack_issue20(out: Path, target: Path, archs: list[str]) -> None:
    """What `scripts/gpu_issue20.sh` made in `out`, as a few files in `target`.

    Writes bench/results/issue20-ablation-<arch>.json (the ablation, recipes included) and
    issue20-heldout-<arch>.json (every `eclip evaluate` record, keyed by scene set and setting, and
    where the shift lives), then `target/results.tar` (those, the tables, the logs, the recipes) and
    one `finetunes-<arch>-<setting>.tar` per fine-tune `select_issue20` keeps, as deltas from the
    vanilla model (`unpack` rebuilds them).
    """
    from safetensors.torch import save_file

    sys.path.insert(0, str(REPO / "bench"))
    from eclip_ablation import folder_name

    target.mkdir(parents=True, exist_ok=True)
    results = REPO / "bench" / "results"
    written = []
    for arch in archs:
        ablation = json.loads((out / f"ablation-{arch}" / "ablation.json").read_text())
        settings = {str((out / f"ablation-{arch}" / "runs" / folder_name(s)).resolve()): s for s in ablation["recipes"]}
        setting = functools.partial(_setting_of, settings)
        records = []
        for file in sorted((out / "eval").glob(f"{arch}-*.json")):
            scenes = file.stem[len(arch) + 1:].removesuffix("-bars")
            records += [{**r, "scenes": scenes, "setting": setting(r.get("model", ""))} for r in json.loads(file.read_text())]
        anatomy_file = out / "eval" / f"anatomy-{arch}.json"
        anatomy = [{**r, "setting": setting(r["model"])} for r in json.loads(anatomy_file.read_text())] if anatomy_file.exists() else []
        for name, data in ((f"issue20-ablation-{arch}.json", ablation),
                           (f"issue20-heldout-{arch}.json", {"scenes": {"test": "96 px, 1-3 objects, up to 4 clutter marks",
                                                                        "size192": "192 px", "objects5": "up to 5 objects",
                                                                        "clutter16": "up to 16 clutter marks",
                                                                        "phrases": "test scenes, phrase grounding"},
                                                             "seed": 777, "evaluate": records, "anatomy": anatomy})):
            (results / name).write_text(json.dumps(data, indent=1))
            written.append(results / name)
        parent = _model_folder(ablation["model"])
        for chosen in select_issue20(ablation["rows"]):
            run = out / f"ablation-{arch}" / "runs" / folder_name(chosen)
            delta = out / "deltas" / arch / folder_name(chosen)
            delta.mkdir(parents=True, exist_ok=True)
            save_file(delta_state(run, parent), str(delta / "delta.safetensors"))
            for name in ("config.json", "recipe.json", "losses.json", "wall_s.txt"):
                if (run / name).exists():
                    (delta / name).write_text((run / name).read_text())
            with tarfile.open(target / f"finetunes-{arch}-{folder_name(chosen)}.tar", "w") as tar:
                tar.add(delta, arcname=f"{arch}/{folder_name(chosen)}")
    with tarfile.open(target / "results.tar", "w") as tar:
        for path in written:
            tar.add(path, arcname=str(path.relative_to(REPO)))
        for arch in archs:
            folder = out / f"ablation-{arch}"
            for name in ("ablation.md", "commands.log"):
                if (folder / name).exists():
                    tar.add(folder / name, arcname=f"issue20/ablation-{arch}/{name}")
            for recipe in sorted(folder.glob("runs/*/recipe.json")):
                tar.add(recipe, arcname=f"issue20/ablation-{arch}/runs/{recipe.parent.name}/recipe.json")
        for extra in ("logs", "eval"):
            if (out / extra).exists():
                tar.add(out / extra, arcname=f"issue20/{extra}")


def _setting_of(settings: dict[str, str], model: str) -> str:
    """The ablation setting whose run folder `model` is, or "vanilla"."""
    return settings.get(str(Path(model).resolve()), "vanilla")


def _model_folder(name: str) -> Path:
    """The folder of a bundled model name or a model folder path."""
    from eclip.models.loading import BUNDLED, bundled_dir

    return bundled_dir(name) if name in BUNDLED else Path(name)


def unpack(source: Path, out: Path) -> None:
    """Rebuild model folders from a `pack`: vanilla ones as they are, fine-tunes from their deltas."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for archive in sorted(source.glob("*.tar")):
        with tarfile.open(archive) as tar:
            tar.extractall(out / ("models" if archive.name.startswith("vanilla") else
                                  "deltas" if archive.name.startswith("finetunes") else "."), filter="data")
    for delta in sorted((out / "deltas").glob("*/*")):
        arch = delta.parent.name
        target = out / "finetunes" / arch / delta.name
        target.mkdir(parents=True, exist_ok=True)
        parent = out / "models" / f"synth-{arch}"
        parent = parent if parent.exists() else BUNDLED / f"synth-{arch}"  # fine-tunes of the bundled vanilla model
        state = apply_delta(parent, load_file(str(delta / "delta.safetensors")))
        save_file(state, str(target / "model.safetensors"))
        for name in ("config.json", "recipe.json", "losses.json", "wall_s.txt"):
            if (delta / name).exists():
                (target / name).write_text((delta / name).read_text())
        log(f"rebuilt {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="Work folder (required unless --pack-issue20).")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS), help="Architectures to train.")
    parser.add_argument("--continue-bundled", action="store_true",
                        help="Go on training the bundled vanilla model (its own head, a fresh schedule) instead of starting from scratch.")
    parser.add_argument("--workers", type=int, default=14, help="Scene-drawing processes, shared by the vanilla runs.")
    parser.add_argument("--vanilla-seconds", type=float, default=240, help="Wall time the vanilla steps are sized to.")
    parser.add_argument("--vanilla-steps", type=int, default=None, help="Fixed vanilla steps (skips the probe).")
    parser.add_argument("--probe-steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ft-pairs", type=int, default=64000, help="Fine-tuning pairs (shards of seed 1001).")
    parser.add_argument("--ft-steps", type=int, default=500)
    parser.add_argument("--ft-batch-size", type=int, default=128)
    parser.add_argument("--ft-lr", type=float, default=2e-4)
    parser.add_argument("--jobs", type=int, default=8, help="Fine-tunes at a time, per architecture.")
    parser.add_argument("--n", type=int, default=300, help="Held-out scenes per set.")
    parser.add_argument("--settings", nargs="*", default=None, help="Ablation settings (default: the full grid).")
    parser.add_argument("--deadline", type=float, default=None, help="Seconds after which the ablation is stopped.")
    parser.add_argument("--pack", type=Path, default=None)
    parser.add_argument("--unpack", type=Path, default=None)
    parser.add_argument("--pack-issue20", type=Path, default=None, help="Pack what scripts/gpu_issue20.sh made in this folder into --pack.")
    args = parser.parse_args()
    if args.pack_issue20:
        pack_issue20(args.pack_issue20, args.pack, args.archs)
        return
    if args.out is None:
        parser.error("--out is required")
    if args.unpack:
        unpack(args.unpack, args.out)
        return
    began = time.time()
    out, logs = args.out, args.out / "logs"
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    archs = args.archs
    per_run = max(1, args.workers // len(archs))

    def done(stage: str) -> None:
        timings[stage] = round(time.time() - began, 1)
        (out / "timings.json").write_text(json.dumps(timings, indent=1))
        log(f"{stage} done at {timings[stage]} s")

    try:
        run_all({f"shards-{c}": eclip("synth", str(out / f"pairs-{c}"), "--n", str(args.ft_pairs), "--seed", "1001", "--webdataset",
                                      "--shard-size", str(max(1, args.ft_pairs // per_run)), "--workers", str(per_run),
                                      "--captions", c) for c in ("all", "objects")}, logs)
        done("shards")

        def vanilla(arch: str, steps: int, folder: Path) -> list[str]:
            start = ["--model", str(BUNDLED / f"synth-{arch}"), "--pooling", "attention", "--train", "all"] \
                if args.continue_bundled else ["--config", f"synth-{arch}"]
            return eclip("train", *start, "--out", str(folder), "--steps", str(steps),
                         "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--warmup", str(max(20, steps // 20)),
                         "--data-seed", "1000", "--workers", str(per_run), "--device", args.device, "--threads", "1",
                         "--checkpoint-every", str(max(50, steps // 4)))

        steps = {arch: args.vanilla_steps for arch in archs}
        if args.vanilla_steps is None:
            run_all({f"probe-{a}": vanilla(a, args.probe_steps, out / f"probe-{a}") for a in archs}, logs)
            for arch in archs:
                seconds = json.loads((logs / f"probe-{arch}.log").read_text().strip().splitlines()[-1])["seconds"]
                steps[arch] = int(args.vanilla_seconds * args.probe_steps / seconds)
                timings[f"probe_{arch}_s_per_step"] = round(seconds / args.probe_steps, 4)
            done("probe")
        timings.update({f"vanilla_{a}_steps": steps[a] for a in archs})
        walls = run_all({f"vanilla-{a}": vanilla(a, steps[a], out / "runs" / f"synth-{a}") for a in archs}, logs)
        timings.update({f"vanilla_{a}_wall_s": round(walls[f"vanilla-{a}"], 1) for a in archs})
        for arch in archs:
            export_half(out / "runs" / f"synth-{arch}", out / "models" / f"synth-{arch}")
        done("vanilla")

        ablation = Path(__file__).resolve().parents[1] / "bench" / "eclip_ablation.py"
        commands = {}
        for arch in archs:
            settings = [s for s in (args.settings or VIT_SETTINGS) if arch == "vit" or "rollout" not in s]
            commands[f"ablation-{arch}"] = [
                sys.executable, str(ablation), "--model", str(out / "models" / f"synth-{arch}"), "--out", str(out / f"ablation-{arch}"),
                "--steps", str(args.ft_steps), "--batch-size", str(args.ft_batch_size), "--lr", str(args.ft_lr),
                "--warmup", str(max(10, args.ft_steps // 10)), "--threads", "1", "--jobs", str(args.jobs), "--device", args.device,
                "--data", str(out / "pairs-all"), "--objects-data", str(out / "pairs-objects"), "--n", str(args.n),
                "--settings", *settings]
        remaining = None if args.deadline is None else args.deadline - (time.time() - began)
        run_all(commands, logs, timeout=remaining)
        done("ablation")
    finally:
        if args.pack:
            pack(out, args.pack)
            done("pack")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

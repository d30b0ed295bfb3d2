"""ECLIP ablation: pooling head x mask source x mask share, fine-tuned from a vanilla model, measured.

For each setting this fine-tunes the starting model with `eclip train` (one subprocess per
setting, one at a time; a setting whose folder is complete is not trained again, so a killed
ablation resumes), then measures on held-out synthetic scenes (a seed training never used):
zero-shot accuracy, foreground IoU at the best threshold, mean score contrast (mSC), inverted
rate and pointing game of the ITSM (Li et al. 2022, arXiv 2209.07046). The starting model is
measured too, with ITSM, MaskCLIP's value path (Zhou et al. 2022, arXiv 2112.01071) and the free
attention, the training-free bars ECLIP has to beat. Writes OUT/ablation.md and OUT/ablation.json.

A setting is written `head[/source/share][+option...]`:
    attention | avg | max | masked_max/cls_attention/0.6 | masked_max/rollout/top0.3
options: +normalized (max over L2-normalised features), +current (masks from the model being
trained), +lastN (train only the last N image blocks + projection), +visual (image tower only).

    python bench/eclip_ablation.py --model synth-vit --out out/ablation-vit --steps 300 \
        --settings attention avg max masked_max/cls_attention/0.6 masked_max/rollout/0.6
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

VIT_GRID = ["attention", "avg", "max", "max+normalized",
            "masked_max/cls_attention/0.4", "masked_max/cls_attention/0.6", "masked_max/cls_attention/0.8",
            "masked_max/rollout/0.6", "masked_max/similarity/0.6", "masked_max/cls_attention/top0.3",
            "masked_max/cls_attention/0.6+current", "masked_max/cls_attention/0.6+last2"]
RESNET_GRID = ["attention", "avg", "max", "max+normalized",
               "masked_max/cls_attention/0.4", "masked_max/cls_attention/0.6", "masked_max/cls_attention/0.8",
               "masked_max/similarity/0.6", "masked_max/cls_attention/top0.3",
               "masked_max/cls_attention/0.6+current", "masked_max/cls_attention/0.6+last2"]


def parse_setting(spec: str) -> tuple[list[str], dict]:
    """`masked_max/rollout/0.6+last2` -> (eclip train arguments, a record of the setting)."""
    core, *options = spec.split("+")
    head, *rest = core.split("/")
    args = ["--pooling", head]
    record = {"setting": spec, "pooling": head, "mask_source": "-", "mask": "-", "max_over": "raw", "mask_from": "-", "train": "all"}
    if head == "masked_max":
        source = rest[0] if rest else "cls_attention"
        share = rest[1] if len(rest) > 1 else "0.6"
        args += ["--mask-source", source]
        if share.startswith("top"):
            args += ["--mask-rule", "topk", "--mask-topk", share[3:]]
        else:
            args += ["--mask-rule", "mass", "--mask-mass", share]
        record.update(mask_source=source, mask=share if share.startswith("top") else f"mass {share}", mask_from="frozen")
    for option in options:
        if option == "normalized":
            args += ["--max-over", "normalized"]
            record["max_over"] = "normalized"
        elif option == "current":
            args += ["--mask-from", "current"]
            record["mask_from"] = "current"
        elif option.startswith("last"):
            args += ["--train", f"last:{int(option[4:])}"]
            record["train"] = f"last:{int(option[4:])}"
        elif option == "visual":
            args += ["--train", "visual"]
            record["train"] = "visual"
        else:
            raise SystemExit(f"unknown option +{option} in setting {spec!r}")
    return args, record


def folder_name(spec: str) -> str:
    return spec.replace("/", "_").replace("+", "__")


def eclip_command() -> list[str]:
    script = Path(sys.executable).parent / "eclip"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from eclip.cli import main; main()"]


def fine_tune(model: str, spec: str, out: Path, common: list[str], log) -> tuple[float, list[str]]:
    """Run `eclip train` for one setting unless its folder is complete; returns (seconds, command)."""
    args, _ = parse_setting(spec)
    command = eclip_command() + ["train", "--model", model, "--out", str(out), *args, *common]
    if (out / "wall_s.txt").exists():  # complete: measured before
        return float((out / "wall_s.txt").read_text()), command
    if (out / "train_state.pt").exists():
        command.append("--resume")
    print(f"[ablation] {' '.join(command)}", file=log, flush=True)
    began = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.time() - began
    (out / "wall_s.txt").write_text(f"{seconds:.1f}\n")
    return seconds, command


def measure_model(path: str, methods: list[str], samples, classnames, batch_size: int) -> dict:
    from eclip.methods.base import available_methods, get_method
    from eclip.models.loading import load_model
    from eclip.shift import measure

    known = available_methods()
    chosen = {m: get_method(m) for m in methods if m in known}
    return measure(load_model(path), chosen, samples, classnames, "single", batch_size=batch_size)


def row(record: dict, result: dict, method: str, wall: float | None) -> dict:
    metrics = result[method]
    return {**record, "map": method, "zero_shot": result["zero_shot"]["top1"], "fg_iou": metrics["fg_iou"],
            "threshold": metrics["threshold"], "score_contrast": metrics["score_contrast"],
            "inverted_rate": metrics["inverted_rate"], "pointing": metrics["pointing"], "wall_s": wall}


def markdown(rows: list[dict], title: str) -> str:
    lines = [f"### {title}", "",
             "| setting | map | pooling | mask source | mask | train | zero-shot | fg IoU (thr) | mSC | inverted | pointing | wall s |",
             "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        wall = f"{r['wall_s']:.0f}" if r.get("wall_s") else "-"
        lines.append(f"| {r['setting']} | {r['map']} | {r['pooling']} | {r['mask_source']} | {r['mask']} | {r['train']} | "
                     f"{100 * r['zero_shot']:.1f}% | {r['fg_iou']:.3f} ({r['threshold']:.2f}) | {r['score_contrast']:+.3f} | "
                     f"{100 * r['inverted_rate']:.1f}% | {100 * r['pointing']:.1f}% | {wall} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synth-vit", help="Starting (vanilla) model: bundled name or folder.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--settings", nargs="*", default=None, help="Settings (see the module docstring); default: the arch's grid.")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", default="", help="More `eclip train` arguments for every setting, e.g. '--weight-decay 0.05'.")
    parser.add_argument("--n", type=int, default=300, help="Held-out scenes.")
    parser.add_argument("--eval-seed", type=int, default=4242)
    parser.add_argument("--scene-size", type=int, default=None, help="Held-out scene size (default: the model's training scenes).")
    parser.add_argument("--eval-only", action="store_true", help="Measure the existing runs, train nothing.")
    args = parser.parse_args()

    import torch

    from eclip.data.synthetic import CLASSNAMES
    from eclip.models.loading import load_model
    from eclip.shift import synthetic_samples

    torch.set_num_threads(args.threads)
    start = load_model(args.model)
    trained_on = (getattr(start, "config", None) or {}).get("training", {}).get("extra", {}).get("data", {})
    size = args.scene_size or int(trained_on.get("image_size") or start.image_size[0])
    settings = args.settings or (VIT_GRID if start.arch == "vit" else RESNET_GRID)
    samples = synthetic_samples(args.eval_seed, args.n, size)
    args.out.mkdir(parents=True, exist_ok=True)
    common = ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--warmup", str(args.warmup),
              "--threads", str(args.threads), "--checkpoint-every", "100", *args.extra.split()]

    base = {"setting": "vanilla", "pooling": "attention", "mask_source": "-", "mask": "-", "max_over": "raw", "mask_from": "-",
            "train": "-"}
    vanilla = measure_model(args.model, ["itsm", "maskclip", "free_attention"], samples, list(CLASSNAMES), 32)
    rows = [row(base, vanilla, m, None) for m in ("itsm", "maskclip", "free_attention") if m in vanilla]
    commands = {}
    with open(args.out / "commands.log", "a") as log:
        for spec in settings:
            folder = args.out / "runs" / folder_name(spec)
            if args.eval_only and not (folder / "config.json").exists():
                continue
            wall, command = (0.0, []) if args.eval_only else fine_tune(args.model, spec, folder, common, log)
            if (folder / "wall_s.txt").exists():
                wall = float((folder / "wall_s.txt").read_text())
            commands[spec] = " ".join(command)
            _, record = parse_setting(spec)
            result = measure_model(str(folder), ["itsm"], samples, list(CLASSNAMES), 32)
            rows.append(row(record, result, "itsm", wall))
            (args.out / "ablation.json").write_text(json.dumps({"model": args.model, "arch": start.arch, "eval": {
                "seed": args.eval_seed, "n": args.n, "scene_size": size}, "train": common, "rows": rows, "commands": commands},
                indent=2))
            title = f"{start.arch}: fine-tuned from {args.model}, {args.steps} steps x {args.batch_size}, lr {args.lr}; " \
                    f"{args.n} held-out scenes (seed {args.eval_seed}, {size} px)"
            (args.out / "ablation.md").write_text(markdown(rows, title) + "\n")
    print((args.out / "ablation.md").read_text() if (args.out / "ablation.md").exists() else markdown(rows, "vanilla"))


if __name__ == "__main__":
    main()

"""ECLIP ablation: pooling head x mask source x mask share x variant, fine-tuned from a vanilla model, measured.

Each setting string parses into a fine-tune recipe (`eclip.train.recipe.FinetuneRecipe`), written
to its run folder as `recipe.json` and fine-tuned by `eclip train --recipe` (one subprocess per
setting, `--jobs` at a time; a setting whose folder is complete is not trained again, so a killed
ablation resumes). Each run is then measured on two sets of held-out synthetic scenes (seeds
training never used): the *validation* seed, on which settings are chosen, and the *test* seed,
on which they are reported. Per set: zero-shot accuracy, foreground IoU at the best threshold,
mean score contrast (mSC), inverted rate and pointing game of the ITSM (Li et al. 2022, arXiv
2209.07046); with `--segmentation N`, also whether the maps tell one text from another: the
segmentation mIoU of the ITSM on the first N scenes of each set, each pixel the argmax over the 8
shapes + background and over the 64 colour-shape phrases + background (`eclip evaluate --task
segmentation`, as scripts/segmentation_synthetic.py). The starting model is measured too, with ITSM, MaskCLIP's value path (Zhou et al.
2022, arXiv 2112.01071) and the free attention, the training-free bars ECLIP has to beat. Writes
OUT/ablation.md and OUT/ablation.json (with each setting's recipe).

A setting is written `head[/source/share][+option...]`:
    attention | avg | max | masked_max/cls_attention/0.6 | masked_max/rollout/top0.3
options: +normalized (max over L2-normalised features), +current (masks from the model being
trained), +lastN (train only the last N image blocks + projection), +visual (image tower only),
+bgneg / +bgavg (background negatives pooled by max / by mean), +objects (captions that name no background; with --objects-data
the fine-tune reads those pairs), +shapes (those plus "a photo of a star.", the zero-shot prompt's words; --shapes-data), +lrX
(learning rate X), +stepsN (N steps); the dense term: +dense (margin form), +densesoft (softmax form) or +densepeak
(margin on the mean and on the peak), +dwX (its weight), +marginX (its margin), with any head
(`attention/similarity/0.6+dense`: the model's own head, the term's mask from the similarity source); the phrase term:
+phrasesX (its weight), +vocabulary (its softmax over every phrase); zero-shot keepers: +visual (text tower frozen),
+distillX, +l2spX (their weights). All options are ours.

    python bench/eclip_ablation.py --model synth-vit --out out/ablation-vit --steps 300 \
        --settings attention avg max masked_max/cls_attention/0.6 masked_max/cls_attention/0.6+bgneg
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from eclip.data.synthetic import TEST_SEED, VALIDATION_SEED
from eclip.train.checkpoint import STATE_NAME
from eclip.train.recipe import DataRecipe, FinetuneRecipe

VIT_GRID = ["attention", "avg", "max", "max+normalized",
            "masked_max/cls_attention/0.4", "masked_max/cls_attention/0.6", "masked_max/cls_attention/0.8",
            "masked_max/rollout/0.6", "masked_max/similarity/0.6", "masked_max/cls_attention/top0.3",
            "masked_max/cls_attention/0.6+current", "masked_max/cls_attention/0.6+last2"]
RESNET_GRID = ["attention", "avg", "max", "max+normalized",
               "masked_max/cls_attention/0.4", "masked_max/cls_attention/0.6", "masked_max/cls_attention/0.8",
               "masked_max/similarity/0.6", "masked_max/cls_attention/top0.3",
               "masked_max/cls_attention/0.6+current", "masked_max/cls_attention/0.6+last2"]


def parse_setting(spec: str, base: FinetuneRecipe, files: dict[str, str | None] | None = None) -> FinetuneRecipe:
    """`masked_max/rollout/0.6+last2` -> `base` with that head, mask and options.

    `files` maps a caption set ("all", "objects", "shapes") to pairs written with those captions;
    a setting whose caption set has files reads them, else it draws synthetic scenes (when `base`
    does). A setting that asks for captions its data cannot have is refused.
    """
    core, *options = spec.split("+")
    head, *rest = core.split("/")
    changes: dict = {"pooling__head": head}
    if rest or head == "masked_max":  # the mask of masked_max and of the dense term
        source = rest[0] if rest else "cls_attention"
        share = rest[1] if len(rest) > 1 else "0.6"
        changes["pooling__mask_source"] = source
        if share.startswith("top"):
            changes.update(pooling__mask_rule="topk", pooling__mask_topk=float(share[3:]))
        else:
            changes.update(pooling__mask_rule="mass", pooling__mask_mass=float(share))
    captions = "all"
    for option in options:
        if option == "normalized":
            changes["pooling__max_over"] = "normalized"
        elif option == "current":
            changes["pooling__mask_from"] = "current"
        elif option.startswith("last"):
            changes["train"] = f"last:{int(option[4:])}"
        elif option == "visual":
            changes["train"] = "visual"
        elif option in ("bgneg", "bgavg"):
            changes["loss__background_negatives"] = "max" if option == "bgneg" else "avg"
        elif option in ("objects", "shapes"):
            captions = option
        elif option in ("dense", "densesoft", "densepeak"):
            changes["loss__dense"] = {"dense": "margin", "densesoft": "softmax", "densepeak": "peak"}[option]
        elif option.startswith("dw"):
            changes["loss__dense_weight"] = float(option[2:])
        elif option.startswith("margin"):
            changes["loss__dense_margin"] = float(option[6:])
        elif option == "vocabulary":
            changes["loss__phrase_set"] = "vocabulary"
        elif option.startswith("phrases"):
            changes["loss__phrases"] = float(option[7:])
        elif option.startswith("distill"):
            changes["loss__distill"] = float(option[7:])
        elif option.startswith("l2sp"):
            changes["loss__l2sp"] = float(option[4:])
        elif option.startswith("lr"):
            changes["settings__lr"] = float(option[2:])
        elif option.startswith("steps"):
            changes["settings__steps"] = int(option[5:])
        else:
            raise SystemExit(f"unknown option +{option} in setting {spec!r}")
    path = (files or {}).get(captions)
    if path:
        changes["data"] = DataRecipe.from_spec(path, captions=captions, image_size=base.data.image_size)
    elif base.data.kind == "synthetic":
        changes["data__captions"] = captions
    elif captions != (base.data.captions or "all"):
        raise SystemExit(f"setting {spec!r} needs pairs with {captions} captions; give --{captions}-data or train on the synthetic stream")
    return base.replace(**changes)


def describe(spec: str, recipe: FinetuneRecipe) -> dict:
    """The table's record of a setting: its name and the recipe fields the grid varies."""
    head = recipe.pooling
    masked = head.head == "masked_max" or bool(recipe.loss.dense_terms)
    share = f"top{head.mask_topk}" if head.mask_rule == "topk" else f"mass {head.mask_mass}"
    return {"setting": spec, "pooling": head.head, "mask_source": head.mask_source if masked else "-", "mask": share if masked else "-",
            "max_over": head.max_over, "mask_from": head.mask_from if masked else "-", "train": recipe.train,
            "variant": "+".join(spec.split("+")[1:]) or "-"}


def folder_name(spec: str) -> str:
    return spec.replace("/", "_").replace("+", "__")


def eclip_command() -> list[str]:
    script = Path(sys.executable).parent / "eclip"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from eclip.cli import main; main()"]


def fine_tune_command(recipe: FinetuneRecipe, out: Path, run_options: list[str]) -> list[str] | None:
    """The `eclip train` command of one setting (its recipe written to OUT/recipe.json), or None when its folder is complete.

    `run_options` say how to run it (device, threads) and come after `--recipe`, so any recipe
    option among them (`--extra`) overrides the setting's.
    """
    if (out / "wall_s.txt").exists():
        return None
    from eclip.writing import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "recipe.json", json.dumps(recipe.to_json(), indent=2))
    command = eclip_command() + ["train", "--recipe", str(out / "recipe.json"), "--out", str(out), *run_options]
    if (out / STATE_NAME).exists():
        command.append("--resume")
    return command


def run_fine_tunes(jobs: list[tuple[Path, list[str]]], parallel: int, log) -> None:
    """Run `eclip train` commands, `parallel` at a time; each records its wall time in wall_s.txt."""
    running: list[tuple[Path, subprocess.Popen, float]] = []
    queue = list(jobs)
    failed = []
    while queue or running:
        while queue and len(running) < parallel:
            out, command = queue.pop(0)
            out.mkdir(parents=True, exist_ok=True)
            print(f"[ablation] {' '.join(command)}", file=log, flush=True)
            with open(out / "train.log", "w") as handle:
                running.append((out, subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT), time.time()))
        time.sleep(0.5)
        for item in list(running):
            out, process, began = item
            if process.poll() is None:
                continue
            running.remove(item)
            if process.returncode == 0:
                (out / "wall_s.txt").write_text(f"{time.time() - began:.1f}\n")
            else:
                failed.append(str(out))
    if failed:
        raise SystemExit(f"fine-tuning failed for {failed}; see train.log in each folder")


def segmentation_miou(path: str, methods: list[str], seed: int, n: int, device: str) -> dict[str, dict[str, float]]:
    """{method: {"shapes": mIoU, "phrases": mIoU}} of one model on the first `n` scenes of `seed` (argmax over each vocabulary,
    as scripts/segmentation_synthetic.py makes them)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from segmentation_synthetic import vocabulary_records

    out: dict[str, dict[str, float]] = {}
    for record in vocabulary_records(n, seed, [path], methods, device):
        out.setdefault(record["method"], {})[record["vocabulary"]] = record["miou"]
    return out


def measure_model(path: str, methods: list[str], seeds: dict[str, int], n: int, size: int, device: str, threads: int,
                  segmentation: int = 0) -> dict:
    """{set name: shift metrics of `methods` and zero-shot (and segmentation mIoU on `segmentation` scenes)} for one model."""
    import torch

    from eclip.data.synthetic import CLASSNAMES
    from eclip.methods.base import get_method
    from eclip.models.loading import load_model
    from eclip.shift import measure, synthetic_samples

    torch.set_num_threads(threads)
    chosen = {method.label: method for method in map(get_method, methods)}
    model = load_model(path, device=device)
    results = {name: measure(model, chosen, synthetic_samples(seed, n, size), list(CLASSNAMES), "single", batch_size=100)
               for name, seed in seeds.items()}
    if segmentation:
        for name, seed in seeds.items():
            results[name]["segmentation"] = segmentation_miou(path, ["itsm"], seed, segmentation, device).get("itsm", {})
    return results


def measure_all(jobs: list[tuple[str, list[str]]], args, size: int, parallel: int) -> list[dict]:
    """`measure_model` of each (model, methods), `parallel` processes at a time, in order."""
    seeds = {"validation": args.val_seed, "test": args.test_seed}
    calls = [(path, methods, seeds, args.n, size, args.device, args.threads, args.segmentation) for path, methods in jobs]
    if parallel == 1:
        return [measure_model(*call) for call in calls]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(parallel) as pool:
        return pool.starmap(measure_model, calls)


def row(record: dict, result: dict, method: str, wall: float | None) -> dict:
    """One table row: the setting and, per scene set (validation, test), the map's numbers."""
    out = {**record, "map": method, "wall_s": wall}
    for name, metrics in result.items():
        m = metrics[method]
        out[name] = {"zero_shot": metrics["zero_shot"]["top1"], "fg_iou": m["fg_iou"], "threshold": m["threshold"],
                     "score_contrast": m["msc"] / 100, "inverted_rate": m["inverted_rate"], "pointing": m["pointing_game"]}
        if method == "itsm" and metrics.get("segmentation"):
            out[name]["segmentation_miou"] = metrics["segmentation"]
    return out


def markdown(rows: list[dict], title: str) -> str:
    segmented = any("segmentation_miou" in r["validation"] for r in rows)
    extra = " seg. mIoU shapes val / test | seg. mIoU phrases val / test |" if segmented else ""
    lines = [f"### {title}", "",
             "| setting | map | zero-shot val / test | mSC val / test | fg IoU val / test | inverted val / test | pointing test |"
             + extra + " wall s |",
             "|---|---|---:|---:|---:|---:|---:|" + "---:|---:|" * segmented + "---:|"]
    for r in rows:
        wall = f"{r['wall_s']:.0f}" if r.get("wall_s") else "-"
        v, t = r["validation"], r["test"]
        cells = ""
        if segmented:
            seg = [r[name].get("segmentation_miou", {}) for name in ("validation", "test")]
            cells = "".join(" " + " / ".join(f"{100 * s[vocabulary]:.1f}" if vocabulary in s else "-" for s in seg) + " |"
                            for vocabulary in ("shapes", "phrases"))
        lines.append(f"| {r['setting']} | {r['map']} | {100 * v['zero_shot']:.1f}% / {100 * t['zero_shot']:.1f}% | "
                     f"{100 * v['score_contrast']:+.1f} / {100 * t['score_contrast']:+.1f} | "
                     f"{v['fg_iou']:.3f} / {t['fg_iou']:.3f} | {100 * v['inverted_rate']:.1f}% / {100 * t['inverted_rate']:.1f}% | "
                     f"{100 * t['pointing']:.1f}% |{cells} {wall} |")
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
    parser.add_argument("--jobs", type=int, default=1, help="Fine-tunes run at the same time.")
    parser.add_argument("--device", default="cpu", help="Device of the fine-tunes and the measurements.")
    parser.add_argument("--data", default=None, help="Pairs (all captions) of every fine-tune (default: the synthetic stream).")
    parser.add_argument("--data-seed", type=int, default=1000, help="Seed of the synthetic stream (training seeds: 1000, 1001).")
    parser.add_argument("--objects-data", default=None, help="Pairs of +objects settings (captions that name no background).")
    parser.add_argument("--shapes-data", default=None, help="Pairs of +shapes settings.")
    parser.add_argument("--extra", default="",
                        help="More `eclip train` arguments for every setting, e.g. '--weight-decay 0.05' (they override the settings').")
    parser.add_argument("--n", type=int, default=300, help="Held-out scenes per set.")
    parser.add_argument("--val-seed", type=int, default=VALIDATION_SEED, help="Scenes the settings are chosen on.")
    parser.add_argument("--test-seed", type=int, default=TEST_SEED, help="Scenes the settings are reported on.")
    parser.add_argument("--scene-size", type=int, default=None, help="Held-out scene size (default: the model's training scenes).")
    parser.add_argument("--segmentation", type=int, default=0,
                        help="Also the ITSM's segmentation mIoU (shapes, phrases) on the first N scenes of each set (0: off).")
    parser.add_argument("--eval-only", action="store_true", help="Measure the existing runs, train nothing.")
    args = parser.parse_args()
    if args.val_seed == args.test_seed:
        raise SystemExit("--val-seed and --test-seed must differ: settings are chosen on one and reported on the other")

    import torch

    from eclip.models.loading import load_model
    from eclip.models.pooling import PoolingConfig
    from eclip.train.loop import TrainSettings
    from eclip.train.recipe import Start, recipe_of

    torch.set_num_threads(args.threads)
    start = load_model(args.model)
    parent = recipe_of(start)
    size = args.scene_size or int((parent.data.image_size if parent else None) or start.image_size[0])
    settings = args.settings or (VIT_GRID if start.arch == "vit" else RESNET_GRID)
    args.out.mkdir(parents=True, exist_ok=True)
    data = DataRecipe.from_spec(args.data, captions="all") if args.data else DataRecipe(seed=args.data_seed)  # scenes of the parent's size
    base = FinetuneRecipe(start=Start(model=args.model), pooling=PoolingConfig(head="masked_max"), data=data,
                          settings=TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                                                 checkpoint_every=100))
    files = {"all": args.data, "objects": args.objects_data, "shapes": args.shapes_data}
    run_options = ["--threads", str(args.threads), "--device", args.device, *args.extra.split()]

    folders = {spec: args.out / "runs" / folder_name(spec) for spec in settings}
    recipes = {spec: parse_setting(spec, base, files) for spec in settings}
    commands = {spec: fine_tune_command(recipes[spec], folder, run_options) for spec, folder in folders.items()}
    if not args.eval_only:
        with open(args.out / "commands.log", "a") as log:
            run_fine_tunes([(folders[s], c) for s, c in commands.items() if c is not None], args.jobs, log)

    vanilla = {"setting": "vanilla", "pooling": "attention", "mask_source": "-", "mask": "-", "max_over": "raw", "mask_from": "-",
               "train": "-", "variant": "-"}
    reference = ["itsm", "maskclip", "free_attention"]
    done = [spec for spec, folder in folders.items() if (folder / "wall_s.txt").exists()]
    jobs = [(args.model, reference)] + [(str(folders[spec]), ["itsm"]) for spec in done]
    results = measure_all(jobs, args, size, max(1, args.jobs))
    rows = [row(vanilla, results[0], m, None) for m in reference if m in results[0]["test"]]
    for spec, result in zip(done, results[1:]):
        rows.append(row(describe(spec, recipes[spec]), result, "itsm", float((folders[spec] / "wall_s.txt").read_text())))
    (args.out / "ablation.json").write_text(json.dumps({
        "model": args.model, "arch": start.arch, "eval": {"validation_seed": args.val_seed, "test_seed": args.test_seed,
                                                          "n": args.n, "scene_size": size, "segmentation_n": args.segmentation},
        "run_options": run_options, "rows": rows, "recipes": {s: r.to_json() for s, r in recipes.items()},
        "commands": {s: " ".join(c or []) for s, c in commands.items()}}, indent=2))
    title = (f"{start.arch}: fine-tuned from {args.model}, {args.steps} steps x {args.batch_size}, lr {args.lr}; "
             f"{args.n} held-out scenes per set (validation seed {args.val_seed}, test seed {args.test_seed}, {size} px)")
    (args.out / "ablation.md").write_text(markdown(rows, title) + "\n")
    print((args.out / "ablation.md").read_text())


if __name__ == "__main__":
    main()

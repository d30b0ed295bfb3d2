"""Evaluation from image files: `eclip evaluate` on a VOC-layout folder of JPEGs against the bare forward over the same files.

Issue 19, 3c. Writes N synthetic scenes at `--size` px as a VOC-layout folder (JPEGImages/*.jpg,
quality 90; SegmentationClass/*.png palette masks; ImageSets/Segmentation/val.txt) and a model
folder of an open_clip architecture with random weights (speed does not depend on them), then
times in one process, each after a warm-up:
- the bare forward: decode each JPEG, preprocess (`adapter.preprocess`), `encode_image`, in
  batches of `--batch-size`, under the same precision;
- `eclip.evaluation.evaluate` over the same files, one record per method (ITSM, one dense method,
  one gradient method), localisation metrics only (deletion / insertion are extra forwards by
  design), its `seconds` (batches only, model loading excluded), with each of `--workers-list`
  DataLoader workers where the evaluation has them.
Target: ITSM >= 0.85x the bare forward's images per second. The record names the device.

    python bench/bench_eval_files.py --device cuda --model ViT-B-16 --n 512 --json bench/results/eval_files.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

METHODS = ("itsm", "maskclip", "grad_eclip")  # ITSM, a dense method, a gradient method


def write_voc(root: Path, n: int, size: int) -> None:
    """N synthetic scenes as a VOC-layout folder: JPEG images, palette masks of class indices, the val split."""
    import numpy as np
    from PIL import Image

    from eclip.data.synthetic import SceneConfig, render_scene, scene_seed

    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    palette = (np.arange(256 * 3, dtype=np.uint8) * 37).tolist()
    ids = []
    for i in range(n):
        scene = render_scene(scene_seed(777, i), SceneConfig(image_size=size))
        image_id = f"2026_{i:06d}"
        Image.fromarray(scene.image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=90)
        mask = Image.fromarray(scene.class_index_mask().astype(np.uint8), mode="P")  # class k -> VOC class k (speed only)
        mask.putpalette(palette)
        mask.save(root / "SegmentationClass" / f"{image_id}.png")
        ids.append(image_id)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")


def random_model_folder(folder: Path, name: str) -> Path:
    import open_clip
    import torch

    from eclip.models.adapter import OPENAI_MEAN, OPENAI_STD
    from eclip.models.folder import build_open_clip, save_model_folder

    if name == "eclip-tiny":
        from bench_train import register_tiny

        register_tiny()
    cfg = open_clip.get_model_config(name)
    config = {"arch": "vit", "open_clip": {k: cfg[k] for k in ("embed_dim", "vision_cfg", "text_cfg")},
              "preprocess": {"image_size": cfg["vision_cfg"]["image_size"], "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}}
    torch.manual_seed(0)
    return save_model_folder(folder / name, build_open_clip(config), config, half=True)


def bare_forward(model, paths: list[Path], batch_size: int, precision: str) -> float:
    """Seconds to decode, preprocess and encode every file, in batches."""
    import torch
    from PIL import Image

    from eclip.precision import autocast

    start = time.perf_counter()
    with torch.no_grad(), autocast(precision, model.device):
        for i in range(0, len(paths), batch_size):
            images = []
            for path in paths[i:i + batch_size]:
                with Image.open(path) as im:
                    images.append(im.convert("RGB"))
            model.encode_image(model.preprocess(images))
        if model.device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict:
    import torch

    from eclip.evaluation import EvalConfig, evaluate
    from eclip.models.loading import load_model

    with tempfile.TemporaryDirectory() as tmp:
        root, began = Path(tmp) / "VOC2012", time.perf_counter()
        write_voc(root, args.n, args.size)
        folder = str(random_model_folder(Path(tmp), args.model))
        written = time.perf_counter() - began
        model = load_model(folder, device=args.device)
        paths = sorted((root / "JPEGImages").glob("*.jpg"))
        fields = {f.name for f in dataclasses.fields(EvalConfig)}
        extra = {"precision": args.precision} if "precision" in fields else {}
        workers_list = args.workers_list if "workers" in fields else [0]

        def evaluate_once(method: str, workers: int, limit: int | None = None) -> float:
            options = {**extra, **({"workers": workers} if "workers" in fields else {})}
            config = EvalConfig("voc", root, models=[folder], methods=[method], batch_size=args.batch_size, device=args.device,
                                perturbation=False, limit=limit, **options)
            (record,) = evaluate(config, progress=False)
            return record["seconds"]

        bare_forward(model, paths[: args.batch_size], args.batch_size, args.precision)  # warm-up
        bare = min(bare_forward(model, paths, args.batch_size, args.precision) for _ in range(args.repeats))
        rows = []
        for method in METHODS:
            for workers in workers_list:
                evaluate_once(method, workers, limit=args.batch_size)  # warm-up
                seconds = min(evaluate_once(method, workers) for _ in range(args.repeats))
                rows.append({"method": method, "workers": workers, "seconds": round(seconds, 3),
                             "images_per_s": round(args.n / seconds, 1), "vs_bare": round(bare / seconds, 3)})
                print(json.dumps(rows[-1]), flush=True)
    return {"bench": "eval-files", "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "model": f"{args.model} (random weights)", "images": args.n, "size": args.size, "batch_size": args.batch_size,
            "precision": args.precision, "write_s": round(written, 1), "bare_seconds": round(bare, 3),
            "bare_images_per_s": round(args.n / bare, 1), "evaluate": rows, "date": time.strftime("%Y-%m-%d"),
            "note": None if "workers" in fields else "this evaluation has no DataLoader workers yet: decoding in the main process"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="ViT-B-16", help="open_clip architecture (random weights)")
    parser.add_argument("--n", type=int, default=256, help="images")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--workers-list", type=int, nargs="+", default=[0, 8])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="append the record to this JSON list")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    record = run(args)
    print(json.dumps(record, indent=1))
    if args.json:
        from records import append_record

        append_record(args.json, record)


if __name__ == "__main__":
    main()

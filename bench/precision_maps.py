"""What reduced precision does to the maps and the metrics, per method: fp32 against bf16 (or fp16) autocast.

For each method, on the synthetic test seed (777) with a bundled model: the largest absolute
difference of the normalised maps (in [0, 1], at the image size) between a float32 pass and an
autocast pass over the same images and class texts, and the change of mSC (percent points) and
fg IoU of `eclip evaluate` (localisation metrics) between the two precisions. A method listed in
`eclip.precision.FP32_METHODS` runs in float32 whatever is asked, so its differences are 0 by
construction; the table says so.

    python bench/precision_maps.py --model synth-vit --n 16 --precision bf16 --json bench/results/precision-maps-cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

METHODS = ["itsm", "itsm_specific", "free_attention", "maskclip", "surgery", "sclip", "clearclip", "naclip", "gem", "cliptrase",
           "rollout", "chefer", "gradcam", "grad_eclip", "legrad"]


def max_map_difference(model, method: str, samples, classnames, precision: str) -> float:
    """max |fp32 map - reduced-precision map| over the images and their present classes (normalised maps)."""

    from eclip.evaluation.maps import class_maps, class_text_features, prepare
    from eclip.methods.base import get_method
    from eclip.precision import autocast, method_precision

    explainer = get_method(method)
    text = class_text_features(model, classnames, "imagenet")
    batch = [p for p in (prepare(s, classnames) for s in samples) if not isinstance(p, str)]
    exact = class_maps(model, explainer, batch, text, classnames)
    with autocast(method_precision(method, precision), model.device):
        low = class_maps(model, explainer, batch, text, classnames)
    return max(float((a.float() - b.float()).abs().max()) for (_, a), (_, b) in zip(exact.groups, low.groups)) if batch else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synth-vit")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch

    from eclip.data.synthetic import TEST_SEED, SceneConfig, SyntheticDataset, write_dataset
    from eclip.evaluation import EvalConfig, evaluate
    from eclip.methods.base import get_method
    from eclip.models.loading import load_model
    from eclip.precision import FP32_METHODS

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_dataset(Path(tmp) / "test", n=args.n, seed=TEST_SEED, config=SceneConfig(image_size=96))
        dataset = SyntheticDataset(root)
        samples = [dataset[i] for i in range(len(dataset))]
        for method in args.methods:
            if get_method(method).unsupported(model):
                continue
            began = time.perf_counter()
            records = {}
            for precision in ("fp32", args.precision):
                (records[precision],) = evaluate(EvalConfig("synthetic", root, models=[args.model], methods=[method], device=args.device,
                                                            perturbation=False, precision=precision, batch_size=8), progress=False)
            a, b = records["fp32"], records[args.precision]
            rows.append({"method": method, "runs_in": "fp32 (FP32_METHODS)" if method in FP32_METHODS else args.precision,
                         "max_abs_map_diff": round(max_map_difference(model, method, samples, dataset.classnames, args.precision), 4),
                         "msc_fp32": round(a["msc"], 2), "msc_change": round(b["msc"] - a["msc"], 3),
                         "fg_iou_fp32": round(a["fg_iou"], 4), "fg_iou_change": round(b["fg_iou"] - a["fg_iou"], 4),
                         "seconds": round(time.perf_counter() - began, 1)})
            print(json.dumps(rows[-1]), flush=True)
    record = {"bench": "precision-maps", "device": args.device if args.device != "cpu" else f"{platform.machine()} CPU",
              "model": args.model, "precision": args.precision, "images": args.n, "seed": "test (777)", "rows": rows,
              "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(record, indent=1))
    if args.json:
        from records import append_record

        append_record(args.json, record)


if __name__ == "__main__":
    main()

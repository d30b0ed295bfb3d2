"""Speed of every explanation method relative to the model's bare image forward.

Times each registered method for K = 1 and K = 20 texts (configurable) on open_clip ViT-B/16 with
random weights (`open_clip.create_model('ViT-B-16')`: no download), for a batch of random images,
against the bare `encode_image` forward measured in the same run. Reports the time ratios
(method / forward) as a Markdown table, printed and written with the raw numbers to a JSON file.
For gradient methods it also times K separate single-text runs against the batched one (one
backward for all K texts), the speed-up the batching buys.

Text embeddings are computed once beforehand, so only the image side is timed. Times are the
median over `--repeats` runs; each method is warmed up once (before its first K).

    python bench/bench_methods.py --json out/bench_methods.json                  # CPU, small
    python bench/bench_methods.py --device cuda --batch 8 --repeats 5 --rise-masks 2000 --json out/gpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1, clock: str = "wall") -> float:
    """Median time in seconds of `fn()` over `repeats` runs after `warmup` runs.

    `clock="process"` counts this process's CPU seconds (all threads) instead of wall time: on a
    CPU shared with other jobs it measures the work, not the share of the machine the run got.
    """
    now = CLOCKS[clock]
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = now()
        fn()
        sync(device)
        times.append(now() - start)
    return statistics.median(times)


def load_model(device: torch.device, name: str | None = None):
    """Random-weight open_clip ViT-B/16 behind the eclip adapter, with open_clip's own tokenizer; or
    `name`, any model `eclip.models.load_model` opens (e.g. a bundled one, for methods too slow for ViT-B/16 on a CPU)."""
    if name:
        from eclip.models.loading import load_model as load_named

        return load_named(name, device=str(device))
    import open_clip

    from eclip.models.adapter import OPENAI_MEAN, OPENAI_STD
    from eclip.models.loading import wrap

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16").to(device).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    return wrap(model, tokenizer, name="ViT-B-16 (random init)", image_size=(224, 224), mean=OPENAI_MEAN,
                std=OPENAI_STD, context_length=77)


def method_options(name: str, rise_masks: int) -> dict:
    return {"n_masks": rise_masks} if name == "rise" else {}


def bench_method(make, model, images, features, ks: list[int], forward_s: float, repeats: int, loop: bool,
                 clock: str = "wall") -> dict:
    """Times of one method for each K (and of K single-text runs for gradient methods).

    `make()` builds the method; every timed call gets a fresh one, so nothing a method keeps between
    calls (e.g. the text side `interactions` caches per caption) makes a later call look cheaper.
    """
    device = images.device
    method = make()
    row = {"method": method.name, "needs_grad": method.needs_grad, "seconds": {}, "ratio": {}, "looped_seconds": {}}
    for i, k in enumerate(ks):
        texts = features[:k]
        warmup = 1 if i == 0 else 0  # the first K warms the method's code paths up
        seconds = timed(lambda texts=texts: make().explain(model, images, texts), device, repeats, warmup=warmup, clock=clock)
        row["seconds"][str(k)] = seconds
        row["ratio"][str(k)] = seconds / forward_s
        if method.needs_grad and k > 1 and loop:
            def one_at_a_time(texts: torch.Tensor = texts) -> None:
                method = make()
                for i in range(len(texts)):
                    method.explain(model, images, texts[i:i + 1])

            row["looped_seconds"][str(k)] = timed(one_at_a_time, device, repeats, warmup=0, clock=clock)
        print(f"  {method.name:14s} K={k:3d}: {seconds:8.3f} s  ({seconds / forward_s:6.1f} x forward)", flush=True)
    return row


def markdown(rows: list[dict], ks: list[int], forward_s: float) -> str:
    header = ["method", "grad"] + [f"K={k} s" for k in ks] + [f"K={k} / fwd" for k in ks]
    loop_ks = [k for k in ks if k > 1]
    header += [f"K={k} looped / batched" for k in loop_ks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append("| encode_image (bare forward) | - | " + " | ".join(f"{forward_s:.3f}" for _ in ks) + " | "
                 + " | ".join("1.0" for _ in ks) + " | " + " | ".join("-" for _ in loop_ks) + " |")
    for row in rows:
        cells = [row["method"], "yes" if row["needs_grad"] else "no"]
        cells += [f"{row['seconds'][str(k)]:.3f}" for k in ks]
        cells += [f"{row['ratio'][str(k)]:.1f}" for k in ks]
        for k in loop_ks:
            loop = row.get("looped_seconds", {}).get(str(k))
            cells.append(f"{loop / row['seconds'][str(k)]:.2f} ({loop:.2f} s)" if loop is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    parser.add_argument("--texts", default="1,20", help="comma-separated numbers of texts K (default 1,20)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per measurement, median reported (default 1)")
    parser.add_argument("--rise-masks", type=int, default=100, help="RISE masks (default 100; the method's own default is 500)")
    parser.add_argument("--methods", default="", help="comma-separated method names (default: all registered)")
    parser.add_argument("--no-loop", action="store_true", help="skip the K single-text runs of gradient methods")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (stable on a shared CPU; not for --device cuda)")
    parser.add_argument("--model", default="", help="a model name eclip loads instead of random ViT-B/16 (e.g. synth-vit)")
    parser.add_argument("--json", type=Path, default=Path("bench_methods.json"), help="where to write the results")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda was asked for but no CUDA device is visible; use --device cpu", file=sys.stderr)
        return 2
    from eclip.methods.base import available_methods, get_method

    ks = [int(k) for k in args.texts.split(",") if k.strip()]
    names = [n for n in args.methods.split(",") if n] or list(available_methods())
    model = load_model(device, args.model or None)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, *model.image_size, generator=g).to(device)
    all_texts = [f"a photo of object number {i}" for i in range(max(ks))]
    features = model.encode_text(all_texts)

    forward_s = timed(lambda: model.encode_image(images), device, max(3, args.repeats), clock=args.clock)
    print(f"{model.name} on {device}, batch {args.batch}, {model.image_size} px: bare forward {forward_s:.3f} s", flush=True)
    rows = []
    for name in names:
        cls = available_methods()[name]
        if model.arch in cls.archs:
            options = method_options(name, args.rise_masks)
            rows.append(bench_method(lambda name=name, options=options: get_method(name, **options), model, images, features, ks,
                                     forward_s, args.repeats, not args.no_loop, args.clock))

    table = markdown(rows, ks, forward_s)
    print()
    print(table)
    result = {
        "model": model.name, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": args.batch, "image_size": list(model.image_size),
        "repeats": args.repeats, "clock": args.clock, "rise_masks": args.rise_masks, "texts": ks, "forward_seconds": forward_s,
        "methods": rows, "markdown": table,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

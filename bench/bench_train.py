"""Training speed and memory: eclip's plain and ECLIP steps against open_clip's own trainer; data waiting from shards.

Two benchmarks, each run in fresh processes (one per measurement, so peak memory is its own):

- `step` (issue 19, 3a): the same model (random weights: speed does not depend on them), batch,
  precision and device for
  * eclip's plain contrastive step: `eclip.train.loop.train` with the model's own head;
  * eclip's ECLIP step: the same loop with masked max pooling and its masks from a frozen copy
    of the starting model (`masked_max`, `cls_attention`, mass 0.6: the paper's recipe);
  * open_clip's step: `open_clip_train.main --dataset-type synthetic` (open_clip_torch[training]),
    its log read at every step (`--log-every-n-steps 1`).
  eclip is fed from memory (one random batch, distinct captions tokenized by DataLoader workers),
  open_clip from its synthetic dataset (a blank image through its train transform, in
  `--loader-workers` workers). Reported per step (median over the timed steps, after warm-up):
  the whole step and the step without the time spent waiting for the batch (open_clip's
  `Batch (t)` - `Data (t)`), images per second, and the peak GPU memory
  (`torch.cuda.max_memory_allocated`). Targets: eclip plain >= 0.95x open_clip's images/s,
  ECLIP step <= 1.35x the plain step's time.
- `data` (3b): eclip's plain step fed from WebDataset shards of 224 px JPEGs (`eclip synth
  --webdataset --format jpg`), or from synthetic scenes drawn on the fly (the bundled models'
  training), with each of `--workers-list` DataLoader workers: the share of the step time spent
  waiting for data (target < 10% with workers).

Each record names the device. Timing: the loop calls `loss.item()` every step, so the wall time
between two batch requests is the step's time on the device; the run is stopped after the timed
steps (no checkpoint is written).

    python bench/bench_train.py step --device cuda --model ViT-B-16 --batch 256 --precision bf16 --json out.json
    python bench/bench_train.py data --data shards --device cuda --model ViT-B-16 --batch 256 --workers-list 0 4 14 --json out.json
    python bench/bench_train.py data --data synthetic --device cuda --model synth-vit --batch 512 --workers-list 0 15
    python bench/bench_train.py step --device cpu --model eclip-tiny --batch 8 --steps 3 --warmup 1   # the short CPU run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPEN_CLIP_PRECISION = {"fp32": "fp32", "bf16": "amp_bf16", "fp16": "amp"}


TINY = {"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def register_tiny() -> None:
    """`eclip-tiny`: a two-block ViT registered with open_clip, for the short CPU runs (both trainers build it by name)."""
    import open_clip

    folder = Path(tempfile.mkdtemp())
    (folder / "eclip-tiny.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(folder / "eclip-tiny.json")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


class _Stop(Exception):
    """Raised by the timed feed after the last timed step: the run ends without a checkpoint."""


class MemoryPairs:
    """One seeded random uint8 batch at the model's size, and distinct captions: data costs nothing but tokenizing."""

    def __init__(self, size: int, batch: int) -> None:
        import torch

        self.images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        self.skipped: list = []

    def part(self, index: int, size: int, start: int, stop: int):
        return self.images[start:stop], [f"a photo of object number {(index * size + i) % 997}" for i in range(start, stop)]

    def batch(self, index: int, size: int):
        return self.part(index, size, 0, size)


def eclip_child(args: argparse.Namespace) -> dict:
    """One eclip training run: plain or ECLIP head, from memory or shards; per-step times and peak memory."""
    import open_clip
    import torch

    import eclip.train.loop as loop
    from eclip.data.loader import TrainingFeed
    from eclip.data.pairs import open_pairs
    from eclip.models.adapter import OPENAI_MEAN, OPENAI_STD
    from eclip.models.loading import wrap
    from eclip.models.pooling import PoolingConfig
    from eclip.train.parts import make_embedder

    device = torch.device(args.device)
    if device.type == "cuda":  # as `eclip train --device cuda` and open_clip's trainer
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    if args.model.startswith("synth-"):  # eclip's own architectures (the bundled models'), from scratch
        from eclip.models.folder import architecture_config, build_open_clip
        from eclip.models.loading import simple_tokenizer

        config = architecture_config(args.model)
        model = build_open_clip(config).to(device)
        tokenizer = simple_tokenizer(int(config["open_clip"]["text_cfg"].get("context_length", 77)))[0]
        size = config["preprocess"]["image_size"]
    else:
        model = open_clip.create_model(args.model).to(device)
        tokenizer = open_clip.get_tokenizer(args.model)
        size = model.visual.image_size
        size = size if isinstance(size, int) else size[0]
        config = {"arch": "vit", "open_clip": {}, "preprocess": {"image_size": size, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}}
    embedder = loop.native_image_embedder
    if args.impl == "eclip-eclip":
        adapter = wrap(model, tokenizer, name=args.model, image_size=(size, size), mean=OPENAI_MEAN, std=OPENAI_STD,
                       context_length=model.context_length)
        embedder = make_embedder(adapter, PoolingConfig(head="masked_max", mask_source="cls_attention", mask_mass=0.6))
    if args.data == "synthetic":  # the bundled models' training stream: scenes drawn by the workers
        from eclip.data.pairs import SyntheticPairs

        source = SyntheticPairs(seed=1000, image_size=args.scene_size or size)
    else:
        source = open_pairs(args.shards, size) if args.shards else MemoryPairs(size, args.batch)
    starts: list[float] = []
    ends: list[float] = []
    total = args.warmup + args.steps

    class TimedFeed(TrainingFeed):
        def __next__(self):
            starts.append(time.perf_counter())
            if len(starts) > total:
                raise _Stop
            out = super().__next__()
            ends.append(time.perf_counter())
            return out

    loop.TrainingFeed = TimedFeed
    settings = loop.TrainSettings(steps=total + 1, batch_size=args.batch, lr=1e-4, warmup=1, checkpoint_every=10**6,
                                  precision=args.precision, grad_checkpointing=args.grad_checkpointing)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            loop.train(loop.Run(model, tokenizer, source, settings, config, embedder=embedder), Path(tmp) / "run", progress=False,
                       workers=args.workers)
        except _Stop:
            pass
    steps = [b - a for a, b in zip(starts[args.warmup:total], starts[args.warmup + 1:total + 1])]
    waits = [e - s for s, e in zip(starts[args.warmup:total], ends[args.warmup:total])]
    step = statistics.median(steps)
    return {"impl": args.impl, "step_s": round(step, 4), "compute_s": round(statistics.median([a - w for a, w in zip(steps, waits)]), 4),
            "images_per_s": round(args.batch / step, 1), "wait_share": round(sum(waits) / sum(steps), 4),
            "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
            "workers": args.workers, "skipped": len(getattr(source, "skipped", []))}


def open_clip_child(args: argparse.Namespace) -> dict:
    """open_clip's trainer on its synthetic dataset, in this process; its per-step log lines parsed."""
    import logging

    import torch
    from open_clip_train.main import main

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logging.getLogger().addHandler(Keep())
    total = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # --logs none still makes a folder for the run's log
        main(["--dataset-type", "synthetic", "--train-num-samples", str(total * args.batch), "--batch-size", str(args.batch),
              "--model", args.model, "--precision", OPEN_CLIP_PRECISION[args.precision], "--epochs", "1",
              "--workers", str(args.loader_workers), "--log-every-n-steps", "1", "--logs", "none", "--warmup", "1",
              "--lr", "1e-4", "--device", args.device, "--seed", "0", "--report-to", ""]
             + (["--grad-checkpointing"] if args.grad_checkpointing else []))
    found = [(float(m.group(1)), float(m.group(2))) for m in
             (re.search(r"Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+)", line) for line in lines) if m]
    timed = found[args.warmup:total]
    if not timed:
        raise SystemExit(f"open_clip logged {len(found)} steps; expected {total}")
    step = statistics.median(b for _, b in timed)
    device = torch.device(args.device)
    return {"impl": "open_clip", "step_s": round(step, 4), "compute_s": round(statistics.median(b - d for d, b in timed), 4),
            "images_per_s": round(args.batch / step, 1), "wait_share": round(sum(d for d, _ in timed) / sum(b for _, b in timed), 4),
            "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
            "workers": args.loader_workers}


def child(args: argparse.Namespace) -> None:
    if args.model == "eclip-tiny":
        register_tiny()
    if args.threads:  # both trainers: open_clip's main() leaves torch's thread count as it finds it
        import torch

        torch.set_num_threads(args.threads)
    record = open_clip_child(args) if args.impl == "open_clip" else eclip_child(args)
    print("RESULT " + json.dumps(record), flush=True)


def spawn(args: argparse.Namespace, impl: str, **changes) -> dict:
    """Run one measurement in a fresh process and return its record."""
    options = {**vars(args), **changes, "impl": impl}
    argv = [sys.executable, __file__, "child"]
    for key in ("device", "model", "batch", "precision", "steps", "warmup", "workers", "loader_workers", "threads", "shards", "impl",
                "data", "scene_size"):
        if options.get(key) is not None:
            argv += [f"--{key.replace('_', '-')}", str(options[key])]
    if options.get("grad_checkpointing"):
        argv.append("--grad-checkpointing")
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout)
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not result:
        tail = (done.stderr or done.stdout)[-2000:]
        print(f"{impl} failed (exit {done.returncode}):\n{tail}", file=sys.stderr)
        return {"impl": impl, "error": tail[-300:]}
    record = json.loads(result[-1][len("RESULT "):])
    record["process_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(record), file=sys.stderr)
    return record


def write_shards(folder: Path, n: int, shards: int, size: int) -> None:
    """n synthetic scenes at `size` px as `shards` WebDataset shards of JPEGs (`eclip synth --webdataset --format jpg`)."""
    subprocess.run([sys.executable, "-m", "eclip.cli", "synth", str(folder), "--n", str(n), "--seed", "1001", "--size", str(size),
                    "--webdataset", "--format", "jpg", "--shard-size", str(-(-n // shards)), "--workers", str(min(16, os.cpu_count()))],
                   check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["step", "data", "child"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="ViT-B-16", help="open_clip architecture (random weights)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--precision", default="bf16", choices=list(OPEN_CLIP_PRECISION))
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps first")
    parser.add_argument("--workers", type=int, default=4, help="eclip's DataLoader workers (step mode)")
    parser.add_argument("--loader-workers", type=int, default=8, help="open_clip's --workers")
    parser.add_argument("--workers-list", type=int, nargs="+", default=[0, 4, 14], help="data mode: workers to compare")
    parser.add_argument("--data", default="memory", choices=["memory", "shards", "synthetic"],
                        help="data mode: shards (224 px JPEGs, written unless --shards) or synthetic scenes drawn by the workers")
    parser.add_argument("--scene-size", type=int, default=None, help="synthetic: pixels per side (default: the model's)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--shards", default=None, help="data mode: existing shards (else written to a temporary folder)")
    parser.add_argument("--n-images", type=int, default=2048, help="data mode: scenes written as shards")
    parser.add_argument("--impl", default=None)
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None, help="append the record to this JSON list")
    args = parser.parse_args()
    if args.mode == "child":
        return child(args)
    record = {"bench": f"train-{args.mode}", "device": device_name(args.device), "model": args.model, "batch": args.batch,
              "precision": args.precision, "steps": args.steps, "warmup": args.warmup, "date": time.strftime("%Y-%m-%d")}
    if args.mode == "step":
        runs = [spawn(args, "eclip-plain"), spawn(args, "eclip-eclip"), spawn(args, "open_clip")]
        by = {r["impl"]: r for r in runs}
        record["runs"] = runs
        if all("error" not in r for r in runs):
            record["plain_vs_open_clip_images_per_s"] = round(by["eclip-plain"]["images_per_s"] / by["open_clip"]["images_per_s"], 3)
            record["plain_vs_open_clip_compute"] = round(by["open_clip"]["compute_s"] / by["eclip-plain"]["compute_s"], 3)
            record["eclip_vs_plain_step_time"] = round(by["eclip-eclip"]["compute_s"] / by["eclip-plain"]["compute_s"], 3)
    else:
        record["data"] = args.data
        with tempfile.TemporaryDirectory() as tmp:
            shards = args.shards
            if shards is None and args.data == "shards":
                shards = str(Path(tmp) / "shards")
                began = time.perf_counter()
                write_shards(Path(shards), args.n_images, max(16, max(args.workers_list)), 224)
                record["write_shards_s"] = round(time.perf_counter() - began, 1)
            record["runs"] = [spawn(args, "eclip-plain", workers=w, shards=shards) for w in args.workers_list]
            plain = [r for r in record["runs"] if "error" not in r]
            if plain and plain[0]["workers"] == 0:
                record["speed_up_vs_no_workers"] = {r["workers"]: round(plain[0]["step_s"] / r["step_s"], 2) for r in plain}
    text = json.dumps(record, indent=1)
    print(text)
    if args.json:
        from records import append_record

        append_record(args.json, record)


if __name__ == "__main__":
    main()

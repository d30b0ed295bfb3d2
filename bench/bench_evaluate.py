"""Memory and speed of `eclip evaluate` on synthetic scenes: flat memory in the dataset size, near-forward speed.

Writes a synthetic folder (`eclip synth`, 96 px) of max(--sizes) scenes to a temporary folder, then:
- peak memory: for each size N, a fresh process runs the whole evaluation of the first N images
  (ITSM, every metric including deletion / insertion; then again without deletion / insertion)
  and reports its peak resident set size (`ru_maxrss`, which includes the ~530 MiB of `import
  torch`); memory is flat when the numbers for 100 and 1000 images agree. (With deletion /
  insertion glibc's heap can grow a few percent over a long run as forward passes of varying
  batch size fragment it; `MALLOC_MMAP_THRESHOLD_=65536` shows the same peak at both sizes.);
- throughput: in one process, the bare model forward over the dataset in the same batches
  (decode image and masks, preprocess, `encode_image`) against the evaluation loop over the same
  images (decode, preprocess, ITSM, resize, fg IoU / mIoU, mSC, inverted rate, pointing game;
  the record's `seconds`, i.e. without the one-time model loading, reported apart), each timed
  in `--repeats` adjacent (bare, evaluation) pairs, their order alternated; the ratio of
  evaluation to bare images per second, as the median over the pairs (robust to a neighbour's
  load, which changes from one second to the next on shared cores), is the target (>= 0.85).
  Deletion / insertion cost 2 x steps extra forward passes per (image, class) pair, so they
  are timed separately.

The model is the bundled `synth-vit` when installed, else the same architecture with random
weights (speed and memory do not depend on the weights).

    python bench/bench_evaluate.py                       # about 4-5 minutes on 2 CPU cores
    python bench/bench_evaluate.py --sizes 100 1000 --json out/bench_evaluate.json
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def model_for_bench(tmp: Path) -> tuple[str, str]:
    """(model argument, description): bundled synth-vit, or its architecture with random weights."""
    from eclip.models.loading import bundled_models

    if "synth-vit" in bundled_models():
        return "synth-vit", "synth-vit (bundled)"
    import torch

    from eclip.models.folder import architecture_config, build_open_clip, save_model_folder

    torch.manual_seed(0)
    config = architecture_config("synth-vit")
    folder = save_model_folder(tmp / "synth-vit-random", build_open_clip(config), config)
    return str(folder), "synth-vit architecture, random weights"


def child_memory(args: argparse.Namespace) -> None:
    """Run one evaluation and print its peak RSS (MiB) as JSON: what the parent measures in a fresh process."""
    from eclip.evaluation import EvalConfig, evaluate

    start = time.perf_counter()
    config = EvalConfig("synthetic", args.root, models=[args.model], methods=["itsm"], limit=args.limit, batch_size=args.batch_size,
                        deletion_steps=max(args.deletion_steps, 1), perturbation=args.deletion_steps > 0)
    (record,) = evaluate(config, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"images": record["n_images"], "pairs": record["n_pairs"], "peak_rss_mib": round(peak, 1),
                      "seconds": round(time.perf_counter() - start, 2)}))


def peak_memory(root: Path, model: str, n: int, batch_size: int, deletion_steps: int) -> dict:
    cmd = [sys.executable, __file__, "--child-memory", "--root", str(root), "--model", model, "--limit", str(n),
           "--batch-size", str(batch_size), "--deletion-steps", str(deletion_steps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def throughput(root: Path, model_name: str, n: int, batch_size: int, repeats: int, deletion_steps: int, perturbation_n: int) -> dict:
    """Images per second of the bare forward and of the evaluation over the same batches."""
    import torch

    from eclip.data.registry import open_dataset
    from eclip.evaluation import EvalConfig, evaluate
    from eclip.models.loading import load_model

    model = load_model(model_name)
    dataset = open_dataset("synthetic", root, limit=n)

    @torch.no_grad()
    def bare() -> None:
        for start in range(0, n, batch_size):
            samples = [dataset[i] for i in range(start, min(start + batch_size, n))]
            model.encode_image(model.preprocess([s.image for s in samples]))

    def run_eval(limit: int, steps: int) -> float:
        """Seconds of the evaluation loop (the record's `seconds`: batches only, model loading excluded)."""
        (record,) = evaluate(EvalConfig("synthetic", root, models=[model_name], methods=["itsm"], limit=limit, batch_size=batch_size,
                                        perturbation=steps > 0, deletion_steps=max(steps, 1)), progress=False)
        return record["seconds"]

    bare(), run_eval(batch_size, 0)  # warm-up: first-call allocations, lazy imports
    t_bare, t_eval, t_total = [], [], []
    for r in range(repeats):  # adjacent pairs, order alternated, so a busy neighbour slows both alike
        for which in (("bare", "eval") if r % 2 == 0 else ("eval", "bare")):
            if which == "bare":
                t_bare.append(_once(bare))
            else:
                start = time.perf_counter()
                t_eval.append(run_eval(n, 0))
                t_total.append(time.perf_counter() - start)
    ratios = sorted(b / e for b, e in zip(t_bare, t_eval))
    bare_s, eval_s = min(t_bare), min(t_eval)
    pert_s = run_eval(perturbation_n, deletion_steps) if perturbation_n else None
    return {"images": n, "repeats": repeats, "bare_seconds": round(bare_s, 3), "eval_seconds": round(eval_s, 3),
            "eval_seconds_with_setup": round(min(t_total), 3),
            "bare_images_per_s": round(n / bare_s, 1), "eval_images_per_s": round(n / eval_s, 1),
            "ratio_median": round(statistics.median(ratios), 3), "ratio_best": round(bare_s / eval_s, 3),
            "ratios": [round(x, 3) for x in ratios],
            "perturbation_images": perturbation_n, "perturbation_seconds": None if pert_s is None else round(pert_s, 2),
            "perturbation_images_per_s": None if pert_s is None else round(perturbation_n / pert_s, 1)}


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="dataset sizes for the memory runs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--deletion-steps", type=int, default=10, help="steps of deletion / insertion (0: off in the memory runs)")
    parser.add_argument("--throughput-n", type=int, default=300, help="images per timed run of the throughput comparison")
    parser.add_argument("--perturbation-n", type=int, default=100, help="images for the deletion / insertion timing (0: skip)")
    parser.add_argument("--repeats", type=int, default=8, help="timed (bare, evaluation) pairs")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        return child_memory(args)

    from eclip.data.synthetic import SceneConfig, write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_max = max(*args.sizes, args.throughput_n)
        start = time.perf_counter()
        root = write_dataset(tmp / "synth", n=n_max, seed=0, config=SceneConfig(image_size=96))
        print(f"wrote {n_max} synthetic scenes (96 px) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        model, described = model_for_bench(tmp)
        memory = [peak_memory(root, model, n, args.batch_size, steps) | {"steps": steps}
                  for steps in (args.deletion_steps, 0) for n in args.sizes]
        speed = throughput(root, model, args.throughput_n, args.batch_size, args.repeats, args.deletion_steps, args.perturbation_n)

    lines = [f"eclip evaluate on synthetic scenes, {described}, batch {args.batch_size}, CPU threads "
             f"{__import__('torch').get_num_threads()}, {platform.processor() or platform.machine()}", "",
             "| metrics | images | pairs | peak RSS (MiB) | seconds |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {'all, ' + str(m['steps']) + ' deletion steps' if m['steps'] else 'localisation (--no-perturbation)'} | "
              f"{m['images']} | {m['pairs']} | {m['peak_rss_mib']} | {m['seconds']} |" for m in memory]
    lines += ["", f"| images x runs | bare forward (img/s, best) | evaluation, localisation metrics (img/s, best) | ratio: median of "
              f"adjacent pairs (best / best) | evaluation with model loading (s) | with deletion/insertion, {args.deletion_steps} steps "
              "(img/s) |", "|---:|---:|---:|---:|---:|---:|",
              f"| {speed['images']} x {speed['repeats']} | {speed['bare_images_per_s']} | {speed['eval_images_per_s']} | "
              f"{speed['ratio_median']} ({speed['ratio_best']}) | {speed['eval_seconds_with_setup']} vs {speed['bare_seconds']} bare | "
              f"{speed['perturbation_images_per_s']} |"]
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": described, "memory": memory, "throughput": speed}, indent=2))


if __name__ == "__main__":
    main()

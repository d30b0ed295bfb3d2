"""Go on training a bundled vanilla model on one GPU for a given wall time, and pack it for the trip back.

A stronger base is the first lever on ECLIP's numbers (the ViT's masked max variants gained 10 to 13
points of mSC from a longer-trained base). The bundled model is trained on with its own head and a
fresh cosine schedule on the endless synthetic stream of the training seed 1000, its batches made,
tokenized and pinned by DataLoader workers (`eclip train --workers`). Two short probes (their
difference cancels the start-up of the workers) size the number of steps to `--seconds`; the
result is exported as float16, the bundled form, and packed as one tar of the model folder plus
the timings.

    python scripts/continue_vanilla.py --arch vit --out runs/continue --seconds 240 --workers 15 --pack out/pack
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "eclip" / "assets" / "models"


def train(model: Path, out: Path, steps: int, args: argparse.Namespace) -> dict:
    """One `eclip train` run continuing `model`; its closing JSON line (steps, seconds of the loop, final loss)."""
    command = [sys.executable, "-c", "from eclip.cli import main; main()", "train", "--model", str(model),
               "--pooling", "attention", "--train", "all", "--out", str(out), "--steps", str(steps),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--warmup", str(max(20, steps // 20)),
               "--data-seed", "1000", "--workers", str(args.workers), "--device", args.device, "--threads", "1",
               "--checkpoint-every", str(max(50, steps // 4))]
    print(" ".join(command[3:]), flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"eclip train failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "command": "eclip " + " ".join(command[3:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("vit", "rn"), default="vit")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=240, help="Wall time of the training loop the steps are sized to.")
    parser.add_argument("--probe-steps", type=int, nargs=2, default=(40, 240), help="Steps of the two probes.")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--workers", type=int, default=15)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--pack", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_bundled import export_half

    began = time.time()
    name = f"synth-{args.arch}"
    short, long = (train(BUNDLED / name, args.out / f"probe-{n}", n, args)["seconds"] for n in args.probe_steps)
    per_step = max(1e-3, (long - short) / (args.probe_steps[1] - args.probe_steps[0]))
    steps = int(args.seconds / per_step)
    print(f"probe: {per_step:.4f} s per step -> {steps} steps", flush=True)
    run = train(BUNDLED / name, args.out / "run", steps, args)
    export_half(args.out / "run", args.out / "models" / name)
    timings = {"probe_s_per_step": round(per_step, 4), "steps": steps, "loop_seconds": run["seconds"],
               "final_loss": run.get("final_loss"), "wall_s": round(time.time() - began, 1), "command": run["command"]}
    (args.out / "timings.json").write_text(json.dumps(timings, indent=1))
    print(json.dumps(timings), flush=True)
    if args.pack:
        args.pack.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.pack / f"continued-{args.arch}.tar", "w") as tar:
            tar.add(args.out / "models" / name, arcname=name)
            tar.add(args.out / "timings.json", arcname="timings.json")
            tar.add(args.out / "run" / "losses.json", arcname="losses.json")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

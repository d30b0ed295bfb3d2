"""Time to the error when real weights are asked for with the hub out of reach, against the time to a purely local error.

`eclip explain img.png --text a --model ViT-B-16 --pretrained openai` on a machine where the hub
cannot be reached (here: HF_ENDPOINT on a loopback port nothing listens on, so every connection is
refused at once, and an empty HF_HOME). Both commands run in fresh processes and pay the same
start-up (Python, torch, open_clip); the local error (`--model runs/nothing`, a folder that does
not exist) is the floor. Each pair runs `--repeats` times, alternating order; the medians are
reported, with the number of stderr lines and of "Retrying" lines of the offline run.

    python bench/bench_offline_error.py                 # about a minute on 2 CPU cores
    python bench/bench_offline_error.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "eclip.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    return time.perf_counter() - start, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="Also write the record here.")
    options = parser.parse_args()
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
        root = Path(tmp)
        Image.new("RGB", (16, 16)).save(root / "img.png")
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections to it are refused
        env = {k: v for k, v in os.environ.items() if k not in ("ECLIP_DEBUG", "HF_HUB_OFFLINE")}
        env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(root / "hf"))
        base = ["explain", "img.png", "--text", "a", "-o", "out"]
        offline, local, lines, retries = [], [], set(), set()
        for i in range(options.repeats):
            pair = [("offline", base + ["--model", "ViT-B-16", "--pretrained", "openai"]), ("local", base + ["--model", "runs/nothing"])]
            for kind, args in pair if i % 2 == 0 else pair[::-1]:
                seconds, stderr = run(args, root, env)
                (offline if kind == "offline" else local).append(seconds)
                if kind == "offline":
                    lines.add(len(stderr.strip().splitlines()))
                    retries.add(stderr.count("Retrying"))
                    message = stderr.strip().splitlines()[-1]
    record = {
        "bench": "offline_error", "device": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "offline_seconds": round(statistics.median(offline), 2), "local_error_seconds": round(statistics.median(local), 2),
        "offline_minus_local_seconds": round(statistics.median(offline) - statistics.median(local), 2),
        "stderr_lines": sorted(lines), "retry_lines": sorted(retries), "message": message,
    }
    print(json.dumps(record, indent=1))
    if options.json:
        from eclip.writing import atomic_write_text

        options.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(options.json, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()

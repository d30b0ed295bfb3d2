"""Peak memory of `eclip explain` on big images: 1, 12 and 48 megapixels, with 1 and 8 texts.

Each cell runs the real command in a fresh process (`python -m eclip.cli explain IMG --text ...`)
and reads that process's peak resident set size from the kernel (`os.wait4`), so it counts
everything: `import torch`, decoding, the model, the maps, the overlay and the writes. The
images are smooth PNGs (small files, like the 47 KB 48-megapixel PNG of the report that made
this benchmark). A baseline row, `python -c "import torch, eclip.cli"`, shows the part that is
only the interpreter and its libraries.

    python bench/bench_explain_memory.py --out out/bench_explain_memory     # --json FILE for the numbers
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

#: Megapixels -> (width, height): 4:3 like a camera, and the 12000 x 12000 square of the report (`--megapixels 144`).
SIZES = {1: (1152, 864), 12: (4000, 3000), 48: (8000, 6000), 144: (12000, 12000)}
TEXTS = ["circle", "square", "triangle", "star", "cross", "heart", "ring", "crescent"]


def smooth_png(path: Path, width: int, height: int) -> Path:
    """A PNG of a smooth gradient (compresses to a few hundred KB at 48 MP) written row band by band."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    rows = []
    for y0 in range(0, height, 1000):
        y = np.linspace(y0, min(height, y0 + 1000) - 1, min(1000, height - y0), dtype=np.float32)[:, None] * 255 / height
        band = np.stack([np.broadcast_to(x, (len(y), width)), np.broadcast_to(y, (len(y), width)),
                         np.broadcast_to((x + y) / 2, (len(y), width))], axis=-1)
        rows.append(band.astype(np.uint8))
    Image.fromarray(np.concatenate(rows)).save(path, optimize=False)
    return path


def peak_rss_mib(command: list[str]) -> tuple[float, float, int]:
    """(peak RSS in MiB, wall seconds, exit code) of `command`, run as a child process."""
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.stderr.write(process.stderr.read().decode(errors="replace"))
    return usage.ru_maxrss / 1024, seconds, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench_explain_memory"))
    parser.add_argument("--model", default="synth-vit")
    parser.add_argument("--megapixels", type=int, nargs="+", default=[1, 12, 48], choices=sorted(SIZES))
    parser.add_argument("--texts", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="More `eclip explain` options, e.g. --map-size 0.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    rows = []
    base, _, _ = peak_rss_mib([python, "-c", "import torch, eclip.cli"])
    print(f"baseline (import torch, eclip.cli): {base:.0f} MiB")
    print("| image | megapixels | texts | peak RSS MiB | .npy MiB | seconds |\n|---|---:|---:|---:|---:|---:|")
    for mp in args.megapixels:
        width, height = SIZES[mp]
        image = args.out / f"gradient_{mp}mp.png"
        if not image.exists():
            smooth_png(image, width, height)
        for k in args.texts:
            out = args.out / f"explain_{mp}mp_{k}t"
            texts = [flag for t in TEXTS[:k] for flag in ("--text", t)]
            command = [python, "-m", "eclip.cli", "explain", str(image), *texts, "--model", args.model, "-o", str(out), *args.extra]
            rss, seconds, code = peak_rss_mib(command)
            if code:
                raise SystemExit(f"eclip explain failed with exit code {code}: {' '.join(command)}")
            npy = (out / f"{image.stem}.npy").stat().st_size / 2**20
            rows.append({"megapixels": mp, "size": [width, height], "texts": k, "peak_rss_mib": round(rss), "npy_mib": round(npy, 1),
                         "seconds": round(seconds, 1), "image_kib": round(image.stat().st_size / 1024)})
            label = f"{width}x{height} ({rows[-1]['image_kib']} KiB PNG)"
            print(f"| {label} | {mp} | {k} | {rss:.0f} | {npy:.1f} | {seconds:.1f} |", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"baseline_mib": round(base), "extra": args.extra, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""Does `eclip serve` hold its memory and disk under use? RSS and disk against requests, over HTTP.

Starts `eclip serve` on 127.0.0.1 in its own process, with its temporary folder (TMPDIR) in a
folder of this benchmark's own, and drives it as a script would, through Gradio's HTTP API
(`gradio_client`, a new session every `--session-every` requests, as new visitors would be):

1. `--requests` small requests of distinct texts: a bundled sample, 4 new texts, itsm on
   synth-vit (every text new, so the adapter's text cache fills to its bound and turns over);
   every `--downloads-every`-th also asks for the downloads (the overlay figures);
2. `--large` large requests: a new upload each (random pixels, `--image` wide x high), 16 texts x
   2 methods (itsm, gradcam) x 2 models (synth-vit vs synth-vit-eclip) = 64 maps, the issue's
   heaviest case, each followed by its downloads.

Every `--sample-every` requests it reads the server's RSS (/proc/PID/status) and the bytes under
its temporary folder (everything it wrote: results, uploads, Gradio's files). At the end it stops
the server with SIGTERM and counts the files left. Scaled to run in a few minutes on 2 cores: the
bundled models, a 768 x 576 upload, maps capped at `--map-size` 256 and disk quotas of 64 MB
(results) + 32 MB (uploads); the defaults of `eclip serve` are 1024 px, 1024 MB and 256 MB. The
targets of issue 23: RSS levels off within 1.5 GiB of idle, disk stays under the quotas.

    python bench/bench_serve_load.py --json bench/results/serve-load-cpu.json
    python bench/bench_serve_load.py --requests 100 --large 5          # a quick look
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the server helpers the tests use
from helpers.browser import eclip_process  # noqa: E402

from eclip.serve.workspace import tree_size  # noqa: E402

MiB = 2**20
SHAPES = ["circle", "star", "ring", "heart", "square", "triangle", "crescent", "cross"]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def disk_mib(folder: Path) -> float:
    return tree_size(folder) / MiB


def noise_png(path: Path, size: tuple[int, int], seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def explain(client, *, upload=None, sample="", texts: list[str], dense=("itsm",), gradient=(), compare=False) -> str:
    status, *_ = client.predict(upload, sample, "\n".join(texts), "verbatim", "synth-vit", compare, list(dense), [], list(gradient),
                                [], [], api_name="/explain")
    if "eclip-ok" not in status:
        raise RuntimeError(f"request refused: {status}")
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--large", type=int, default=50)
    parser.add_argument("--session-every", type=int, default=10)
    parser.add_argument("--downloads-every", type=int, default=10)
    parser.add_argument("--sample-every", type=int, default=25)
    parser.add_argument("--image", type=int, nargs=2, default=[768, 576], metavar=("WIDE", "HIGH"))
    parser.add_argument("--map-size", type=int, default=256)
    parser.add_argument("--disk-quota-mb", type=float, default=64.0)
    parser.add_argument("--upload-quota-mb", type=float, default=32.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="bench-serve-load-"))
    server_tmp = work / "server-tmp"
    server_tmp.mkdir()
    quota_mib = args.disk_quota_mb + args.upload_quota_mb
    options = ["--map-size", str(args.map_size), "--disk-quota-mb", str(args.disk_quota_mb), "--upload-quota-mb",
               str(args.upload_quota_mb)]
    env = {"TMPDIR": str(server_tmp), "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    curve: list[dict] = []
    started = time.perf_counter()
    with eclip_process(*options, env=env, timeout=600) as served:
        pid = served.process.pid
        time.sleep(2.0)
        idle = rss_mib(pid)
        print(f"idle: RSS {idle:.0f} MiB, disk {disk_mib(server_tmp):.1f} MiB", file=sys.stderr)

        def sample(phase: str, done: int) -> None:
            point = {"phase": phase, "requests": done, "rss_mib": round(rss_mib(pid), 1), "disk_mib": round(disk_mib(server_tmp), 2),
                     "seconds": round(time.perf_counter() - started, 1)}
            curve.append(point)
            print(f"{phase} {done:5d}: RSS {point['rss_mib']:7.1f} MiB, disk {point['disk_mib']:6.2f} MiB, "
                  f"{point['seconds']:.0f} s", file=sys.stderr)

        sample("idle", 0)
        client = None
        for i in range(args.requests):
            if i % args.session_every == 0:
                client = Client(served.url, verbose=False, download_files=False)
            texts = [f"a {SHAPES[(i + k) % len(SHAPES)]} number {i * 4 + k}" for k in range(4)]
            explain(client, sample=f"00000{i % 6}", texts=texts)
            if (i + 1) % args.downloads_every == 0:
                client.predict(api_name="/downloads")
            if (i + 1) % args.sample_every == 0:
                sample("distinct texts", i + 1)
        phase1_s = time.perf_counter() - started
        for j in range(args.large):
            client = Client(served.url, verbose=False, download_files=False)
            image = noise_png(work / f"upload-{j}.png", tuple(args.image), seed=j)
            texts = [f"the {SHAPES[k % len(SHAPES)]} {j}-{k}" for k in range(16)]
            explain(client, upload=handle_file(str(image)), texts=texts, dense=("itsm",), gradient=("gradcam",), compare=True)
            client.predict(api_name="/downloads")
            image.unlink()
            if (j + 1) % 5 == 0:
                sample("large", args.requests + j + 1)
        total_s = time.perf_counter() - started
        served.process.send_signal(signal.SIGTERM)
        code = served.process.wait(timeout=120)
    left = [str(p.relative_to(server_tmp)) for p in server_tmp.rglob("*")]
    points = [p for p in curve if p["phase"] != "idle"]
    first = [p for p in points if p["phase"] == "distinct texts"]
    half = first[len(first) // 2:] if first else []
    peak = max(p["rss_mib"] for p in curve)
    result = {
        "bench": "serve_load", "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), shared with other jobs",
        "scaled": {"requests": args.requests, "large": args.large, "large_request": "upload of "
                   f"{args.image[0]}x{args.image[1]} random pixels, 16 texts x itsm, gradcam x synth-vit vs synth-vit-eclip = 64 maps",
                   "small_request": "bundled sample, 4 new texts, itsm on synth-vit", "session_every": args.session_every,
                   "downloads_every": args.downloads_every, "map_size": args.map_size, "disk_quota_mb": args.disk_quota_mb,
                   "upload_quota_mb": args.upload_quota_mb, "server_threads": args.threads},
        "idle_rss_mib": round(idle, 1), "peak_rss_mib": peak, "peak_minus_idle_mib": round(peak - idle, 1),
        "rss_rise_over_second_half_of_small_requests_mib": round(half[-1]["rss_mib"] - half[0]["rss_mib"], 1) if half else None,
        "max_disk_mib": max(p["disk_mib"] for p in curve), "disk_quota_mib": quota_mib,
        "rss_within_1_5_gib_of_idle": peak - idle <= 1536, "disk_within_quota": max(p["disk_mib"] for p in curve) <= quota_mib,
        "sigterm_exit_code": code, "files_left_after_sigterm": left,
        "seconds": {"small_requests": round(phase1_s, 1), "total": round(total_s, 1)},
        "curve": curve,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

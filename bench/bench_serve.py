"""What the web demo adds to an explanation: click-to-maps in a real browser against the library call.

Starts `eclip serve` on a free local port, opens it in headless Chromium (the distribution's,
through Playwright), uploads one bundled sample, types two texts and keeps `itsm`, then clicks
Explain `--repeats` times after three warm-up clicks. The text order alternates from click to
click, so a run is done when the page shows the new first caption and every overlay image has
loaded (complete, with a non-zero natural size); the clock runs in the page, from the click event
to the first animation frame that sees this. The downloads (`.npy` and the overlay figure) are
written by a follow-up step; the time until they are listed is reported too.

What the page adds is measured per click: click-to-maps minus the time the server spent in the
library for that click (`eclip.serve.explain_request`, which the status line reports: text
embeddings from the cache, `explain_images`, the `.npy` written), so load from other processes
hits both sides of each difference alike. For reference, the bare library call `eclip explain`
makes for the same input (`eclip.explain.explain_files`: decode, preprocess, ITSM for the two
texts, maps at the image's size; texts cached) is timed in this process before the server starts.
All numbers are medians.

    python bench/bench_serve.py                       # synth-vit, sample 000000, 10 clicks, 1 torch thread
    python bench/bench_serve.py --model synth-rn --repeats 30 --json out/bench_serve.json
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the browser helpers the tests use
from helpers.browser import chromium, eclip_server, missing  # noqa: E402

CLICK_TO_MAPS = """([expected, count]) => new Promise((resolve) => {
  const start = performance.now();
  let listed = null;
  const done = () => {
    const captions = [...document.querySelectorAll('#maps .caption-label')].map((e) => e.textContent);
    const images = [...document.querySelectorAll('#maps img')];
    return captions.length === count && captions[0].startsWith(expected)
      && images.length === count && images.every((img) => img.complete && img.naturalWidth > 0);
  };
  const files = () => document.querySelectorAll('#downloads a').length > 0;
  const tick = () => {
    if (performance.now() - start > 120000) return resolve([NaN, NaN]);
    if (listed === null && done()) listed = performance.now() - start;
    if (listed !== null && files()) return resolve([listed / 1000, (performance.now() - start) / 1000]);
    requestAnimationFrame(tick);
  };
  document.querySelector('#explain').click();
  requestAnimationFrame(tick);
})"""


def library_seconds(model_name: str, image: Path, texts: list[str], repeats: int, warmup: int = 3) -> list[float]:
    """Times of the library call behind `eclip explain` for one image and `texts` with itsm."""
    from eclip.explain import explain_files
    from eclip.methods.base import get_method
    from eclip.models.loading import load_model
    from eclip.prompts import encode_prompts

    model, method = load_model(model_name), get_method("itsm")
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        features = encode_prompts(model, texts, None)
        [result.maps() for result in explain_files(model, method, [image], features, texts)]  # the maps at the image's size
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def page_seconds(model_name: str, image: Path, texts: list[str], repeats: int, threads: int,
                 warmup: int = 3) -> dict[str, list[float]]:
    """Per timed click: click to rendered maps, click to listed downloads, and the server's library time."""
    times: dict[str, list[float]] = {"maps": [], "downloads": [], "server": []}
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}  # the server's torch threads
    with eclip_server("--model", model_name, env=env) as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        page.locator("#upload input[type=file]").set_input_files(str(image))
        page.locator("#preview img").wait_for()
        for i in range(warmup + repeats):
            order = texts if i % 2 == 0 else texts[::-1]
            page.locator("#texts textarea").fill("\n".join(order))
            maps, downloads = page.evaluate(CLICK_TO_MAPS, [f"{model_name} · itsm · '{order[0]}'", len(texts)])
            if maps != maps:  # NaN: the page did not show the maps within two minutes
                raise RuntimeError(f"click {i}: the maps did not render within 120 s")
            server = float(re.search(r"in (\d+\.\d+) s$", page.locator("#status p").inner_text()).group(1))
            if i >= warmup:
                for key, value in zip(("maps", "downloads", "server"), (maps, downloads, server)):
                    times[key].append(value)
                print(f"click {i - warmup + 1}/{repeats}: maps {maps:.3f} s (server library {server:.3f} s), "
                      f"downloads {downloads:.3f} s", file=sys.stderr)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synth-vit")
    parser.add_argument("--sample", default="000000", help="Bundled sample id to upload.")
    parser.add_argument("--texts", nargs=2, default=["circle", "star"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process and of the server "
                        "(1: on a shared machine more threads mostly wait for each other)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    reason = missing()
    if reason:
        sys.exit(f"bench_serve: {reason}")
    from eclip.data.bundled import samples_root

    image = samples_root() / "images" / f"{args.sample}.png"
    import torch

    torch.set_num_threads(args.threads)
    library = library_seconds(args.model, image, args.texts, args.repeats)
    times = page_seconds(args.model, image, args.texts, args.repeats, args.threads)
    median = {key: statistics.median(values) for key, values in times.items()}
    added = statistics.median(m - lib for m, lib in zip(times["maps"], times["server"]))
    result = {"model": args.model, "image": image.name, "texts": args.texts, "method": "itsm", "repeats": args.repeats,
              "library_s": statistics.median(library), "server_library_s": median["server"], "page_maps_s": median["maps"],
              "page_downloads_s": median["downloads"], "page_adds_s": added, "times": {**times, "library": library},
              "threads": args.threads, "machine": platform.processor() or platform.machine()}
    print(f"library call, bare (explain_files; 1 image, 2 texts, itsm):  {result['library_s']:.3f} s")
    print(f"library call in the server, per click (explain_request):     {median['server']:.3f} s")
    print(f"page, click to rendered maps:                                {median['maps']:.3f} s")
    print(f"page adds (median over clicks of maps - server library):     {added:+.3f} s")
    print(f"page, click to listed downloads (.npy, .png):                {median['downloads']:.3f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

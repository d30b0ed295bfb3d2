"""What the web demo adds to an explanation: click-to-maps in a real browser against the bare library call.

Starts `eclip serve` on a free local port, opens it in headless Chromium (the distribution's,
through Playwright), uploads one bundled sample, types two texts and keeps `itsm`, then clicks
Explain `--repeats` times. Each timed click alternates the order of the two texts, so the run is
done when the page shows the new first caption and every overlay image has loaded (complete, with
a non-zero natural size); the clock runs in the page, from the click event to the first animation
frame that sees this. The downloads (`.npy` and the overlay figure) are written by a follow-up
step; the time until they are listed is reported too.

Baseline, in this process, on the same model and image: the library call `eclip explain` makes
(`eclip.explain.explain_files`: decode, preprocess, ITSM for the two texts, maps at the image's
size), with the text embeddings cached as the server has them. Library calls and clicks are
interleaved, in alternating order, after a warm-up of each; the page's cost is the median of the
paired differences (click minus library call), which load from other processes mostly cancels.

    python bench/bench_serve.py                       # synth-vit, sample 000000, 10 clicks
    python bench/bench_serve.py --model synth-rn --repeats 20 --json out/bench_serve.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the browser helpers the tests use
from browser import chromium, eclip_server, missing  # noqa: E402

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
    if (listed === null && done()) listed = performance.now() - start;
    if (listed !== null && files()) return resolve([listed / 1000, (performance.now() - start) / 1000]);
    requestAnimationFrame(tick);
  };
  document.querySelector('#explain').click();
  requestAnimationFrame(tick);
})"""


def library_call(model_name: str, image: Path, texts: list[str]):
    """The library call behind `eclip explain` for one image and `texts` with itsm, as a function to time."""
    from eclip.explain import explain_files
    from eclip.methods.base import get_method
    from eclip.models.loading import load_model
    from eclip.prompts import encode_prompts

    model, method = load_model(model_name), get_method("itsm")

    def call() -> float:
        start = time.perf_counter()
        features = encode_prompts(model, texts, None)
        list(explain_files(model, method, [image], features, texts))
        return time.perf_counter() - start

    return call


def measure(model_name: str, image: Path, texts: list[str], repeats: int, warmup: int = 3) -> dict[str, list[float]]:
    """Interleaved timings: per repeat one library call and one click, in alternating order (load drifts cancel)."""
    library = library_call(model_name, image, texts)
    times: dict[str, list[float]] = {"library": [], "maps": [], "downloads": []}
    with eclip_server("--model", model_name) as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        page.locator("#upload input[type=file]").set_input_files(str(image))
        page.locator("#preview img").wait_for()

        def click(i: int) -> tuple[float, float]:
            order = texts if i % 2 == 0 else texts[::-1]
            page.locator("#texts textarea").fill("\n".join(order))
            return page.evaluate(CLICK_TO_MAPS, [f"{model_name} · itsm · '{order[0]}'", len(texts)])

        for i in range(warmup):
            library(), click(i)
        for i in range(repeats):
            if i % 2:
                maps, downloads = click(i)
                times["library"].append(library())
            else:
                times["library"].append(library())
                maps, downloads = click(i)
            times["maps"].append(maps)
            times["downloads"].append(downloads)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synth-vit")
    parser.add_argument("--sample", default="000000", help="Bundled sample id to upload.")
    parser.add_argument("--texts", nargs=2, default=["circle", "star"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    reason = missing()
    if reason:
        sys.exit(f"bench_serve: {reason}")
    from eclip.data.bundled import samples_root

    image = samples_root() / "images" / f"{args.sample}.png"
    times = measure(args.model, image, args.texts, args.repeats)
    library, maps, files = (statistics.median(times[k]) for k in ("library", "maps", "downloads"))
    added = statistics.median(m - lib for m, lib in zip(times["maps"], times["library"]))
    result = {"model": args.model, "image": image.name, "texts": args.texts, "method": "itsm", "repeats": args.repeats,
              "library_s": library, "page_maps_s": maps, "page_downloads_s": files, "page_adds_s": added, "times": times,
              "machine": f"{platform.processor() or platform.machine()}, torch threads {__import__('torch').get_num_threads()}"}
    print(f"library call (explain_files, 1 image, 2 texts, itsm): {library:.3f} s")
    print(f"page, click to rendered maps:                         {maps:.3f} s")
    print(f"page adds (median of the paired differences):         {added:+.3f} s")
    print(f"page, click to listed downloads (.npy, .png):         {files:.3f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

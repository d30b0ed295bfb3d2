"""Redraw docs/serve.png, the README's picture of `eclip serve`: a bundled sample, synth-vit next to its fine-tunes, ITSM.

The page at 1280 px wide, as a browser window of 1280 x 900 shows it after Explain, from the top
down to the end of the map grid.

    python docs/serve_screenshot.py            # needs Chromium and the browser extras, as the browser tests do
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the browser helpers the tests use
from helpers.browser import chromium, eclip_server, missing  # noqa: E402


def main(out: Path = ROOT / "docs" / "serve.png", sample: int = 3) -> None:
    reason = missing()
    if reason:
        sys.exit(f"serve_screenshot: {reason}")
    with eclip_server() as url, chromium(width=1280, height=900) as browser:
        page = browser.new_page()
        page.goto(url)
        page.locator("#samples .thumbnail-item").nth(sample).click()
        page.wait_for_function("() => document.querySelector('#texts textarea').value.length > 0")
        page.locator("#compare input").check()
        page.locator("#explain").click()
        page.wait_for_function("() => [...document.querySelectorAll('#maps img')].length > 0 && "
                               "[...document.querySelectorAll('#maps img')].every((i) => i.complete && i.naturalWidth > 0)")
        page.wait_for_function("() => document.querySelectorAll('#downloads a').length > 0", timeout=60_000)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.wait_for_timeout(300)
        grid = page.locator("#maps").bounding_box()
        shot = Image.open(io.BytesIO(page.screenshot(full_page=True, clip={"x": 0, "y": 0, "width": 1280,
                                                                            "height": grid["y"] + grid["height"] + 16})))
    shot.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()

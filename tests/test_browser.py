"""The web demo and the evaluation report, rendered by a real (headless) Chromium.

The page is looked at as a user sees it at 1280 x 900 (a screenshot: the controls and Explain above
the fold, thumbnails drawn); ECLIP_SCREENSHOTS=DIR keeps the screenshot. Skipped only where Chromium
or the browser extras are missing, with the reason; under CI (`CI` set) a missing browser fails unless
`.ci/run` recorded why it could not install one.
"""
from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
from helpers import tiny_model
from helpers.browser import chromium, eclip_server, missing, screenshot
from typer.testing import CliRunner

import eclip.cli as cli
from eclip.data.bundled import sample_images
from eclip.data.synthetic import SceneConfig, write_dataset
from eclip.methods.base import available_methods
from eclip.serve import BundledSamples
from eclip.serve.page import TILE_PX

pytestmark = pytest.mark.slow  # a real browser and a server process

LOADED = "(img) => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0"


@pytest.fixture(scope="module")
def browser():
    reason = missing()
    if reason:
        if os.environ.get("CI") and not os.environ.get("ECLIP_BROWSER_SKIP"):
            pytest.fail(f"browser tests cannot run under CI: {reason}")
        pytest.skip(reason)
    with chromium() as context:
        yield context


@pytest.fixture(scope="module")
def server(browser):
    with eclip_server() as url:
        yield url


@pytest.fixture
def page(browser, server):
    page = browser.new_page()
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
    page.goto(server)
    page.locator("#explain").wait_for()
    yield page
    page.close()
    assert not outside, f"the page asked for resources off this machine: {outside[:5]}"


def status(page) -> tuple[str, str]:
    """(class, text) of the status line once the page has written one."""
    line = page.locator("#status p")
    line.wait_for(timeout=60_000)
    return line.get_attribute("class"), line.inner_text()


def pick_sample(page, index: int = 0) -> list[str]:
    """Click the `index`-th sample thumbnail; returns the texts it fills in (the classes it shows)."""
    page.locator("#samples .thumbnail-item").nth(index).click()
    page.wait_for_function("() => document.querySelector('#texts textarea').value.length > 0")
    return page.locator("#texts textarea").input_value().splitlines()


def tick(page, methods: list[str]) -> None:
    for name in available_methods():
        box = page.locator(f'.eclip-family input[name="{name}"]')
        if box.is_checked() != (name in methods):
            box.click()


def explain(page, texts: list[str], methods: list[str]) -> None:
    page.locator("#texts textarea").fill("\n".join(texts))
    tick(page, methods)
    page.locator("#explain").click()


def rendered_maps(page, count: int) -> list[str]:
    """Wait for `count` map tiles; assert each loaded at the one tile size; return their captions."""
    page.wait_for_function(f"() => document.querySelectorAll('#maps img.eclip-map').length === {count}", timeout=60_000)
    sizes = set()
    for img in page.locator("#maps img.eclip-map").all():
        img.scroll_into_view_if_needed()
        page.wait_for_function(LOADED, arg=img.element_handle(), timeout=30_000)
        box = img.bounding_box()
        sizes.add((round(box["width"]), round(box["height"])))
    assert sizes == {(TILE_PX, TILE_PX)}, sizes
    return page.locator("#maps figcaption").all_inner_texts()


def table_rows(page) -> list[list[str]]:
    """The score table's rows as the page shows them (the grid's rows by index, the header dropped)."""
    assert page.locator("#scores [role=columnheader]").all_inner_texts()[:6] == ["model", "method", "text", "cos", "p", "SC %"]
    rows = page.evaluate("""() => Object.values(Object.fromEntries([...document.querySelectorAll('#scores [role=row][aria-rowindex]')]
        .filter((r) => r.getAttribute('aria-rowindex') !== '1')
        .map((r) => [r.getAttribute('aria-rowindex'), [...r.querySelectorAll('[role=gridcell]')].map((c) => c.innerText.trim())])))""")
    return rows


def column_heads(page) -> list[str]:
    return [" ".join(h.split()) for h in page.locator("#maps .eclip-col").all_inner_texts()]


def library_maps(image, texts: list[str]) -> np.ndarray:
    """What `eclip explain IMAGE --text ... --model synth-vit` writes as IMAGE.npy (itsm)."""
    from eclip.explain import explain_files
    from eclip.methods.base import get_method
    from eclip.models.loading import load_model
    from eclip.prompts import encode_prompts

    model = load_model("synth-vit")
    return next(explain_files(model, get_method("itsm"), [image], encode_prompts(model, texts), texts)).maps()


def test_at_1280x900_the_controls_and_explain_are_above_the_fold_with_sample_thumbnails(browser, server, tmp_path):
    page = browser.new_page()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(server)
    page.locator("#explain").wait_for()
    thumbs = page.locator("#samples img")
    assert thumbs.count() == len(BundledSamples().ids)
    for img in thumbs.all():
        page.wait_for_function(LOADED, arg=img.element_handle(), timeout=30_000)
    image = screenshot(page, tmp_path, "serve-1280x900.png")
    assert image.shape == (900, 1280, 3)
    for selector in ("#samples", "#upload", "#texts", "#template", "#model", "#compare", "#explain", "#methods"):
        box = page.locator(selector).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 900, f"{selector} is below the fold: {box}"
    button = page.locator("#explain").bounding_box()
    middle = image[int(button["y"] + button["height"] / 2), int(button["x"] + 8): int(button["x"] + button["width"] - 8)]
    assert (middle.max(axis=1) - middle.min(axis=1) > 60).mean() > 0.5  # the primary button's colour, not the white page
    first = thumbs.first.bounding_box()
    pixels = image[int(first["y"]) + 2: int(first["y"] + first["height"]) - 2, int(first["x"]) + 2: int(first["x"] + first["width"]) - 2]
    assert pixels.std() > 10 and first["width"] >= 40  # a picture, not an empty box
    labels = page.locator(".eclip-family label").all_inner_texts()
    assert len(labels) == len(available_methods()) and all(" · " in label for label in labels)  # a line each
    heads = page.locator(".eclip-family [data-testid=block-info]").all_inner_texts()
    assert [h.split(":")[0] for h in heads] == ["dense", "attention", "gradient", "perturbation", "other"]
    page.close()


def test_upload_two_texts_two_methods_then_a_corrupt_upload(page, tmp_path):
    page.locator("#upload input[type=file]").set_input_files(str(sample_images()[0]))
    page.wait_for_function(LOADED, arg=page.locator("#preview img").element_handle())
    explain(page, ["a circle", "a star"], ["itsm", "free_attention"])
    captions = rendered_maps(page, 4)
    kind, text = status(page)
    assert kind == "eclip-ok" and "2 text(s) x itsm, free_attention on synth-vit" in text
    assert captions == ["a circle", "a circle", "a star", "a star"]
    assert column_heads(page) == ["synth-vit itsm", "synth-vit free_attention"]
    assert page.locator("#maps .eclip-bar img").count() == 1  # the colour bar
    rows = table_rows(page)
    assert [row[1:3] for row in rows] == [["itsm", "a circle"], ["free_attention", "a circle"], ["itsm", "a star"],
                                          ["free_attention", "a star"]]
    assert all(-1 <= float(row[3]) <= 1 and 0 <= float(row[4]) <= 1 for row in rows)
    page.wait_for_function("() => document.querySelectorAll('#downloads a').length === 4", timeout=60_000)
    links = [a.get_attribute("href") for a in page.locator("#downloads a").all()]
    assert sorted(link.rsplit(".", 1)[1] for link in links) == ["npy", "npy", "png", "png"]
    npy = page.request.get(next(link for link in links if link.endswith("itsm.npy")))
    assert npy.ok and np.array_equal(np.load(io.BytesIO(npy.body())), library_maps(sample_images()[0], ["a circle", "a star"]))

    broken = sample_images()[0].read_bytes()[:-400]
    page.locator("#upload button[aria-label=Clear]").click()
    page.locator("#upload input[type=file]").set_input_files(
        files=[{"name": "broken.png", "mimeType": "image/png", "buffer": broken}])
    page.wait_for_function("() => document.querySelector('#status p')?.className === 'eclip-error'", timeout=30_000)
    page.locator("#explain").click()
    page.wait_for_function("() => document.querySelectorAll('#maps img').length === 0", timeout=60_000)
    kind, text = status(page)
    assert kind == "eclip-error" and text.startswith("the upload: corrupt or truncated image") and "\n" not in text
    assert "Traceback" not in page.content()

    page.locator("#upload button[aria-label=Clear]").click()
    page.locator("#upload input[type=file]").set_input_files(str(sample_images()[1]))  # the server keeps serving
    page.wait_for_function("() => document.querySelector('#status p') === null", timeout=30_000)
    page.locator("#explain").click()
    assert len(rendered_maps(page, 4)) == 4 and status(page)[0] == "eclip-ok"


def test_an_oversize_upload_is_reported_in_the_status_line(page):
    too_big = {"name": "big.png", "mimeType": "image/png", "buffer": b"\x89PNG" + bytes(11 * 2**20)}
    for _ in range(2):  # twice, with a good image in between: the same file again is reported again
        page.locator("#upload input[type=file]").set_input_files(files=[too_big])
        page.wait_for_function("() => document.querySelector('#status p')?.className === 'eclip-error'", timeout=30_000)
        assert status(page)[1] == "the upload is 11.0 MB, above the limit of 10 MB of this server; send a smaller image"
        pick_sample(page)
        page.wait_for_function("() => document.querySelector('#status p') === null", timeout=30_000)


def test_bad_requests_are_one_line_in_the_page_and_a_resnet_greys_out_the_vit_methods(page):
    pick_sample(page)
    explain(page, [], ["itsm"])
    assert status(page) == ("eclip-error", "no text given; type what to look for, one text per line, e.g. 'a red star'")
    tick(page, ["itsm", "rollout"])
    page.locator("#model input").click()
    page.get_by_role("option", name="synth-rn", exact=True).click()
    page.wait_for_function("() => document.querySelector('#methods-off p')?.textContent.includes('synth-rn')", timeout=60_000)
    rollout = page.locator('.eclip-family label:has(input[name="rollout"])')
    page.wait_for_function("(e) => getComputedStyle(e).opacity < 0.5", arg=rollout.element_handle(), timeout=10_000)  # after its fade
    assert rollout.evaluate("(e) => getComputedStyle(e).pointerEvents") == "none"
    page.wait_for_function("() => !document.querySelector('.eclip-family input[name=rollout]').checked", timeout=30_000)
    note = page.locator("#methods-off p").inner_text()
    assert "rollout" in note and "is not defined for resnet models" in note
    assert page.locator('.eclip-family label:has(input[name="gradcam"])').evaluate("(e) => getComputedStyle(e).opacity") == "1"
    page.locator("#template input").fill("a sketch")
    page.locator("#template input").press("Enter")
    explain(page, ["circle"], ["itsm"])
    page.wait_for_function("() => document.querySelector('#status p')?.textContent.includes('template')", timeout=60_000)
    kind, text = status(page)
    assert kind == "eclip-error" and text.startswith("the prompt template 'a sketch' has no {} where the text goes")
    assert "--template" not in text and "80 ImageNet templates (ensemble)" in text


def test_vanilla_vs_eclip_on_a_sample_shows_both_maps_under_headers_with_msc(page):
    from eclip.models.loading import bundled_fine_tunes

    models = 1 + len(bundled_fine_tunes()["synth-vit"])  # the vanilla model, its ECLIP fine-tune, the other fine-tunes
    classes = pick_sample(page)
    page.locator("#compare input").check()
    page.locator("#explain").click()
    captions = rendered_maps(page, models * len(classes))
    heads = column_heads(page)
    assert len(heads) == models and heads[0].startswith("vanilla · ") and heads[1].startswith("ECLIP · ")
    assert all(h.startswith("variant · ") for h in heads[2:]), heads
    assert all(re.fullmatch(r".* itsm mSC % [+-]\d+\.\d", h) for h in heads), heads
    assert captions == [c for c in classes for _ in range(models)]
    rows = table_rows(page)
    assert len(rows) == models * len(classes) and all(re.fullmatch(r"-?\d+(\.\d)?", row[5]) for row in rows)  # SC % per map
    for i, head in enumerate(heads):  # the header's mSC % is the mean of its column's SC % (rows: vanilla, ECLIP, ...)
        column = [float(row[5]) for row in rows[i::models]]
        assert abs(float(head.rsplit(" ", 1)[1]) - sum(column) / len(column)) < 0.1
    assert status(page)[0] == "eclip-ok"


def test_rise_shows_one_progress_bar_while_it_runs(page):
    pick_sample(page)
    explain(page, ["circle"], ["rise"])
    seen = page.evaluate("""() => new Promise((resolve) => {
      let most = 0, text = false;
      const tick = () => {
        const busy = [...document.querySelectorAll('[data-testid=status-tracker]')]
          .filter((t) => !t.classList.contains('hide') && t.offsetParent !== null && t.textContent.trim().length > 0);
        most = Math.max(most, busy.length);
        text = text || busy.some((t) => /RISE masks - \\d+(\\.\\d+)?%/.test(t.textContent));
        if (document.querySelectorAll('#maps img.eclip-map').length > 0) resolve([most, text]); else requestAnimationFrame(tick);
      };
      tick();
    })""")
    assert seen == [1, True]
    assert rendered_maps(page, 1) == ["circle"]


def test_the_evaluation_report_renders_its_table_and_chart(browser, tmp_path):
    data = write_dataset(tmp_path / "synth", n=3, seed=5, config=SceneConfig(image_size=40, max_clutter=1))
    model = tiny_model(tmp_path, "vit")
    results = tmp_path / "results.json"
    run = CliRunner().invoke(cli.app, ["evaluate", "--root", str(data), "--model", str(model), "--method", "itsm",
                                       "--method", "free_attention", "--no-perturbation", "--no-progress", "-o", str(results)])
    assert run.exit_code == 0, run.output
    run = CliRunner().invoke(cli.app, ["report", str(results), "-o", str(tmp_path / "report")])
    assert run.exit_code == 0, run.output
    page = browser.new_page()
    page.goto((tmp_path / "report" / "index.html").as_uri())
    rows = page.locator("table tbody tr")
    assert rows.count() == 2 and "free_attention" in rows.nth(1).inner_text()
    assert page.locator("table thead th").count() >= 10
    chart = page.locator("img[alt=metrics]")
    page.wait_for_function(LOADED, arg=chart.element_handle())
    box = chart.bounding_box()
    assert box["width"] > 200 and box["height"] > 100
    page.close()


def test_the_segment_tab_segments_a_sample_above_the_fold_at_1280x900(browser, server, tmp_path):
    page = browser.new_page()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(server)
    page.get_by_role("tab", name="Segment").click()
    page.locator("#segment").wait_for()
    page.locator("#seg-samples .thumbnail-item").nth(3).click()
    page.wait_for_function("() => document.querySelector('#seg-texts textarea').value.length > 0")
    classes = page.locator("#seg-texts textarea").input_value().splitlines()
    page.locator("#segment").click()
    pictures = page.locator("#segmentation img")
    pictures.first.wait_for(timeout=60_000)
    for img in pictures.all():
        page.wait_for_function(LOADED, arg=img.element_handle(), timeout=30_000)
    kind, text = page.locator("#seg-status p").get_attribute("class"), page.locator("#seg-status p").inner_text()
    assert kind == "eclip-ok" and f"000003: {len(classes)} text(s) + background, sclip on synth-vit, 160 x 160 labels" in text
    assert page.locator("#segmentation .eclip-legend li").all_inner_texts() == ["background", *classes]
    page.wait_for_function("() => document.querySelectorAll('#seg-downloads a').length === 2", timeout=30_000)
    links = [a.get_attribute("href") for a in page.locator("#seg-downloads a").all()]
    labels = np.load(io.BytesIO(page.request.get(next(link for link in links if link.endswith(".npy"))).body()))
    assert labels.shape == (160, 160) and int(labels.max()) <= len(classes)
    image = screenshot(page, tmp_path, "serve-segment-1280x900.png")
    assert image.shape == (900, 1280, 3)
    for selector in ("#seg-samples", "#seg-upload", "#seg-texts", "#seg-model", "#seg-method", "#seg-background", "#segment",
                     "#segmentation img.eclip-labels", "#shares", "#seg-downloads"):
        box = page.locator(selector).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 900, f"{selector} is below the fold: {box}"
    box = page.locator("#segmentation img.eclip-labels").bounding_box()  # the labels as the page shows them: the palette's colours
    shown = image[int(box["y"]) + 2: int(box["y"] + box["height"]) - 2, int(box["x"]) + 2: int(box["x"] + box["width"]) - 2]
    from eclip.segmentation.figure import palette

    colours = {tuple(c) for c in palette(len(classes) + 1).tolist()}
    assert {tuple(c) for c in shown.reshape(-1, 3)[::97].tolist()} <= colours | {(238, 238, 238)}
    rows = page.locator("#shares [role=row][aria-rowindex]").count() - 1
    assert rows == len(classes) + 1
    page.close()

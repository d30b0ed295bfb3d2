"""The web demo and the evaluation report, rendered by a real (headless) Chromium.

Skipped only where Chromium or the browser extras are missing, with the reason; under CI
(`CI` set) a missing browser fails unless `.ci/run` recorded why it could not install one.
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from helpers import tiny_model
from helpers.browser import chromium, eclip_server, missing
from typer.testing import CliRunner

import eclip.cli as cli
from eclip.data.bundled import sample_images
from eclip.data.synthetic import SceneConfig, write_dataset
from eclip.methods.base import available_methods

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


def explain(page, texts: list[str], methods: list[str]) -> None:
    page.locator("#texts textarea").fill("\n".join(texts))
    for name in available_methods():
        page.locator("#methods").get_by_label(name, exact=True).set_checked(name in methods)
    page.locator("#explain").click()


def rendered_maps(page, count: int) -> list[str]:
    """Wait for `count` overlays; assert each image loaded with a non-zero size; return the captions."""
    page.wait_for_function(f"() => document.querySelectorAll('#maps img').length === {count}", timeout=60_000)
    for img in page.locator("#maps img").all():
        img.scroll_into_view_if_needed()
        page.wait_for_function(LOADED, arg=img.element_handle(), timeout=30_000)
        box = img.bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0
    return page.locator("#maps .caption-label").all_inner_texts()


def library_maps(image, texts: list[str]) -> np.ndarray:
    """What `eclip explain IMAGE --text ... --model synth-vit` writes as IMAGE.npy (itsm)."""
    from eclip.explain import explain_files
    from eclip.methods.base import get_method
    from eclip.models.loading import load_model
    from eclip.prompts import encode_prompts

    model = load_model("synth-vit")
    return next(explain_files(model, get_method("itsm"), [image], encode_prompts(model, texts), texts)).maps()


@pytest.mark.slow
def test_upload_two_texts_two_methods_then_a_corrupt_upload(page, tmp_path):
    page.locator("#upload input[type=file]").set_input_files(str(sample_images()[0]))
    page.wait_for_function(LOADED, arg=page.locator("#preview img").element_handle())
    explain(page, ["a circle", "a star"], ["itsm", "free_attention"])
    captions = rendered_maps(page, 4)
    kind, text = status(page)
    assert kind == "eclip-ok" and "2 text(s) x itsm, free_attention on synth-vit" in text
    assert captions[0].startswith("synth-vit · itsm · 'a circle' · cos ")
    assert captions[3].startswith("synth-vit · free_attention · 'a star'")
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


@pytest.mark.slow
def test_bad_requests_are_one_line_in_the_page(page):
    page.get_by_label("... or pick a bundled sample (with masks)").click()
    page.get_by_role("option").first.click()
    page.wait_for_function("() => document.querySelector('#texts textarea').value.length > 0")
    explain(page, [], ["itsm"])
    assert status(page) == ("eclip-error", "no text given; type what to look for, one text per line, e.g. 'a red star'")
    page.locator("#model input").click()
    page.get_by_role("option", name="synth-rn", exact=True).click()
    explain(page, ["circle"], ["itsm", "rollout"])
    page.wait_for_function("() => document.querySelector('#status p')?.textContent.includes('rollout')", timeout=60_000)
    kind, text = status(page)
    assert kind == "eclip-error" and text.startswith("method 'rollout' is not defined for resnet models")


@pytest.mark.slow
def test_vanilla_vs_eclip_on_a_sample_shows_both_maps_with_contrasts(page):
    page.get_by_label("... or pick a bundled sample (with masks)").click()
    page.get_by_role("option").first.click()
    page.wait_for_function("() => document.querySelector('#texts textarea').value.length > 0")
    classes = page.locator("#texts textarea").input_value().splitlines()
    page.locator("#compare input").check()
    page.locator("#explain").click()
    captions = rendered_maps(page, 2 * len(classes))
    models = [c.split(" · ")[0] for c in captions[:2]]
    assert models[0] != models[1] and all(" · contrast " in c for c in captions)
    assert status(page)[0] == "eclip-ok"


@pytest.mark.slow
def test_rise_shows_its_progress_while_it_runs(page):
    page.get_by_label("... or pick a bundled sample (with masks)").click()
    page.get_by_role("option").first.click()
    page.wait_for_function("() => document.querySelector('#texts textarea').value.length > 0")
    explain(page, ["circle"], ["rise"])
    page.wait_for_function("() => [...document.querySelectorAll('.progress-text, .progress-level-inner')]"
                           ".some((e) => /RISE masks - \\d+(\\.\\d+)?%/.test(e.textContent))", polling=50, timeout=60_000)
    assert rendered_maps(page, 1)[0].startswith("synth-vit · rise · 'circle'")


@pytest.mark.slow
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

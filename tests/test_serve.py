"""`eclip serve` without a browser: the maps equal `eclip explain`'s, models load once, limits and bad input are one line."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from helpers import tiny_serve_cache
from PIL import Image
from typer.testing import CliRunner

import eclip.cli as cli
from eclip.data.bundled import sample_images
from eclip.errors import ImageLoadError, MethodError, ModelLoadError, TextInputError
from eclip.metrics import ScoreContrast
from eclip.serve import (
    BundledSamples,
    ModelCache,
    ServeLimits,
    contrast_class,
    explain_request,
    parse_texts,
    read_upload,
    request_bytes,
    resolve_template,
    write_figures,
)

LIMITS = ServeLimits()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_serve_cache(tmp_path_factory.mktemp("models"))


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("arch", ["vit", "resnet"])
@pytest.mark.parametrize("method", ["itsm", "gradcam"])
def test_a_map_from_the_page_equals_the_npy_of_eclip_explain(models, arch, method, tmp_path):
    cache, paths = models
    image = sample_images()[1]
    out = tmp_path / "cli"
    result = CliRunner().invoke(cli.app, ["explain", str(image), "--text", "a star", "--text", "circle", "--model", paths[arch],
                                          "--method", method, "-o", str(out)])
    assert result.exit_code == 0, result.output
    item = read_upload(image.read_bytes(), tmp_path, LIMITS)
    served = explain_request(cache, item, ["a star", "circle"], None, [paths[arch]], [method], tmp_path)
    downloaded = np.load(served.npy(paths[arch], method))
    expected = np.load(out / f"{image.stem}.npy")
    assert downloaded.dtype == expected.dtype and downloaded.shape == expected.shape == (2, 160, 160)
    assert np.array_equal(downloaded, expected)
    scores = json.loads((out / f"{image.stem}.json").read_text())["scores"]
    assert [s["text"] for s in scores] == ["a star", "circle"]
    assert served.panels[0].cosine == pytest.approx(scores[0]["cosine"], abs=1e-6)
    assert served.panels[1].probability == pytest.approx(scores[1]["probability"], abs=1e-6)


def test_serve_precision_makes_the_maps_of_explain_precision(models, tmp_path):
    """`eclip serve --precision bf16` makes its maps as `eclip explain --precision bf16` does: the same file, and not fp32's."""
    _, paths = models
    image = sample_images()[1]
    out = tmp_path / "cli"
    result = CliRunner().invoke(cli.app, ["explain", str(image), "--text", "a star", "--text", "circle", "--model", paths["vit"],
                                          "--precision", "bf16", "-o", str(out)])
    assert result.exit_code == 0, result.output
    cache = ModelCache([(paths["vit"], None)], precision="bf16")
    item = read_upload(image.read_bytes(), tmp_path, LIMITS)
    served = np.load(explain_request(cache, item, ["a star", "circle"], None, [paths["vit"]], ["itsm"], tmp_path).npy(paths["vit"], "itsm"))
    assert np.array_equal(served, np.load(out / f"{image.stem}.npy"))
    (tmp_path / "fp32").mkdir()
    fp32 = explain_request(models[0], item, ["a star", "circle"], None, [paths["vit"]], ["itsm"], tmp_path / "fp32")
    assert not np.array_equal(served, np.load(fp32.npy(paths["vit"], "itsm")))


def test_models_load_once_and_texts_are_encoded_once_per_model(models, tmp_path, monkeypatch):
    import eclip.models.loading as loading

    calls = []
    real = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    cache = ModelCache([(models[1]["vit"], None)])
    label = cache.labels[0]
    assert cache.get(label) is cache.get(label) and len(calls) == 1
    model = cache.get(label)
    encoded = []
    real_encode = model._encode_tokens
    monkeypatch.setattr(model, "_encode_tokens", lambda tokens: encoded.append(len(tokens)) or real_encode(tokens))
    item = read_upload(sample_images()[0].read_bytes(), tmp_path, LIMITS)
    for _ in range(2):
        explain_request(cache, item, ["a heart", "a ring"], None, [label], ["itsm"], tmp_path)
    assert encoded == [2] and len(calls) == 1


def test_a_bundled_sample_gives_each_map_its_score_contrast(models, tmp_path):
    cache, paths = models
    samples = BundledSamples()
    sample_id = samples.ids[2]
    present = samples.classes_present(sample_id)
    absent = next(c for c in samples.classnames if c not in present)
    item = samples.get(sample_id)
    texts = [f"a {present[0]}", absent, "something else"]
    result = explain_request(cache, item, texts, "a photo of a {}.", [paths["vit"]], ["itsm"], tmp_path)
    first, missing, unnamed = result.panels
    expected = float(ScoreContrast.per_pair(np.load(result.npy(paths["vit"], "itsm"))[:1], item.sample.masks[present[0]][None])[0])
    assert first.contrast == pytest.approx(expected) and first.sc_percent == pytest.approx(100 * expected)
    assert missing.contrast_class == absent and missing.contrast is None and missing.sc_percent is None
    assert unnamed.contrast_class is None and unnamed.contrast is None
    assert result.msc_percent(paths["vit"], "itsm") == pytest.approx(100 * expected)  # the mean over the maps that have one


def test_vanilla_vs_eclip_lays_the_two_models_side_by_side(tmp_path):
    cache = ModelCache()
    from eclip.models.loading import eclip_pairs

    vanilla, tuned = next(iter(eclip_pairs().items()))  # a vanilla model and its ECLIP (masked max) fine-tune
    everyone = cache.comparison(vanilla)
    assert everyone[:2] == [vanilla, tuned] and all(cache.comparison(t) == everyone for t in everyone)
    assert everyone[1:] == cache.tunes[vanilla]  # the ECLIP fine-tune first, then the other fine-tunes of the same model
    item = BundledSamples().get("000000")
    result = explain_request(cache, item, ["circle", "star"], None, [vanilla, tuned], ["itsm", "free_attention"], tmp_path)
    assert result.columns == [(vanilla, "itsm"), (tuned, "itsm"), (vanilla, "free_attention"), (tuned, "free_attention")]
    assert [(p.model, p.method, p.text) for p in result.panels[:4]] == [
        (vanilla, "itsm", "circle"), (tuned, "itsm", "circle"), (vanilla, "free_attention", "circle"), (tuned, "free_attention", "circle")]
    assert not np.array_equal(np.asarray(Image.open(result.panels[0].tile)), np.asarray(Image.open(result.panels[1].tile)))
    assert all(p.contrast is not None for p in result.panels if p.text == "circle")


def test_pairs_are_read_from_the_model_configs(tmp_path, monkeypatch):
    import eclip.models.loading as loading

    def folder(name, head, start):
        path = tmp_path / name
        path.mkdir()
        config = {"format": "eclip-model/1", "pooling": {"head": head} if head else None,
                  "training": {"start": {"model": start}} if start else {}}
        (path / "config.json").write_text(json.dumps(config))
        return path

    specs = {"base": (None, None), "base-max": ("max", "base"), "renamed": ("masked_max", "base"),
             "base-retrained": ("attention", "base"), "other": (None, None), "other-avg": ("avg", "other"), "orphan": ("max", "gone")}
    for name, (head, start) in specs.items():
        folder(name, head, start)
    monkeypatch.setattr(loading, "BUNDLED", dict.fromkeys(specs, ""))
    monkeypatch.setattr(loading, "bundled_dir", lambda name: tmp_path / name)
    assert loading.bundled_fine_tunes() == {"base": ["renamed", "base-max", "base-retrained"], "other": ["other-avg"]}
    assert loading.eclip_pairs() == {"base": "renamed", "other": "other-avg"}


def test_the_bundled_pairs_are_fine_tunes_of_their_vanilla_model():
    from eclip.models.loading import bundled_dir, eclip_pairs

    pairs = eclip_pairs()
    assert pairs, "the bundled models should hold at least one vanilla / ECLIP pair"
    for vanilla, tuned in pairs.items():
        config = json.loads((bundled_dir(tuned) / "config.json").read_text())
        assert config["training"]["start"]["model"] == vanilla and config["pooling"]["head"] == "masked_max"


@pytest.mark.parametrize(("raw", "fragment"), [
    ("", "no text given"),
    ("\n  \n", "no text given"),
    ("\n".join(f"t{i}" for i in range(LIMITS.max_texts + 1)), f"limit of {LIMITS.max_texts}"),
    ("x" * (LIMITS.max_text_chars + 1), "characters, more than the limit"),
])
def test_bad_texts_are_one_line_errors(raw, fragment):
    with pytest.raises(TextInputError, match=fragment) as err:
        parse_texts(raw, LIMITS)
    assert "\n" not in str(err.value)


def test_texts_are_the_non_blank_lines_in_order():
    assert parse_texts(" a red star \n\ncircle\ncircle", LIMITS) == ["a red star", "circle", "circle"]


def test_a_text_longer_than_the_model_context_is_refused_before_any_map(models, tmp_path):
    cache, paths = models
    item = read_upload(sample_images()[0].read_bytes(), tmp_path, LIMITS)
    long = " ".join(["star"] * 40)  # the tiny models' context is 16 tokens
    with pytest.raises(TextInputError, match="tokens, more than this model's context") as err:
        explain_request(cache, item, ["circle", long], None, [paths["vit"]], ["itsm"], tmp_path)
    assert "\n" not in str(err.value) and not list(tmp_path.glob("*.npy"))


def test_templates_are_a_choice_or_a_pattern_with_braces():
    assert resolve_template("verbatim") is None and resolve_template("80 ImageNet templates (ensemble)") == "imagenet"
    assert resolve_template("a sketch of a {}.") == "a sketch of a {}."
    with pytest.raises(TextInputError, match="has no {} where the text goes"):
        resolve_template("a sketch")


NOISE = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize(("data", "limits", "fragment"), [
    (b"", LIMITS, "no image"),
    (png_bytes(NOISE)[:-600], LIMITS, "the upload: corrupt or truncated image"),
    (b"GIF89a not an image", LIMITS, "the upload: not an image format"),
    (b"x" * 2048, ServeLimits(max_upload_mb=0.001), "above the limit of 0.001 MB"),
    (png_bytes(NOISE), ServeLimits(max_pixels=3000), "64x64 pixels is above the limit of 3000"),
], ids=["empty", "truncated", "not-an-image", "too-many-bytes", "too-many-pixels"])
def test_bad_uploads_are_one_line_errors_that_name_the_upload_not_a_server_path(data, limits, fragment, tmp_path):
    with pytest.raises(ImageLoadError) as err:
        read_upload(data, tmp_path, limits)
    message = str(err.value)
    assert fragment in message and "\n" not in message and str(tmp_path) not in message


def test_a_method_undefined_for_the_architecture_is_refused_before_any_work(models, tmp_path):
    cache, paths = models
    item = read_upload(sample_images()[0].read_bytes(), tmp_path, LIMITS)
    with pytest.raises(MethodError, match="method 'rollout' is not defined for resnet models.*itsm"):
        explain_request(cache, item, ["star"], None, [paths["resnet"]], ["itsm", "rollout"], tmp_path)
    assert not list(tmp_path.glob("*.npy"))
    with pytest.raises(MethodError, match="no method picked"):
        explain_request(cache, item, ["star"], None, [paths["vit"]], [], tmp_path)


def test_unknown_models_samples_and_unpaired_comparisons_are_refused(models):
    cache, paths = models
    with pytest.raises(ModelLoadError, match="not offered by this server"):
        cache.get("../../etc/passwd")
    with pytest.raises(ImageLoadError, match="no bundled sample"):
        BundledSamples().get("../meta")
    with pytest.raises(MethodError, match="has no bundled fine-tune to compare with"):
        cache.comparison(paths["vit"])


@pytest.mark.parametrize(("text", "expected"), [("a red star", "star"), ("STAR", "star"), ("a star and a circle", None),
                                               ("starfish", None), ("a photo", None)])
def test_a_text_names_at_most_one_class(text, expected):
    assert contrast_class(text, ("circle", "star", "heart")) == expected


def test_big_images_get_maps_capped_at_the_map_size_tiles_of_one_size_and_figures_drawn_later(models, tmp_path):
    cache, paths = models
    big = np.random.default_rng(0).integers(0, 255, (300, 900, 3), dtype=np.uint8)
    item = read_upload(png_bytes(big), tmp_path, LIMITS)
    limits = ServeLimits(map_side=450, tile_side=120, display_side=300)
    result = explain_request(cache, item, ["star", "ring"], None, [paths["vit"]], ["itsm", "gradcam"], tmp_path, limits=limits)
    capped = np.load(result.npy(paths["vit"], "itsm"))
    assert capped.shape == (2, 150, 450) and capped.dtype == np.float32
    assert all(Image.open(p.tile).size == (120, 40) for p in result.panels)
    assert not list(tmp_path.glob("*.png"))  # the figures cost a figure each: drawn when the downloads are asked for
    files = write_figures(tmp_path, BundledSamples(), limits)
    assert [f.suffix for f in files] == [".npy", ".png", ".npy", ".png"] and files[0] == result.npy(paths["vit"], "itsm")
    assert Image.open(files[1]).size[0] > 300
    (tmp_path / "full").mkdir()
    full = explain_request(cache, item, ["star", "ring"], None, [paths["vit"]], ["itsm"], tmp_path / "full", limits=ServeLimits(map_side=0))
    assert np.load(full.npy(paths["vit"], "itsm")).shape == (2, 300, 900)


def test_a_request_writes_no_more_than_it_reserves(models, tmp_path):
    from eclip.serve.request import figure_bytes, read_manifest
    from eclip.serve.workspace import tree_size

    cache, paths = models
    item = read_upload(png_bytes(np.random.default_rng(1).integers(0, 255, (200, 330, 3), dtype=np.uint8)), tmp_path, LIMITS)
    before = tree_size(tmp_path)
    texts = ["star", "ring", "a red circle"]
    explain_request(cache, item, texts, None, [paths["vit"], paths["resnet"]], ["itsm", "gradcam"], tmp_path)
    written = tree_size(tmp_path) - before
    assert 0 < written <= request_bytes((200, 330), 3, 2, 2, LIMITS)
    manifest = read_manifest(tmp_path)
    write_figures(tmp_path, BundledSamples(), LIMITS)
    assert tree_size(tmp_path) - before - written <= figure_bytes(manifest)


def test_serve_binds_loopback_and_warns_when_exposed(monkeypatch):
    import eclip.serve.page as page

    launched = []
    monkeypatch.setattr(page, "launch", lambda demo, workspace, host, port, *rest, **kw: launched.append((host, port, demo)))
    result = CliRunner().invoke(cli.app, ["serve", "--port", "7999"])
    assert result.exit_code == 0, result.output
    assert launched[-1][:2] == ("127.0.0.1", 7999) and "warning" not in result.output
    result = CliRunner().invoke(cli.app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert launched[-1][0] == "0.0.0.0" and "warning: serving on 0.0.0.0:7860, reachable from other machines" in result.output


def test_serve_refuses_a_bad_model_before_serving(monkeypatch, tmp_path):
    import eclip.serve.page as page

    monkeypatch.setattr(page, "launch", lambda *a, **k: pytest.fail("served with a bad model"))
    result = CliRunner().invoke(cli.app, ["serve", "--model", str(tmp_path / "nothing-here")])
    assert result.exit_code != 0 and isinstance(result.exception, ModelLoadError)

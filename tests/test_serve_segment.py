"""The web demo's Segment tab: its labels equal `eclip explain --segment`'s, its limits hold, bad input is one line.

The request function is called directly on the bundled models and on tiny model folders; one test
drives a live server over HTTP (`gradio_client`), as a script would.
"""
from __future__ import annotations

import html
import io

import numpy as np
import pytest
from helpers import tiny_serve_cache
from PIL import Image
from typer.testing import CliRunner

import eclip.cli as cli
from eclip.data.bundled import sample_images
from eclip.errors import EclipError, MethodError, OptionError, TextInputError
from eclip.serve import BundledSamples, ServeLimits, Workspace
from eclip.serve.inputs import read_upload
from eclip.serve.segment import parse_background, segment_bytes, segment_inputs, segment_methods, segment_request
from eclip.serve.workspace import Quotas, tree_size

LIMITS = ServeLimits()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_serve_cache(tmp_path_factory.mktemp("models"))


@pytest.fixture
def workspace(tmp_path):
    space = Workspace(root=tmp_path / "root")
    yield space
    space.close()


def cli_labels(image, texts, model, method, out, extra=()) -> np.ndarray:
    """The labels `eclip explain IMAGE --segment` writes."""
    args = ["explain", str(image), "--segment", "--method", method, "--model", model, "-o", str(out), *extra]
    for text in texts:
        args += ["--text", text]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    return np.load(out / f"{image.stem}.npy")


CASES = [(arch, method, threshold) for arch, method in [("vit", "naclip"), ("vit", "cliptrase"), ("resnet", "itsm"), ("synth-vit", "sclip"),
                                                        ("synth-rn", "surgery")]
         for threshold in (None, 0.4) if not (method == "cliptrase" and threshold)]  # cliptrase takes no threshold (refused below)


@pytest.mark.parametrize(("arch", "method", "threshold"), CASES)
def test_the_labels_from_the_page_equal_the_npy_of_eclip_explain_segment(models, arch, method, threshold, tmp_path):
    cache, paths = models
    label = paths.get(arch, arch)
    image = sample_images()[1]
    texts = ["a star", "circle", "a blue ring"]
    extra = ["--threshold", str(threshold)] if threshold is not None else ["--background", "nothing"]
    expected = cli_labels(image, texts, label, method, tmp_path / "cli", extra)
    item = read_upload(image.read_bytes(), tmp_path, LIMITS)
    result = segment_request(cache, item, texts, None, label, method, tmp_path, background="nothing", threshold=threshold)
    labels = np.load(result.npy)
    assert labels.dtype == expected.dtype == np.uint8 and labels.shape == expected.shape == (item.image.height, item.image.width)
    assert np.array_equal(labels, expected)
    assert int(labels.max()) <= len(texts)
    assert result.classnames == ["background" if threshold is not None else "nothing", *texts]
    assert result.shares == pytest.approx((np.bincount(labels.ravel(), minlength=4) / labels.size).tolist())
    assert Image.open(result.png).size[0] > 200  # the command's figure, with its legend
    assert Image.open(result.labels_tile).size == Image.open(result.image_tile).size == (160, 160)


def test_a_threshold_sends_pixels_below_it_to_the_background_and_a_text_competes_as_one(models, tmp_path):
    cache, paths = models
    item = BundledSamples().get("000002")
    texts = ["circle", "star"]

    def labels(**background) -> np.ndarray:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        return np.load(segment_request(cache, item, texts, None, paths["vit"], "sclip", folder, **background).npy)

    nothing_below = labels(threshold=0.0)
    assert int(nothing_below.min()) >= 1  # the threshold's background has no text: it takes only what the threshold gives it
    previous = nothing_below == 0
    for threshold in (0.5, 0.9, 1.0):  # a higher threshold only moves more pixels to the background, the rest keep their text
        cut = labels(threshold=threshold)
        assert np.array_equal(cut[cut != 0], nothing_below[cut != 0])
        assert (cut == 0)[previous].all()
        previous = cut == 0
    assert previous.any()
    with_text = labels(background="background")
    assert set(np.unique(with_text)) <= {0, 1, 2}
    with_text_only = np.load(segment_request(cache, item, ["background", *texts], None, paths["vit"], "sclip", tmp_path,
                                             background=None).npy)
    assert np.array_equal(with_text, with_text_only)  # the background text is class 0, a text like the others


def test_methods_with_a_protocol_come_first_and_only_dense_methods_are_offered():
    from eclip.segmentation.protocol import PAPERS
    from eclip.serve.menu import menu

    offered = segment_methods()
    assert offered[:len(PAPERS)] == list(PAPERS)
    assert sorted(offered) == sorted(item.name for item in menu()["dense"])
    assert "gradcam" not in offered and "free_attention" not in offered


@pytest.mark.parametrize(("method", "model", "threshold", "fragment"), [
    ("gradcam", "resnet", None, "method 'gradcam' does not segment here (an argmax over texts needs a dense method); pick one of: sclip"),
    ("nonsense", "vit", None, "method 'nonsense' does not segment here"),
    ("sclip", "resnet", None, "method 'sclip' is not defined for resnet models ("),
    ("cliptrase", "vit", 0.5, "give a background text instead of a threshold"),
])
def test_a_method_that_cannot_segment_is_refused_in_one_line_and_leaves_no_folder(models, workspace, method, model, threshold,
                                                                                   fragment):
    cache, paths = models
    with pytest.raises(MethodError) as err:
        segment_inputs(cache, workspace, BundledSamples(), LIMITS, None, "000000", "circle\nstar", "verbatim", paths[model], method,
                       "threshold" if threshold is not None else "text", "background", threshold)
    message = str(err.value)
    assert fragment in message and "\n" not in message
    if method == "sclip":
        assert message.endswith("; pick one of: itsm, itsm_specific, maskclip, surgery")  # what a ResNet can segment with
    assert not list(workspace.requests.iterdir())


@pytest.mark.parametrize(("texts", "template", "mode", "background", "threshold", "limits", "error", "fragment"), [
    ("\n".join(f"t{i}" for i in range(17)), "verbatim", "text", "background", None, LIMITS, TextInputError, "17 texts is more than"),
    ("x" * 201, "verbatim", "text", "background", None, LIMITS, TextInputError, "more than the limit of 200; shorten it"),
    ("circle", "a {} " + "x" * 300, "text", "background", None, LIMITS, TextInputError, "the prompt template has 305 characters"),
    ("circle", "verbatim", "text", "b" * 201, None, LIMITS, TextInputError, "the background text has 201 characters"),
    ("circle", "verbatim", "text", "  ", None, LIMITS, TextInputError, "no background text"),
    ("circle", "verbatim", "threshold", "", 1.5, LIMITS, OptionError, "the probability threshold 1.5 is not between 0 and 1"),
    ("circle\nstar", "verbatim", "text", "background", None, ServeLimits(max_maps=2), OptionError,
     "3 text(s) x 1 method(s) x 1 model(s) is 3 maps, more than this server's limit of 2"),
])
def test_limits_are_applied_before_any_work(models, workspace, texts, template, mode, background, threshold, limits, error, fragment):
    cache, paths = models
    with pytest.raises(error) as err:
        segment_inputs(cache, workspace, BundledSamples(), limits, None, "000000", texts, template, paths["vit"], "sclip", mode,
                       background, threshold)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert not list(workspace.requests.iterdir())


def test_a_threshold_mode_ignores_the_background_text_and_a_text_mode_the_threshold():
    assert parse_background("threshold", "whatever", 0.25) == (None, 0.25)
    assert parse_background("text", " sky ", 0.25) == ("sky", None)


def test_a_big_upload_is_segmented_at_the_map_size_and_writes_no_more_than_it_reserves(models, workspace):
    cache, paths = models
    limits = ServeLimits(map_side=64)
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (150, 300, 3), dtype=np.uint8)).save(buffer, format="PNG")
    data = buffer.getvalue()
    result = segment_inputs(cache, workspace, BundledSamples(), limits, data, None, "a red star\na blue circle", "a photo of a {}.",
                            paths["vit"], "naclip", "text", "background", None)
    labels = np.load(result.npy)
    assert labels.shape == result.size == (32, 64) and int(labels.max()) <= 2
    assert result.name == "upload" and result.folder.parent == workspace.requests
    written = tree_size(result.folder) - len(data)
    assert 0 < written <= segment_bytes((150, 300), limits)


def test_a_request_over_the_disk_quota_is_refused_and_a_bad_upload_leaves_nothing(models, tmp_path):
    cache, paths = models
    small = Workspace(Quotas(requests_bytes=100_000), root=tmp_path / "small")
    try:
        with pytest.raises(EclipError, match="the server's disk for results"):
            segment_inputs(cache, small, BundledSamples(), LIMITS, sample_images()[0].read_bytes(), None, "circle", "verbatim",
                           paths["vit"], "sclip", "text", "background", None)
        with pytest.raises(EclipError, match="^the upload: "):
            segment_inputs(cache, small, BundledSamples(), LIMITS, b"not an image", None, "circle", "verbatim", paths["vit"],
                           "sclip", "text", "background", None)
        assert not list(small.requests.iterdir())
    finally:
        small.close()


# ------------------------------------------------------------------------------------------ over HTTP
@pytest.mark.slow  # a server process
def test_the_segment_endpoint_over_http_returns_the_labels_and_refuses_bad_requests_in_one_line(tmp_path):
    pytest.importorskip("gradio_client")
    import httpx
    from gradio_client import Client
    from helpers.browser import eclip_process

    from eclip.methods.base import get_method
    from eclip.models.loading import load_model

    with eclip_process("--max-maps", "3", env={"TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}) as served:
        client = Client(served.url, verbose=False, download_files=False)

        def segment(texts="circle\nstar", method="sclip", mode="text", threshold=0.5, model="synth-vit"):
            status, view, table, files = client.predict(None, "000003", texts, "verbatim", model, method, mode, "background",
                                                        threshold, api_name="/segment")
            return html.unescape(status), view, table, files

        status, view, table, files = segment()
        assert "eclip-ok" in status and "000003: 2 text(s) + background, sclip on synth-vit, 160 x 160 labels" in status
        assert [row[:2] for row in table["data"]] == [[0, "background"], [1, "circle"], [2, "star"]]
        assert sum(row[2] for row in table["data"]) == pytest.approx(100, abs=0.2)
        assert view.count("<li>") == 3 and "eclip-labels" in view
        npy = next(f for f in files if f["path"].endswith(".npy"))
        assert sorted(f["path"].rsplit(".", 1)[1] for f in files) == ["npy", "png"]
        answer = httpx.get(npy["url"], timeout=60)
        assert answer.status_code == 200
        labels = np.load(io.BytesIO(answer.content))
        assert labels.shape == (160, 160) and labels.dtype == np.uint8

        from eclip.segmentation import Segmenter, Vocabulary
        from eclip.segmentation.protocol import protocol_for_texts

        model = load_model("synth-vit")
        expected = Segmenter(model, get_method("sclip"),
                             Vocabulary.from_texts(["circle", "star"], background="background"),
                             protocol_for_texts("sclip", "{}", 0.0, min(model.image_size)))(BundledSamples().get("000003").image)
        assert np.array_equal(labels, expected.labels.numpy().astype(np.uint8))

        status, *_ = segment(mode="threshold", threshold=0.3)
        assert "eclip-ok" in status and "2 text(s) + background (best p < 0.3), sclip" in status
        from gradio_client.exceptions import AppError

        with pytest.raises(AppError, match="gradcam is not in the list of choices"):  # the method menu refuses it before the handler
            segment(method="gradcam")
        for kwargs, fragment in (({"model": "synth-rn"}, "method 'sclip' is not defined for resnet models (synth-rn)"),
                                 ({"texts": "a\nb\nc"}, "is 4 maps, more than this server's limit of 3"),
                                 ({"texts": ""}, "no text given")):
            status, view, table, files = segment(**kwargs)
            assert "eclip-error" in status and fragment in status, status
            assert status.count("<p") == 1 and view == "" and not table["data"] and files is None

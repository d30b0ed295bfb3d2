"""Open-vocabulary segmentation: the confusion-matrix metric, the windows, the post-processing, the segmenter."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_adapter
from PIL import Image

from eclip.data.registry import read_classnames
from eclip.data.sample import Sample
from eclip.methods.base import get_method
from eclip.metrics.segmentation import ConfusionMatrix
from eclip.segmentation import Segmenter, Vocabulary, dataset_vocabulary, label_map, protocol_for
from eclip.segmentation.postprocess import class_probabilities, cluster_vote, drop_small_classes, labels_from_probabilities, pamr
from eclip.segmentation.protocol import DATASET_KEYS, PAPERS
from eclip.segmentation.vocabulary import read_names
from eclip.segmentation.windows import patch_padding, rescale_size, resize_pixels, slide_logits, window_boxes


# ------------------------------------------------------------------------------------------ metric
def test_confusion_matrix_scores_by_hand():
    m = ConfusionMatrix(3)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    m.update(pred, target)
    out = m.compute()
    cm = m.confusion.numpy()
    assert cm.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]  # the ignored pixel (255) counts nowhere
    iou = [1 / (2 + 3 - 1), 2 / (3 + 3 - 2), 1 / (2 + 1 - 1)]
    assert out["per_class_iou"] == pytest.approx(iou)
    assert out["miou"] == pytest.approx(np.mean(iou))
    assert out["pixel_accuracy"] == pytest.approx(4 / 7)
    assert out["mean_accuracy"] == pytest.approx(np.mean([1 / 2, 2 / 3, 1 / 2]))
    assert out["n_pixels"] == 7


def test_confusion_matrix_leaves_absent_classes_out_and_merges_exactly():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (4, 9, 9), generator=g)  # class 3 never occurs
    pred = torch.randint(0, 3, (4, 9, 9), generator=g)
    whole = ConfusionMatrix(4)
    whole.update(pred, target)
    halves = [ConfusionMatrix(4), ConfusionMatrix(4)]
    halves[0].update(pred[:1], target[:1])
    halves[1].update(pred[1:], target[1:])
    merged = halves[0].merge(halves[1])
    assert torch.equal(merged.confusion, whole.confusion)
    out = whole.compute()
    assert np.isnan(out["per_class_iou"][3]) and out["miou"] == pytest.approx(np.mean(out["per_class_iou"][:3]))
    resumed = ConfusionMatrix(4)
    resumed.load_state(halves[0].to_json())
    assert torch.equal(resumed.confusion, merged.confusion)


def test_perfect_prediction_scores_one_and_bad_labels_are_errors():
    target = torch.tensor([[0, 1], [2, 255]])
    m = ConfusionMatrix(3)
    m.update(target.clamp(max=2), target)
    assert m.compute()["miou"] == 1.0 and m.compute()["pixel_accuracy"] == 1.0
    with pytest.raises(ValueError, match="predicted labels"):
        m.update(torch.tensor([[3]]), torch.tensor([[0]]))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.zeros(2, 2), torch.zeros(2, 3))
    assert np.isnan(ConfusionMatrix(2).compute()["miou"])


# ------------------------------------------------------------------------------------------ windows
def test_rescale_size_follows_mmcv_keep_ratio():
    assert rescale_size(500, 375, 336, 2048) == (448, 336)
    assert rescale_size(100, 200, 336, 2048) == (336, 672)  # small images are enlarged
    assert rescale_size(4000, 100, 336, 2048) == (2048, 51)  # the long side caps the scale
    image = Image.fromarray(np.zeros((375, 500, 3), np.uint8))
    assert tuple(resize_pixels(image, 336).shape) == (3, 336, 448)
    assert tuple(resize_pixels(image, 224, resample="bicubic").shape) == (3, 224, 298)
    assert tuple(resize_pixels(image, None).shape) == (3, 375, 500)


def test_windows_cover_the_image_and_average_back_to_it():
    boxes = window_boxes(336, 448, 224, 112)
    assert len(boxes) == 2 * 3 and boxes[-1] == (112, 336, 224, 448)
    assert window_boxes(100, 150, 224, 112) == [(0, 100, 0, 150)]  # a small image: one window, the image itself
    cover = torch.zeros(336, 450)
    for y1, y2, x1, x2 in window_boxes(336, 450, 224, 112):
        assert y2 - y1 == 224 and x2 - x1 == 224
        cover[y1:y2, x1:x2] += 1
    assert bool((cover > 0).all())
    image = torch.randn(1, 3, 70, 90)
    # a "method" whose maps are the window's own pixels: averaging the windows gives the image back
    same = slide_logits(lambda w: w, image, crop=32, stride=16)
    assert torch.allclose(same, image[0], atol=1e-6)
    assert patch_padding(30, 40, 16) == (4, 4, 1, 1)


# ------------------------------------------------------------------------------------------ rules
def test_class_probabilities_take_the_best_synonym():
    logits = torch.tensor([0.1, 0.3, 0.2, 0.25]).view(4, 1, 1)  # queries of classes 0, 1, 1, 2
    probs = class_probabilities(logits, [0, 1, 1, 2], 3, logit_scale=10.0)
    soft = torch.softmax(logits.flatten() * 10, 0)
    assert torch.allclose(probs.flatten(), torch.stack([soft[0], soft[1], soft[3]]))
    assert int(labels_from_probabilities(probs)) == 1
    assert int(labels_from_probabilities(probs, prob_threshold=0.99)) == 0


def test_small_foreground_classes_are_dropped():
    probs = torch.zeros(3, 10, 10)
    probs[0] = 0.2
    probs[1, :, :9] = 0.9  # class 1 wins 90 pixels
    probs[2, :, 9] = 0.9  # class 2 wins 10: 10% of the foreground, not more than 0.1
    out = drop_small_classes(probs, 0.1)
    assert torch.equal(out[2], torch.zeros(10, 10)) and torch.equal(out[1], probs[1])
    assert labels_from_probabilities(out)[:, 9].tolist() == [0] * 10


def test_cluster_vote_takes_the_majority_query_per_cluster():
    queries = torch.tensor([[0, 1, 1, 2], [3, 3, 2, 2]])
    clusters = torch.tensor([[0, 0, 0, 1], [1, 1, 1, 1]])
    assert cluster_vote(queries, clusters, 4).tolist() == [[1, 1, 1, 2], [2, 2, 2, 2]]  # cluster 1: 2 x3, 3 x2
    tie = cluster_vote(torch.tensor([[3, 1]]), torch.tensor([[0, 0]]), 4)
    assert tie.tolist() == [[1, 1]]  # ties go to the lowest query


def test_pamr_keeps_constant_logits_and_smooths_along_the_image():
    image = torch.zeros(1, 3, 20, 20)
    image[..., 10:] = 1.0  # two flat halves
    constant = torch.full((1, 2, 20, 20), 0.5)
    assert torch.allclose(pamr(image, constant, steps=3, dilations=(1, 2)), constant)
    logits = torch.zeros(1, 1, 20, 20)
    logits[..., 3, 3] = 1.0  # a spike in the left half
    out = pamr(image, logits, steps=5, dilations=(1,))
    assert float(out[..., :10].sum()) > 0.99 and float(out[..., 12:].sum()) < 1e-6  # mass spreads, but not across the edge


# ------------------------------------------------------------------------------------------ vocabularies
@pytest.mark.parametrize("dataset, classes", [("voc", "voc"), ("voc21", "voc"), ("context", "context"), ("context60", "context"),
                                              ("coco_object", "coco"), ("coco_stuff", "coco_stuff"), ("ade20k", "ade20k"),
                                              ("cityscapes", "cityscapes")])
@pytest.mark.parametrize("method", PAPERS)
def test_every_shipped_query_file_fits_its_dataset(method, dataset, classes):
    protocol = protocol_for(method, dataset)
    vocab = dataset_vocabulary(protocol, dataset, read_classnames(classes))
    assert vocab.num_classes == len(read_classnames(classes)) + int(vocab.background)
    assert len(vocab.queries) >= vocab.num_classes and max(vocab.query_class) == vocab.num_classes - 1
    assert vocab.background == (DATASET_KEYS[dataset] in ("voc21", "context60", "coco_object"))


def test_query_files_keep_the_authors_synonyms():
    assert read_names("sclip/voc21")[0].startswith("sky, wall, tree")
    assert read_names("clearclip/voc21")[0] == "background"
    vocab = dataset_vocabulary(protocol_for("sclip", "voc21"), "voc21", read_classnames("voc"))
    assert vocab.classnames[0] == "background" and vocab.queries[:2] == ("sky", "wall")
    person = vocab.classnames.index("person")
    assert [q for q, c in zip(vocab.queries, vocab.query_class) if c == person][1] == "person in shirt"


def test_label_map_background_is_a_class_or_ignored():
    masks = {"cat": np.array([[1, 1, 0], [0, 0, 0]], bool), "dog": np.array([[0, 0, 0], [0, 1, 0]], bool)}
    ignore = np.array([[0, 0, 0], [0, 0, 1]], bool)
    sample = Sample("x", Image.new("RGB", (3, 2)), masks, ignore)
    with_bg = label_map(sample, ["cat", "dog"], background=True)
    assert with_bg.tolist() == [[1, 1, 0], [0, 2, 255]]
    assert label_map(sample, ["cat", "dog"], background=False).tolist() == [[0, 0, 255], [255, 1, 255]]


# ------------------------------------------------------------------------------------------ segmenter
@pytest.mark.parametrize("method", [*PAPERS, "itsm"])
def test_segmenter_labels_every_pixel_of_the_image(method):
    model = make_adapter("vit")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    vocab = Vocabulary.from_texts(["a red star", "a blue circle"], background="background")
    protocol = protocol_for(method, "voc21")
    seg = Segmenter(model, get_method(method), vocab, protocol)(image)
    assert seg.labels.shape == (40, 56) and int(seg.labels.min()) >= 0 and int(seg.labels.max()) <= 2
    assert seg.logits.shape[1:] == (40, 56)
    if method != "cliptrase":  # a threshold no probability reaches: everything is background
        everything = Segmenter(model, get_method(method), vocab, protocol.__class__(**{**protocol.__dict__, "prob_threshold": 1.01}))
        assert int(everything(image).labels.max()) == 0


def test_position_interpolation_of_the_forks_differs_off_the_native_grid():
    model = make_adapter("vit")
    from eclip.segmentation.predict import with_pos_interpolation

    twin = with_pos_interpolation(model, "dino")
    assert model.pos_interpolation == "size" and twin.pos_interpolation == "dino"
    native = torch.randn(1, 3, 32, 32)
    assert torch.equal(model.embed(native), twin.embed(native))
    larger = torch.randn(1, 3, 48, 40)
    assert not torch.allclose(model.embed(larger), twin.embed(larger))


# ------------------------------------------------------------------------------------------ free texts, figures, CLI
def test_texts_vocabulary_background_text_or_threshold_class():
    with_text = Vocabulary.from_texts(["a cat", "a dog"], background="background")
    assert with_text.classnames == ("background", "a cat", "a dog") and with_text.queries == with_text.classnames
    by_threshold = Vocabulary.from_texts(["a cat", "a dog"], threshold=True)
    assert by_threshold.classnames == ("background", "a cat", "a dog") and by_threshold.queries == ("a cat", "a dog")
    assert by_threshold.query_class == (1, 2) and by_threshold.background
    assert not Vocabulary.from_texts(["a cat"]).background


def test_free_text_protocol_scales_to_the_model():
    from eclip.segmentation.protocol import protocol_for_texts

    p = protocol_for_texts("sclip", "{}", 0.3, model_size=96)
    assert (p.short_side, p.crop, p.stride, p.prob_threshold, p.names) == (144, 96, 48, 0.3, None)
    assert protocol_for_texts("sclip").crop == 224


def test_palette_is_vocs_and_the_figure_is_written(tmp_path):
    from eclip.segmentation.figure import colorize, palette, segmentation_figure

    colours = palette(4)
    assert colours.tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert colorize(np.array([[255]])).tolist() == [[[255, 255, 255]]]
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    out = segmentation_figure(Image.new("RGB", (2, 2)), [("truth", labels)], ["background", "cat", "dog"], tmp_path / "f.png")
    assert Image.open(out).size[0] > 200


def test_explain_segment_writes_labels_and_a_picture(model_dir, tmp_path):
    from typer.testing import CliRunner

    import eclip.cli as cli

    image = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(image)
    for extra, out in ((["--background", "nothing"], tmp_path / "bg"), (["--threshold", "1.0"], tmp_path / "thr")):
        result = CliRunner().invoke(cli.app, ["explain", str(image), "--segment", "--method", "naclip", "--text", "a red star",
                                              "--text", "a blue circle", "--model", str(model_dir), "-o", str(out), *extra])
        assert result.exit_code == 0, result.output
        labels = np.load(out / "wide.npy")
        assert labels.shape == (40, 60) and labels.dtype == np.uint8 and int(labels.max()) <= 2
        assert Image.open(out / "wide.png").size[0] > 200
    assert int(np.load(tmp_path / "thr" / "wide.npy").max()) == 0  # no probability reaches 1: all background


def test_cliptrase_with_a_threshold_is_refused_in_one_line(model_dir, tmp_path):
    """CLIPtrase votes clusters on raw cosines: no probability exists for a threshold to cut, so it is refused, not ignored."""
    from typer.testing import CliRunner

    import eclip.cli as cli

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
    result = CliRunner().invoke(cli.app, ["explain", str(image), "--segment", "--method", "cliptrase", "--threshold", "0.5",
                                          "--text", "a red star", "--model", str(model_dir), "-o", str(tmp_path / "out")])
    from eclip.errors import MethodError

    assert isinstance(result.exception, MethodError) and "give a background text instead of a threshold" in str(result.exception)
    assert not (tmp_path / "out" / "img.npy").exists()

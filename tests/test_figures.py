"""Figures and labels: one name and unit for the key numbers, one scale with a colour bar, outlines, titles, atomic PNGs."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image

import eclip.report.overlay as overlay
from eclip.report.charts import metric_bars
from eclip.report.html import results_table
from eclip.report.tables import markdown_table
from eclip.report.units import format_sc, format_value

RECORDS = [
    {"dataset": "synthetic", "model": "runs/vanilla", "method": "itsm", "n_pairs": 10, "threshold": 0.55, "fg_iou": 0.141,
     "miou": 0.432, "msc": 4.6, "inverted_rate": 0.3, "pointing_game": 0.2, "deletion_auc": 0.245, "insertion_auc": 0.268,
     "zero_shot": 0.8, "skipped": 0},
    {"dataset": "synthetic", "model": "runs/eclip", "method": "itsm", "n_pairs": 10, "threshold": 0.0, "fg_iou": 0.042,
     "miou": 0.021, "msc": -44.2, "inverted_rate": 1.0, "pointing_game": 0.0, "deletion_auc": None, "insertion_auc": None,
     "zero_shot": 0.5, "skipped": 0},
    {"dataset": "synthetic", "model": "runs/eclip", "method": "gradcam", "n_pairs": 10, "threshold": 0.1, "fg_iou": 0.05,
     "miou": 0.03, "msc": 12.0, "inverted_rate": 0.125, "pointing_game": 1.0, "deletion_auc": 0.2, "insertion_auc": 0.3,
     "zero_shot": 0.5, "skipped": 0},
]


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the report modules save, drawn, with its file written as usual."""
    figures = []
    save = overlay.save_png

    def keep(fig, out, dpi=100):
        fig.canvas.draw()
        fig.renderer = fig.canvas.get_renderer()  # closing the figure takes its canvas away
        figures.append((out, fig, [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]))
        return save(fig, out, dpi)

    monkeypatch.setattr(overlay, "save_png", keep)
    monkeypatch.setattr("eclip.report.charts.save_png", keep)
    return figures


def scene(size: int = 48) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """A blue square on white and a red one on black, the blue one's mask, and a map that is highest on both."""
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[:, : size // 2] = 255
    rgb[8:24, 8:24] = (30, 60, 255)
    rgb[8:24, 32:44] = (230, 20, 20)
    mask = np.zeros((size, size), bool)
    mask[8:24, 8:24] = True
    heat = np.linspace(0, 1, size * size, dtype=np.float32).reshape(size, size)
    heat[8:24, 8:24] = heat[8:24, 32:44] = 1.0
    return Image.fromarray(rgb), mask, heat


def test_every_table_shows_msc_and_inverted_in_percent_under_one_label():
    md, page = markdown_table(RECORDS), results_table(RECORDS)
    for table in (md, page):
        for label in ("mSC % ↑", "inverted % ↓", "pointing % ↑", "zero-shot % ↑"):
            assert label in table
        assert "inverted ↓" not in table and "contrast" not in table
    row = md.splitlines()[2].split(" | ")
    head = md.splitlines()[0].split(" | ")
    assert row[head.index("mSC % ↑")] == "+4.6" and row[head.index("inverted % ↓")] == "30.0"
    assert row[head.index("pointing % ↑")] == "20.0" and row[head.index("zero-shot % ↑")] == "80.0"
    assert ">12.5</td>" in page and ">-44.2</td>" in page and ">+12.0</td>" in page
    assert format_value("inverted_rate", None) == "–" and format_sc(-0.2432) == "SC -24.3%" and format_sc(float("nan")) == "SC –"


def test_metrics_png_has_a_legend_percent_titles_and_labels_inside_the_axes(drawn, tmp_path):
    metric_bars(RECORDS, tmp_path / "metrics.png")
    ((out, fig, texts),) = drawn
    assert out.is_file() and Image.open(out).size[0] > 300
    assert "mSC % (higher is better)" in texts and "inverted % (lower is better)" in texts
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["itsm", "gradcam"] and legend.get_title().get_text() == "method"
    renderer = fig.renderer
    labelled = 0
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        for text in ax.texts:  # bar labels
            extent = text.get_window_extent(renderer)
            assert box.y0 - 0.5 <= extent.y0 and extent.y1 <= box.y1 + 0.5, (ax.get_title(), text.get_text())
            labelled += 1
    assert labelled == 3 * 7
    assert "100.0" in texts and "-44.2" in texts  # inverted 1.0 and mSC shown in percent


def test_a_map_never_takes_the_hue_of_the_object_under_it():
    """Over the gray image only the colour map's hue is left: minus the map's share, every pixel is a gray."""
    image, _, heat = scene()
    rgb = np.asarray(image)
    blended = overlay.blend(rgb, heat).astype(np.float64) / 255
    colours = matplotlib.colormaps[overlay.CMAP](heat)[..., :3]
    rest = blended - overlay.ALPHA * colours
    assert np.abs(rest - rest.mean(axis=-1, keepdims=True)).max() < 1.5 / 255  # rounding of the uint8 image only
    # the blue and the red square under the same (highest) value look the same but for their brightness
    blue, red = blended[12, 12], blended[12, 36]
    assert np.abs((blue - blue.mean()) - (red - red.mean())).max() < 1.5 / 255
    assert np.array_equal(np.asarray(overlay.heat_overlay(image, heat)), overlay.blend(rgb, heat))


def test_titles_wrap_to_the_panel_and_long_ones_are_shortened():
    long = "a pink square partly hidden behind a blue heart on a checkered background, photographed at noon"
    wrapped = overlay.wrap_title(f"{long}\ncos 0.595 · p 1.00", 30)
    lines = wrapped.split("\n")
    assert len(lines) == overlay.TITLE_LINES and all(len(line) <= 30 for line in lines)
    assert lines[1].endswith("…") and lines[2] == "cos 0.595 · p 1.00"
    assert overlay.wrap_title("red\n(a red star next to a blue circle)", 30) == "red\n(a red star next to a blue\ncircle)"


def test_overlay_titles_fit_their_panels_and_every_figure_has_one_colour_bar(drawn, tmp_path):
    image, mask, heat = scene()
    texts = ["a red star next to a blue circle, on a striped background with clutter", "blue"]
    overlay.overlay_panels(image, np.stack([heat, 1 - heat]), overlay.score_titles(texts, [0.2, 0.3], [0.4, 0.6]),
                           tmp_path / "explain.png", suptitle="model · itsm")
    overlay.map_grid([(image, mask, "'square'", [("SC +24.0%", heat), ("SC -3.0%", 1 - heat)])],
                     ["a-very-long-model-folder-name-that-wraps · itsm", "vanilla · itsm"], tmp_path / "grid.png")
    assert len(drawn) == 2
    for out, fig, texts_drawn in drawn:
        renderer = fig.renderer
        panels = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().ndim == 3 and ax.get_ylabel() == ""]
        bars = [ax for ax in fig.axes if ax.get_ylabel() == overlay.BAR_LABEL]
        assert len(bars) == 1 and set(overlay.BAR_TICKS.values()) <= set(texts_drawn), out
        width = panels[0].get_window_extent(renderer).width
        for text in fig.texts + [t for ax in panels for t in ax.texts]:
            if text.get_text():
                assert text.get_window_extent(renderer).width <= width + overlay._GAP * fig.dpi, text.get_text()
    assert any("…" in t for t in drawn[0][2]) and "SC +24.0%" in drawn[1][2]


def test_every_figure_is_written_atomically(tmp_path, monkeypatch):
    """A figure whose drawing fails leaves neither a truncated PNG nor a temporary file."""
    from matplotlib.figure import Figure

    from eclip.report.decomposition import decomposition_figure

    image, mask, heat = scene()

    def broken(self, fname, *args, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    calls = [lambda out: overlay.overlay_panels(image, heat[None], ["t"], out),
             lambda out: overlay.map_grid([(image, mask, "x", [("SC", heat)])], ["m"], out),
             lambda out: metric_bars(RECORDS, out),
             lambda out: decomposition_figure(image, _Decomposition(), ["a"], out)]
    for i, call in enumerate(calls):
        with pytest.raises(OSError, match="disk full"):
            call(tmp_path / f"{i}.png")
    assert list(tmp_path.iterdir()) == []


class _Decomposition:
    """The fields `decomposition_figure` reads, for one text on a 2-layer, 2-head model."""

    heads = np.zeros((2, 2, 1), np.float32)
    mlps = np.zeros((2, 1), np.float32)
    cosine = embed = np.zeros(1, np.float32)
    spatial = np.zeros((1, 4, 4), np.float32)


def test_the_demo_shift_and_report_figures_caption_each_map_with_its_sc_in_percent(drawn, tmp_path):
    """The per-pair number of every figure is 'SC ±x.x%', the percent of the contrast the metrics average."""
    import re

    import torch
    from helpers import make_adapter

    from eclip.data.synthetic import CLASSNAMES, SceneConfig
    from eclip.demo import story_figure
    from eclip.evaluation.maps import Panel, prepare
    from eclip.methods.base import get_method
    from eclip.shift import shift_figure, synthetic_samples

    samples = synthetic_samples(5, 3, image_size=SceneConfig().image_size)
    panels = [Panel("vanilla · itsm", make_adapter("vit"), get_method("itsm")),
              Panel("other · free attention", make_adapter("vit", seed=1), get_method("free_attention"))]
    shift_figure(samples, panels, CLASSNAMES, tmp_path / "shift.png")
    sample = prepare(samples[0], CLASSNAMES)
    contrasts = [torch.tensor([0.25, -0.1][: len(sample.classes)]) for _ in panels]
    heats = [torch.rand(len(sample.classes), *sample.size) for _ in panels]
    per_class = story_figure(sample, [p.title for p in panels], heats, contrasts, tmp_path / "demo.png")
    image, _, heat = scene()
    overlay.image_figure("img", image, ["square"], np.ones((1, 48, 48), bool), [("m · itsm", heat[None], [0.1234])],
                         tmp_path / "report.png")
    captions = re.compile(r"^SC [+-]\d+\.\d%$")
    for out, _, texts in drawn:
        assert out.is_file() and any(captions.match(t) for t in texts), out
        assert not any("in-out" in t or "contrast" in t for t in texts), (out, texts)
    assert "SC +25.0%" in drawn[1][2] and "SC +12.3%" in drawn[2][2]
    assert per_class[sample.classes[0]]["vanilla · itsm"] == pytest.approx(25.0)

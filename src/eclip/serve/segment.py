"""One segmentation request of the web demo: every pixel takes the text whose map is highest, as `eclip explain --segment`.

The labels come from the library's segmenter with the settings `eclip explain --segment` uses
(`Vocabulary.from_texts`, `protocol_for_texts`, `Segmenter`): the method's own windows and
post-processing from its paper (SCLIP, Wang, Mei, Yuille 2023, arXiv 2312.01597; NACLIP,
Hajimiri, Ben Ayed, Dolz 2024, arXiv 2404.08181; ClearCLIP, Lan et al. 2024, arXiv 2407.12442;
CLIPtrase, Shao, Tian, Zhao, Su 2024, arXiv 2407.08268; any other dense method with SCLIP's),
class 0 the background: a text of its own, or the pixels whose best probability is below a
threshold. What a request writes goes to its folder once: the labels (`.npy`, (H, W) uint8, the
file the command writes), the command's figure (`.png`, the image beside the labels in VOC's
palette with a legend), and two pictures of at most `tile_side` px for the page.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from eclip.errors import MethodError, OptionError, TextInputError
from eclip.serve.inputs import (
    BundledSamples,
    ImageInput,
    ServeLimits,
    check_request_size,
    parse_texts,
    request_input,
    resolve_template,
)
from eclip.serve.models import ModelCache
from eclip.serve.request import SLACK, save_array, stem
from eclip.serve.workspace import Workspace

#: The figure `segmentation_figure` draws for one panel: image, labels, legend, each 2.8 x 3.0 in, at 100 dpi (RGBA).
FIGURE_BYTES = round(3 * 2.8 * 100) * round(3.0 * 100) * 4


def segment_methods() -> list[str]:
    """The methods the Segment view offers: those whose authors published a segmentation protocol first
    (`eclip.segmentation.protocol.PAPERS`), then every other dense method, in the menu's order.

    Dense methods give one map per text from the same features, so an argmax over texts compares
    like with like; a method whose map is the same for every text (attention) or a gradient of each
    text's score on its own would not.
    """
    from eclip.segmentation.protocol import PAPERS
    from eclip.serve.menu import menu

    dense = [item.name for item in menu()["dense"]]
    return [*(name for name in PAPERS if name in dense), *(name for name in dense if name not in PAPERS)]


def parse_background(mode: str | None, text: str | None, threshold: float | None, limits: ServeLimits = ServeLimits()
                     ) -> tuple[str | None, float | None]:
    """The page's background choice -> (background text, None) or (None, threshold), checked in the page's words."""
    if mode == "threshold":
        if threshold is None or not 0.0 <= float(threshold) <= 1.0:
            raise OptionError(f"the probability threshold {threshold} is not between 0 and 1; pick e.g. 0.5, or use a background text")
        return None, float(threshold)
    text = (text or "").strip()
    if not text:
        raise TextInputError("no background text; type one (e.g. 'background') or pick a probability threshold instead")
    if len(text) > limits.max_text_chars:
        raise TextInputError(f"the background text has {len(text)} characters, more than the limit of {limits.max_text_chars}; "
                             "shorten it")
    return text, None


def check_segment_method(model, label: str, name: str, threshold: float | None):
    """The method `name`, able to segment with `model` (a dense method the model's architecture has); `MethodError` otherwise."""
    from eclip.methods.base import get_method

    offered = segment_methods()
    if name not in offered:
        raise MethodError(f"method '{str(name)[:40]}' does not segment here (an argmax over texts needs a dense method); "
                          f"pick one of: {', '.join(offered)}")
    method = get_method(name)
    reason = method.unsupported(model)
    if reason:
        fits = [m for m in offered if get_method(m).unsupported(model) is None]
        raise MethodError(f"{reason} ({label}); pick one of: {', '.join(fits)}")
    if threshold is not None and name == "cliptrase":  # its paper's protocol votes clusters (checked before any model work)
        from eclip.segmentation.predict import NO_THRESHOLD_FOR_CLUSTER_VOTE

        raise MethodError(NO_THRESHOLD_FOR_CLUSTER_VOTE)
    return method


@dataclass
class SegmentResult:
    """What a segmentation request wrote to `folder`, and the share of the pixels each class took.

    `classnames[i]` is class i's text (class 0 the background); `shares[i]` its fraction of the pixels.
    """

    name: str
    folder: Path
    model: str
    method: str
    classnames: list[str]
    shares: list[float]
    size: tuple[int, int]
    threshold: float | None
    seconds: float

    @property
    def legend(self) -> list[str]:
        """Each class as the page names it: with a threshold, class 0 says which pixels it took."""
        if self.threshold is None:
            return list(self.classnames)
        return [f"background (best p < {self.threshold:g})", *self.classnames[1:]]

    @property
    def base(self) -> str:
        return stem(self.name, self.model, self.method)

    @property
    def npy(self) -> Path:
        """(H, W) uint8 labels, as `eclip explain --segment` writes them."""
        return self.folder / f"{self.base}.npy"

    @property
    def png(self) -> Path:
        """The figure `eclip explain --segment` draws: the image, the labels in VOC's palette, the legend."""
        return self.folder / f"{self.base}.png"

    @property
    def labels_tile(self) -> Path:
        return self.folder / f"{self.base}-labels.png"

    @property
    def image_tile(self) -> Path:
        return self.folder / f"{self.base}-image.jpg"

    @property
    def downloads(self) -> list[Path]:
        return [self.npy, self.png]


def segment_bytes(size: tuple[int, int], limits: ServeLimits = ServeLimits()) -> int:
    """An upper bound of the bytes `segment_request` writes for an image of (H, W) `size` (what the server reserves)."""
    from eclip.explain import fit_within

    height, width = fit_within(size, limits.map_side)
    tile_h, tile_w = fit_within(size, limits.tile_side)
    return height * width + tile_h * tile_w * 3 * 2 + FIGURE_BYTES + 4 * SLACK


def segment_request(
    models: ModelCache,
    item: ImageInput,
    texts: Sequence[str],
    template: str | None,
    model_label: str,
    method_name: str,
    folder: Path,
    *,
    background: str | None = "background",
    threshold: float | None = None,
    limits: ServeLimits = ServeLimits(),
) -> SegmentResult:
    """Segment `item` for `texts` with one (model, method) and write the labels, the figure and the page's pictures to `folder`.

    `template` is `resolve_template`'s answer (None: the texts verbatim). An image larger than
    `limits.map_side` a side is segmented at that size, so the labels are at most that size, as
    the maps of the Explain view are.
    """
    from eclip.explain import fit_within
    from eclip.metrics.segmentation import IGNORE_INDEX
    from eclip.precision import autocast, method_precision
    from eclip.segmentation import Segmenter, Vocabulary
    from eclip.segmentation.figure import colorize, segmentation_figure
    from eclip.segmentation.protocol import protocol_for_texts
    from eclip.writing import atomic_write

    started = time.perf_counter()
    vocabulary = Vocabulary.from_texts(list(texts), background=None if threshold is not None else background,
                                       threshold=threshold is not None)
    check_request_size(len(vocabulary.queries), 1, 1, limits)
    if vocabulary.num_classes >= IGNORE_INDEX:
        raise TextInputError(f"{vocabulary.num_classes} classes do not fit in 8-bit labels; give at most {IGNORE_INDEX - 2} texts")
    size = fit_within((item.image.height, item.image.width), limits.map_side)
    image = item.image.convert("RGB")
    if size != (image.height, image.width):
        image = image.resize(size[::-1], Image.BILINEAR, reducing_gap=3.0)
    with models.using(model_label) as model:
        method = check_segment_method(model, model_label, method_name, threshold)
        protocol = protocol_for_texts(method.name, template or "{}", threshold or 0.0, min(model.image_size))
        with autocast(method_precision(method.label, models.precision), model.device):
            labels = Segmenter(model, method, vocabulary, protocol)(image).labels.numpy().astype(np.uint8)
        title = f"{model.name} · {method.label}"
    result = SegmentResult(item.name, folder, model_label, method_name, list(vocabulary.classnames),
                           (np.bincount(labels.ravel(), minlength=vocabulary.num_classes) / labels.size).tolist(), size, threshold, 0.0)
    atomic_write(result.npy, lambda tmp: save_array(tmp, labels))
    segmentation_figure(image, [("segmentation", labels)], vocabulary.classnames, result.png, suptitle=title)
    tile = fit_within(size, limits.tile_side)[::-1]  # (w, h)
    coloured = Image.fromarray(colorize(labels)).resize(tile, Image.NEAREST)
    atomic_write(result.labels_tile, lambda tmp: coloured.save(tmp, format="PNG"))
    shown = image.resize(tile, Image.BILINEAR, reducing_gap=3.0)
    atomic_write(result.image_tile, lambda tmp: shown.save(tmp, format="JPEG", quality=90))
    result.seconds = time.perf_counter() - started
    return result


def segment_inputs(models: ModelCache, workspace: Workspace, samples: BundledSamples, limits: ServeLimits, data: bytes | None,
                   sample_id: str | None, raw_texts: str | None, template_choice: str | None, model_label: str, method: str,
                   background_mode: str | None, background_text: str | None, threshold: float | None) -> SegmentResult:
    """What the Segment view sends, checked before any work (texts, template, background, request size), then segmented
    in a request folder of its own under the workspace's quota."""
    texts = parse_texts(raw_texts, limits)
    template = resolve_template(template_choice, limits)
    background, threshold = parse_background(background_mode, background_text, threshold, limits)
    check_request_size(len(texts) + (background is not None), 1, 1, limits)
    with request_input(workspace, samples, data, sample_id, limits,
                       lambda item: segment_bytes((item.image.height, item.image.width), limits)) as (folder, item):
        return segment_request(models, item, texts, template, model_label, method, folder, background=background,
                               threshold=threshold, limits=limits)

"""The library side of `eclip serve`: one web request in, maps, scores and files out (no Gradio here).

The page (`eclip.app`) only lays out widgets and calls these functions, so everything it shows is
computed, limited and tested here:
- images are decoded by `eclip.data.images.load_image` under the server's own limits (bytes,
  pixels) and explained by `eclip.explain.explain_images`, the code path of `eclip explain`, so a
  map downloaded from the page is the `.npy` the command writes for the same input;
- models are loaded once per server (`ModelCache`) and used by one job at a time each (methods
  hook into a model while they run); text embeddings are cached per model by the adapter;
- the "vanilla vs ECLIP" view pairs a bundled model with its fine-tune through
  `eclip.models.loading.eclip_pairs`, which reads the model folders' configs;
- with a bundled sample (exact masks) each map gets its score contrast, mean of the map inside
  the named class's mask minus outside (ECLIP, Li, Wang, Duan, Li 2022, arXiv 2209.07046,
  section 4; `eclip.shift.pair_contrast`, as `eclip demo` and `eclip shift` compute it);
- nothing here opens a path that came from the browser: uploads arrive as bytes and are written
  to a folder this module made; samples are named by id and looked up in the package.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eclip.data.sample import Sample
from eclip.errors import ImageLoadError, MethodError, ModelLoadError, TextInputError
from eclip.models.adapter import DenseCLIP

log = logging.getLogger(__name__)

#: Prompt choices of the page: label -> what `eclip.prompts.resolve_templates` takes (None: verbatim).
TEMPLATE_CHOICES: dict[str, str | None] = {
    "verbatim": None,
    "a photo of a {}.": "a photo of a {}.",
    "7 templates (ensemble)": "seven",
    "80 ImageNet templates (ensemble)": "imagenet",
}


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask of the server; every limit is an option of `eclip serve`."""

    max_upload_mb: float = 10.0
    max_pixels: int = 16_777_216  # 4096 x 4096: a phone photo passes, a decompression bomb does not
    max_texts: int = 16
    max_text_chars: int = 200
    display_side: int = 512  # overlays shown in the page are at most this many pixels on a side

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


@dataclass
class ImageInput:
    """The image of a request. `path` is a file eclip wrote or ships, never one named by the browser."""

    name: str
    path: Path
    image: Image.Image
    sample: Sample | None = None
    classnames: tuple[str, ...] = ()


@dataclass
class MapPanel:
    """One (model, method, text): its map (h, w) in [0, 1] at display size, its scores and score contrast."""

    model: str
    method: str
    text: str
    heat: np.ndarray
    cosine: float
    probability: float
    contrast_class: str | None = None
    contrast: float | None = None

    @property
    def caption(self) -> str:
        score = f"{self.model} · {self.method} · '{self.text}' · cos {self.cosine:.3f} · p {self.probability:.2f}"
        if self.contrast_class is None:
            return score
        if self.contrast is None:
            return f"{score} · no '{self.contrast_class}' in the image"
        return f"{score} · contrast {self.contrast:+.2f}"


@dataclass
class Figure:
    """One (model, method): its maps (K, H, W) at the image's size saved as `.npy`, and what its overlay
    figure (`.png`, drawn later by `write_figures`) shows: `heats` (K, h, w) at display size and titles."""

    model: str
    method: str
    npy: Path
    png: Path
    heats: np.ndarray
    titles: list[str]
    suptitle: str


@dataclass
class ServeResult:
    """What a request produced, at display size (full-size maps are in the `.npy` files only, so a
    result kept for the downloads step stays small); `panels` run text by text, then method, then model."""

    name: str
    display: Image.Image
    texts: list[str]
    models: list[str]
    methods: list[str]
    panels: list[MapPanel]
    figures: list[Figure]
    seconds: float
    columns: int = field(init=False)

    def __post_init__(self) -> None:
        self.columns = len(self.models) * len(self.methods)


# ------------------------------------------------------------------ inputs
def parse_texts(raw: str | None, limits: ServeLimits) -> list[str]:
    """One text per non-blank line, in order, within the limits; raises `TextInputError`."""
    texts = [line.strip() for line in (raw or "").splitlines() if line.strip()]
    if not texts:
        raise TextInputError("no text given; type what to look for, one text per line, e.g. 'a red star'")
    if len(texts) > limits.max_texts:
        raise TextInputError(f"{len(texts)} texts is more than the limit of {limits.max_texts}; keep at most "
                             f"{limits.max_texts} lines")
    for text in texts:
        if len(text) > limits.max_text_chars:
            raise TextInputError(f"text '{text[:40]}...' has {len(text)} characters, more than the limit of "
                                 f"{limits.max_text_chars}; shorten it")
    return texts


def resolve_template(choice: str | None) -> str | None:
    """A page choice (a label of `TEMPLATE_CHOICES` or a typed template with '{}') -> `encode_prompts`' argument."""
    from eclip.prompts import resolve_templates

    if not choice or choice in TEMPLATE_CHOICES:
        return TEMPLATE_CHOICES.get(choice or "verbatim")
    try:
        resolve_templates(choice)
    except ValueError as err:
        raise TextInputError(str(err)) from None
    return choice


def read_upload(data: bytes | None, folder: Path, limits: ServeLimits) -> ImageInput:
    """Uploaded bytes -> the decoded image, checked against the byte and pixel limits first.

    The bytes are written to `folder` (made by the server) and decoded by `load_image`, the
    decoder of every eclip command, so errors read the same, naming "the upload" instead of the
    server's temporary file.
    """
    from eclip.data.images import load_image

    if not data:
        raise ImageLoadError("no image: upload one or pick a bundled sample")
    if len(data) > limits.max_upload_bytes:
        raise ImageLoadError(f"the upload is {len(data) / 2**20:.1f} MB, above the limit of {limits.max_upload_mb:g} MB; "
                             "send a smaller image (or start eclip serve with a larger --max-upload-mb)")
    path = Path(folder) / "upload"
    path.write_bytes(data)
    try:
        image = load_image(path, max_pixels=limits.max_pixels)
    except ImageLoadError as err:
        raise ImageLoadError(str(err).replace(str(path), "the upload").replace("raise max_pixels", "start eclip serve "
                                                                                   "with a larger --max-pixels")) from None
    return ImageInput(name="upload", path=path, image=image)


class BundledSamples:
    """The sample scenes shipped with eclip, by id (their masks give the score contrasts)."""

    def __init__(self, root: Path | None = None) -> None:
        from eclip.data.bundled import samples_root
        from eclip.data.synthetic import SyntheticDataset

        self.dataset = SyntheticDataset(root or samples_root())
        self.ids = [str(record["id"]) for record in self.dataset.records]

    @property
    def classnames(self) -> tuple[str, ...]:
        return self.dataset.classnames

    def choices(self) -> list[tuple[str, str]]:
        """(label, id) per sample: the id and its caption."""
        return [(f"{record['id']} · {record.get('caption', '')}", str(record["id"])) for record in self.dataset.records]

    def image_path(self, sample_id: str) -> Path:
        if sample_id not in self.ids:
            raise ImageLoadError(f"no bundled sample '{sample_id}'; pick one of {', '.join(self.ids)}")
        return self.dataset.root / "images" / f"{sample_id}.png"

    def get(self, sample_id: str) -> ImageInput:
        """The sample decoded as `eclip explain` decodes a file, with its masks."""
        from eclip.data.images import load_image

        path = self.image_path(sample_id)
        sample = self.dataset[self.ids.index(sample_id)]
        return ImageInput(name=sample_id, path=path, image=load_image(path), sample=sample, classnames=self.classnames)

    def classes_present(self, sample_id: str) -> list[str]:
        """Class names with a mask in the sample, in the dataset's order (the page's default texts)."""
        self.image_path(sample_id)
        masks = self.dataset[self.ids.index(sample_id)].masks
        return [name for name in self.classnames if name in masks]


def contrast_class(text: str, classnames: Sequence[str]) -> str | None:
    """The one class name `text` names as a word ('a red star' -> 'star'), or None if none or several."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    named = [name for name in classnames if set(name.lower().split()) <= words]
    return named[0] if len(named) == 1 else None


# ------------------------------------------------------------------ models
class ModelCache:
    """The models a server offers, each loaded once on first use and then kept.

    Offered: the bundled models and the extra (name, pretrained) pairs given at start-up, under
    their labels (name, or name:pretrained). `using` holds a per-model lock while a job runs, so
    methods that hook into a model never overlap on it; different models run in parallel.
    """

    def __init__(self, extra: Sequence[tuple[str, str | None]] = (), device: str = "cpu") -> None:
        from eclip.models.loading import bundled_models, eclip_pairs

        self.device = device
        self.specs: dict[str, tuple[str, str | None]] = {}
        for name, pretrained in extra:
            self.specs[f"{name}:{pretrained}" if pretrained else name] = (name, pretrained)
        self.extra = list(self.specs)  # the start-up models, first in the picker
        for name in bundled_models():
            self.specs.setdefault(name, (name, None))
        self.pairs = eclip_pairs()
        self._models: dict[str, DenseCLIP] = {}
        self._locks: dict[str, threading.Lock] = {label: threading.Lock() for label in self.specs}
        self._loading = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return list(self.specs)

    def get(self, label: str) -> DenseCLIP:
        """The model offered as `label`, loading it the first time."""
        from eclip.models.loading import load_model

        if label not in self.specs:
            raise ModelLoadError(f"model '{label}' is not offered by this server; pick one of {', '.join(self.specs)}")
        with self._loading:
            if label not in self._models:
                name, pretrained = self.specs[label]
                started = time.perf_counter()
                self._models[label] = load_model(name, pretrained, device=self.device)
                log.info("loaded %s in %.1f s", label, time.perf_counter() - started)
            return self._models[label]

    @contextmanager
    def using(self, label: str) -> Iterator[DenseCLIP]:
        model = self.get(label)
        with self._locks[label]:
            yield model

    def comparison(self, label: str) -> list[str]:
        """[vanilla, ECLIP fine-tune] for a model that is either; `MethodError` if it has no pair."""
        for vanilla, tuned in self.pairs.items():
            if label in (vanilla, tuned) and vanilla in self.specs and tuned in self.specs:
                return [vanilla, tuned]
        offered = ", ".join(f"{v} / {t}" for v, t in self.pairs.items()) or "none in this installation"
        raise MethodError(f"'{label}' has no bundled ECLIP fine-tune to compare with; pick a paired model ({offered}) "
                          "or untick the comparison")


# ------------------------------------------------------------------ a request
class Workspace:
    """Per-request folders under one temporary root; only the newest `keep` are kept (disk stays bounded)."""

    def __init__(self, keep: int = 64) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="eclip-serve-"))
        self.keep = keep
        self._folders: deque[Path] = deque()
        self._lock = threading.Lock()

    def new_folder(self) -> Path:
        folder = Path(tempfile.mkdtemp(dir=self.root))
        with self._lock:
            self._folders.append(folder)
            while len(self._folders) > self.keep:
                shutil.rmtree(self._folders.popleft(), ignore_errors=True)
        return folder

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def check_methods(model: DenseCLIP, label: str, names: Sequence[str]) -> None:
    """Every method known and defined for the model's architecture, before any work starts."""
    from eclip.methods.base import available_methods

    if not names:
        raise MethodError("no method picked; tick at least one, e.g. itsm")
    known = available_methods()
    for name in names:
        if name not in known:
            raise MethodError(f"unknown method '{name}'; pick one of {', '.join(known)}")
        if model.arch not in known[name].archs:
            fits = [m for m, cls in known.items() if model.arch in cls.archs]
            raise MethodError(f"method '{name}' is not defined for {model.arch} models such as {label}; "
                              f"untick it or pick one of {', '.join(fits)}")


def explain_request(
    models: ModelCache,
    item: ImageInput,
    texts: Sequence[str],
    template: str | None,
    model_labels: Sequence[str],
    method_names: Sequence[str],
    folder: Path,
    *,
    progress: Callable[[float, str], None] | None = None,
    limits: ServeLimits = ServeLimits(),
) -> ServeResult:
    """Explain `item` for `texts` with every (model, method): maps, scores, contrasts and `.npy` files.

    The maps come from `eclip.explain.explain_images` (the path of `eclip explain`); each
    (model, method) writes FOLDER/<image>-<model>-<method>.npy, (K, H, W) float32 as the command
    writes it, and its score contrasts are taken on those full-size maps; only display-size copies
    (at most `limits.display_side` pixels a side) are kept. The overlay PNGs cost a figure each and
    are drawn by `write_figures` afterwards.
    """
    from eclip.explain import explain_images
    from eclip.methods.base import get_method
    from eclip.prompts import encode_prompts

    started = time.perf_counter()
    texts = list(texts)
    for label in model_labels:
        check_methods(models.get(label), label, method_names)
    classes = [contrast_class(t, item.classnames) if item.sample else None for t in texts]
    display = display_size(item.image.size, limits.display_side)
    done: dict[tuple[str, str], tuple[Figure, np.ndarray, np.ndarray, list[float | None]]] = {}
    steps = len(model_labels) * len(method_names)
    for label in model_labels:
        with models.using(label) as model:
            features = encode_prompts(model, texts, template)
            for name in method_names:
                if progress is not None:
                    progress(len(done) / steps, f"{label} · {name}")
                explained = next(explain_images(model, get_method(name), [(item.path, item.image)], features, texts))
                stem = f"{_slug(item.name)}-{_slug(label)}-{name}"
                np.save(folder / f"{stem}.npy", explained.maps)
                contrasts = [_contrast(heat, item, cls) for heat, cls in zip(explained.maps, classes)]
                titles = [f"{t}\ncos {c:.3f} · p {p:.2f}" for t, c, p in zip(texts, explained.cosine, explained.probability)]
                figure = Figure(label, name, folder / f"{stem}.npy", folder / f"{stem}.png", shrink(explained.maps, display),
                                titles, f"{model.name} · {name}")
                done[label, name] = (figure, explained.cosine, explained.probability, contrasts)
    panels = []
    for k, text in enumerate(texts):
        for name in method_names:
            for label in model_labels:
                figure, cosine, probability, contrasts = done[label, name]
                panels.append(MapPanel(label, name, text, figure.heats[k], float(cosine[k]), float(probability[k]),
                                       classes[k], contrasts[k]))
    return ServeResult(item.name, item.image.resize(display, Image.BILINEAR) if display != item.image.size else item.image,
                       texts, list(model_labels), list(method_names), panels, [done[key][0] for key in done],
                       time.perf_counter() - started)


def _contrast(heat: np.ndarray, item: ImageInput, cls: str | None) -> float | None:
    """Score contrast of one full-size map for the class its text names; None without a mask for it."""
    from eclip.shift import pair_contrast

    if cls is None or item.sample is None or cls not in item.sample.masks:
        return None
    value = pair_contrast(torch.from_numpy(heat), item.sample, cls)
    return None if np.isnan(value) else value


def display_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(W, H) of an image shrunk to at most `side` pixels on its longer side (never enlarged)."""
    scale = min(1.0, side / max(size))
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale))) if scale < 1 else tuple(size)


def shrink(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, H, W) maps -> (K, h, w) at `size` (W, H), bilinear; the same array when the size already fits."""
    if (maps.shape[2], maps.shape[1]) == tuple(size):
        return maps
    return np.stack([np.asarray(Image.fromarray(m).resize(size, Image.BILINEAR)) for m in maps])


def write_figures(result: ServeResult) -> list[Path]:
    """The overlay PNG of each (model, method): the figure `eclip explain` draws, at display size.

    Returns the downloads: each `.npy` followed by its `.png`.
    """
    from eclip.report.overlay import overlay_panels

    files: list[Path] = []
    for figure in result.figures:
        overlay_panels(result.display, figure.heats, figure.titles, figure.png, suptitle=figure.suptitle)
        files += [figure.npy, figure.png]
    return files

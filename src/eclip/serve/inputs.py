"""What a web request brings: its limits, texts, prompt choice and image (an upload or a bundled sample).

Uploads arrive as bytes and are decoded by `eclip.data.images.load_image` under the server's own
limits; samples are named by id and looked up in the package: no path comes from the browser.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from eclip.data.sample import Sample
from eclip.errors import ImageLoadError, TextInputError

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
    from eclip.writing import atomic_write

    if not data:
        raise ImageLoadError("no image: upload one or pick a bundled sample")
    if len(data) > limits.max_upload_bytes:
        raise ImageLoadError(f"the upload is {len(data) / 2**20:.1f} MB, above the limit of {limits.max_upload_mb:g} MB of "
                             "this server; send a smaller image")
    path = atomic_write(Path(folder) / "upload", lambda tmp: tmp.write_bytes(data))
    try:
        image = load_image(path, max_pixels=limits.max_pixels)
    except ImageLoadError as err:  # the page's user can send another image, not change the server's limit
        raise ImageLoadError(str(err).replace(str(path), "the upload").replace(", or raise max_pixels if you trust it", "")) from None
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

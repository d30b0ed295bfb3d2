"""What a web request brings: its limits, texts, prompt choice and image (an upload or a bundled sample).

Uploads arrive as bytes and are decoded by `eclip.data.images.load_image` under the server's own
limits; samples are named by id and looked up in the package: no path comes from the browser.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from eclip.data.sample import Sample
from eclip.errors import ImageLoadError, MethodError, OptionError, TextInputError
from eclip.serve.workspace import Workspace

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
    max_template_chars: int = 200  # the tokenizer's time grows faster than the text's length
    max_maps: int = 64  # texts x methods x models in one request (16 texts, 2 methods, vanilla vs ECLIP)
    map_side: int = 1024  # longest side of the maps written as .npy, as `eclip explain --map-size`
    display_side: int = 512  # longest side of the image in the overlay figures of the downloads
    tile_side: int = 256  # longest side of a map tile shown in the page

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


def resolve_template(choice: str | None, limits: ServeLimits = ServeLimits()) -> str | None:
    """A page choice (a label of `TEMPLATE_CHOICES`, or a typed template with '{}') -> `encode_prompts`' argument.

    A typed template is checked here, in the page's words: its length, a '{}' that `str.format` fills
    (not '{{}}', which gives every text the same prompt) and no other field.
    """
    if not choice or choice in TEMPLATE_CHOICES:
        return TEMPLATE_CHOICES.get(choice or "verbatim")
    listed = "; or pick one from the list: " + ", ".join(TEMPLATE_CHOICES)
    if len(choice) > limits.max_template_chars:
        raise TextInputError(f"the prompt template has {len(choice)} characters, more than the limit of "
                             f"{limits.max_template_chars}; shorten it{listed}")
    shown = choice if len(choice) <= 40 else choice[:40] + "..."
    try:
        filled = choice.format("\0")
    except (IndexError, KeyError, ValueError):
        raise TextInputError(f"the prompt template '{shown}' is not a template: use {{}} once where the text goes and no other "
                             f"braces, e.g. 'a photo of a {{}}.'{listed}") from None
    if "\0" not in filled:
        raise TextInputError(f"the prompt template '{shown}' has no {{}} where the text goes, so every text would get the same "
                             f"prompt; write e.g. 'a sketch of a {{}}.'{listed}")
    return choice


def parse_methods(names: Sequence[str] | None, known: Sequence[str], limits: ServeLimits = ServeLimits()) -> list[str]:
    """The picked methods, each once, in order: at most as many names as there are methods, each a known one."""
    names = [str(name) for name in names or []]
    if len(names) > len(known):
        raise MethodError(f"{len(names)} methods named, more than the {len(known)} there are; name each method once")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise MethodError(f"unknown method '{unknown[0][:40]}'; pick from: {', '.join(known)}")
    return list(dict.fromkeys(names))


def check_request_size(texts: int, methods: int, models: int, limits: ServeLimits = ServeLimits()) -> None:
    """Refuse a request of more maps (texts x methods x models) than the server's limit, before any work."""
    if texts * methods * models > limits.max_maps:
        raise OptionError(f"{texts} text(s) x {methods} method(s) x {models} model(s) is {texts * methods * models} maps, "
                          f"more than this server's limit of {limits.max_maps} per request; ask for fewer texts or methods")


def upload_too_big(size: int, limits: ServeLimits) -> str | None:
    """The message for an upload of `size` bytes over the limit (the page shows it for uploads Gradio refuses itself), or None."""
    if size <= limits.max_upload_bytes:
        return None
    return f"the upload is {size / 2**20:.1f} MB, above the limit of {limits.max_upload_mb:g} MB of this server; send a smaller image"


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
    too_big = upload_too_big(len(data), limits)
    if too_big:
        raise ImageLoadError(too_big)
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


@contextmanager
def request_input(workspace: Workspace, samples: BundledSamples, data: bytes | None, sample_id: str | None, limits: ServeLimits,
                  reserve: Callable[[ImageInput], int]) -> Iterator[tuple[Path, ImageInput]]:
    """A new request folder and the request's image (the upload, written there and decoded, or else the sample named by id).

    `reserve(image)` bytes, an upper bound of what the request will write, are set aside before
    the caller writes anything (`OutputError` if they do not fit); the folder is removed if the
    request fails, and counted at its real size once it is done.
    """
    from eclip.errors import OutputError

    if data is None and not sample_id:
        raise ImageLoadError("no image: upload one or pick a bundled sample")
    folder = workspace.new_folder(len(data) if data is not None else 0)
    try:
        item = read_upload(data, folder, limits) if data is not None else samples.get(str(sample_id))
        if not workspace.reserve(folder, reserve(item)):
            raise OutputError("the server's disk for results is full of requests still running; try again in a moment")
        yield folder, item
    except BaseException:
        workspace.discard(folder)
        raise
    finally:
        workspace.settle(folder)

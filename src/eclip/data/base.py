"""The evaluation dataset: one interface over VOC, COCO, Pascal Context, the synthetic scenes and any dataset added.

Why one interface: `eclip evaluate` explains every class present in an image with the prompts of
*all* the dataset's classes (Li, Wang, Duan, Li 2022, arXiv 2209.07046, section 4), so it needs the
same four things from every dataset: the class list in label order (`classnames`), the number of
images (`len`), the images one at a time as `Sample`s (iteration, which never holds more than one
decoded image), and the images it could not use (`skipped`). `iter_from(n)` resumes an
interrupted evaluation after its first `n` images without decoding them.

An image that cannot be used (unreadable file, missing mask, a label no class has) is a counted
skip: iteration logs it, appends (image id, reason) to `skipped` and goes on, so the CLI can print
the count at the end. Indexing (`ds[i]`) raises the same `SkippedImage` instead. A folder that is
not a dataset at all (wrong root, no split file, no annotation file) raises `DatasetError` when
the dataset is opened, naming the path and the layout expected.

A new dataset subclasses `EvalDataset` in its own module (using the helpers below) and is added
to the table in `registry`.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path

from PIL import Image

from eclip.data.images import load_image
from eclip.data.sample import Sample
from eclip.errors import DatasetError, EclipError

logger = logging.getLogger(__name__)



class SkippedImage(DatasetError):
    """One image of an otherwise valid dataset that cannot be evaluated; iteration counts it and goes on."""

    def __init__(self, image_id: str, reason: str) -> None:
        super().__init__(f"image {image_id}: {reason}")
        self.image_id, self.reason = image_id, reason


class EvalDataset:
    """Base of the evaluation datasets: an ordered list of image ids, each loaded on demand.

    Subclasses fill `ids` (the canonical order, already cut to `limit`) and `classnames`, and
    implement `load(index)`, which decodes one image and its masks or raises `SkippedImage`.

    Attributes:
        name: the registry name ("voc", "coco", "context", "synthetic").
        root: the dataset folder actually read (after descending into e.g. VOCdevkit/VOC2012).
        classnames: every class of the dataset, in label order; the text prompts of an evaluation.
        ids: the image ids iterated, in order.
        skipped: (image id, reason) of each image the latest iteration could not use.
    """

    name: str = ""

    def __init__(self, root: Path, ids: Sequence[str], classnames: Sequence[str], limit: int | None = None) -> None:
        if limit is not None and limit < 0:
            raise DatasetError(f"limit={limit}: the number of images to take must be >= 0 (or None for all)")
        self.root = root
        self.ids: list[str] = list(ids)[:limit]
        self.classnames: list[str] = list(classnames)
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, classes={len(self.classnames)})"

    def load(self, index: int) -> Sample:
        """Decode image `index` and its masks; raise `SkippedImage` when it cannot be used."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        return self.load(index % len(self))

    def __iter__(self) -> Iterator[Sample]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Sample]:
        """Yield the samples from image `start` on; the first `start` images are not even opened.

        `skipped` is reset when iteration begins, so it lists the skips of this pass only (an
        evaluation that resumes keeps the skips of its earlier passes itself).
        """
        if start < 0:
            raise DatasetError(f"start={start}: resume from an image index >= 0")
        self.skipped = []
        for index in range(start, len(self)):
            try:
                sample = self.load(index)
            except SkippedImage as err:
                logger.warning("skipping %s: %s", err.image_id, err.reason)
                self.skipped.append((err.image_id, err.reason))
                continue
            yield sample


# ----------------------------------------------------------------------------------------------------------------
# Helpers the loaders share


def read_classnames(name: str) -> list[str]:
    """The class names shipped in `eclip/data/classnames/<name>.txt`, one per line; line i is label i + 1.

    The files hold readable names ("dining table", not "diningtable") because they become prompts.
    """
    text = resources.files("eclip.data").joinpath("classnames", f"{name}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def find_root(root: str | Path, marker: str, descend: Sequence[str], layout: str) -> Path:
    """The folder under `root` (itself or one of `descend`) that contains `marker`.

    Lets users pass either the dataset folder itself or the folder they downloaded around it
    (`VOCdevkit` instead of `VOCdevkit/VOC2012`). Raises `DatasetError` describing `layout`.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; expected {layout}")
    for sub in ("", *descend):
        if (root / sub / marker).exists():
            return root / sub
    raise DatasetError(f"{root}: no {marker} found here{' or in ' + ', '.join(descend) if descend else ''}; expected {layout}")


def read_split(path: Path, layout: str) -> list[str]:
    """Image ids listed one per line in a split file (VOC's ImageSets/*/val.txt), in file order."""
    if not path.is_file():
        raise DatasetError(f"{path}: split file missing; expected {layout}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: unreadable split file ({err}); expected one image id per line") from err
    ids = [line.split()[0] for line in lines if line.strip()]
    if not ids:
        raise DatasetError(f"{path}: split file lists no image; expected one image id per line")
    return ids


def load_rgb(path: Path, image_id: str) -> Image.Image:
    """`load_image` on the stored pixel grid (masks are drawn on it, EXIF rotation would misalign
    them), with a bad file turned into a counted skip of `image_id`."""
    try:
        return load_image(path, upright=False)
    except EclipError as err:
        raise SkippedImage(image_id, str(err).split("; ")[0]) from err

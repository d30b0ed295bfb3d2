"""Reading a dataset folder of synthetic scenes (layout in `folder`), checked when it is opened.

Everything read from meta.json and annotations.json is checked for its type when the dataset is
opened, so a damaged or hand-edited file fails at once in one line naming the file and the field
(`images[3].objects[0].colour`), not later inside an evaluation. A missing or unreadable PNG is
a per-image problem: iteration counts it and goes on.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from eclip.data.base import EvalDataset, SkippedImage
from eclip.data.images import load_image
from eclip.data.sample import Sample
from eclip.data.synthetic.config import SceneConfig
from eclip.data.synthetic.folder import FIX, FORMAT, FORMAT_VERSION
from eclip.errors import DatasetError, EclipError

logger = logging.getLogger(__name__)


class _BadFile(DatasetError):
    """One unreadable file of an otherwise valid dataset: iteration records and skips it."""

    def __init__(self, path: Path, reason: str, root: Path) -> None:
        super().__init__(f"{path}: {reason}; {FIX.format(root=root)}")
        self.path, self.reason = path, reason


def _read_json(path: Path, root: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path}: missing, so {root} is not a complete synthetic dataset; {FIX.format(root=root)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: unreadable JSON ({err}); {FIX.format(root=root)}") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object, got a {type(data).__name__}; {FIX.format(root=root)}")
    return data


def _record_problem(record: object, config: SceneConfig) -> str | None:
    """What is wrong with one entry of annotations.json's "images" (a field and why), or None."""
    if not isinstance(record, dict):
        return f"is a {type(record).__name__}, not an object"
    image_id = record.get("id")
    if not isinstance(image_id, str) or not image_id or image_id.startswith(".") or any(c in image_id for c in "/\\\0"):
        return f".id={image_id!r} is not a file name (the stem of images/<id>.png)"
    objects = record.get("objects", [])
    if not isinstance(objects, list):
        return f".objects is a {type(objects).__name__}, not a list"
    for k, obj in enumerate(objects):
        if not isinstance(obj, dict):
            return f".objects[{k}] is a {type(obj).__name__}, not an object"
        for field, known in (("shape", config.shapes), ("colour", config.colours)):
            if field not in obj:
                return f".objects[{k}] has no {field!r}"
            if obj[field] not in known:
                return f".objects[{k}].{field}={obj[field]!r} is none of the config's {field}s {list(known)}"
    return None


class SyntheticDataset:
    """A folder written by `write_dataset`, yielding `Sample`s with the masks of the present classes.

    Indexing (`ds[i]`) raises `DatasetError` for a bad file; iterating records each bad file in
    `skipped` as (path, reason), logs it and goes on, so counts can be reported at the end.

    Attributes:
        meta: meta.json as read; `config` the SceneConfig the scenes were drawn with.
        classnames: the class of each mask index (index i + 1 = classnames[i]).
        records: annotations.json's entries, one per image, in order.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        fix = FIX.format(root=self.root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such folder; {fix}")
        meta_path, annotations_path = self.root / "meta.json", self.root / "annotations.json"
        self.meta = _read_json(meta_path, self.root)
        if self.meta.get("format") != FORMAT or not isinstance(self.meta.get("version"), int):
            raise DatasetError(f"{meta_path}: not an {FORMAT} meta file; {fix}")
        if self.meta["version"] > FORMAT_VERSION:
            raise DatasetError(f"{meta_path}: format version {self.meta['version']} is newer than this "
                               f"eclip reads ({FORMAT_VERSION}); upgrade eclip")
        if "config" not in self.meta:
            raise DatasetError(f"{meta_path}: no 'config' (the scene config the images were drawn with); {fix}")
        try:
            self.config = SceneConfig.from_dict(self.meta["config"])
        except DatasetError as err:
            raise DatasetError(f"{meta_path}: 'config': {err}; {fix}") from err
        classnames = self.meta.get("classnames")
        if not (isinstance(classnames, list) and classnames and all(isinstance(c, str) for c in classnames)):
            raise DatasetError(f"{meta_path}: 'classnames' is not a list of class names; {fix}")
        self.classnames: tuple[str, ...] = tuple(classnames)
        records = _read_json(annotations_path, self.root).get("images")
        if not isinstance(records, list) or len(records) != self.meta.get("n"):
            raise DatasetError(f"{annotations_path}: does not list the {self.meta.get('n')} images "
                               f"meta.json announces; {fix}")
        for i, record in enumerate(records):
            problem = _record_problem(record, self.config)
            if problem:
                raise DatasetError(f"{annotations_path}: images[{i}]{' ' if problem[0] != '.' else ''}{problem}; {fix}")
        self.records: list[dict] = records
        self.skipped: list[tuple[Path, str]] = []

    def __len__(self) -> int:
        return len(self.records)

    def _png(self, folder: str, index: int, mode: set[str]) -> tuple[Path, Image.Image]:
        path = self.root / folder / f"{self.records[index]['id']}.png"
        if not path.is_file():
            raise _BadFile(path, "missing file", self.root)
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode not in mode:
                    raise _BadFile(path, f"mode {im.mode}, expected {sorted(mode)}", self.root)
                return path, im.copy()
        except (OSError, SyntaxError, ValueError) as err:
            raise _BadFile(path, f"unreadable PNG ({err})", self.root) from err

    def _index_map(self, folder: str, index: int, limit: int, shape: tuple[int, int]) -> np.ndarray:
        path, im = self._png(folder, index, {"L", "P"})
        values = np.asarray(im, dtype=np.uint8)
        if values.shape != shape:
            raise _BadFile(path, f"size {values.shape[::-1]} differs from its image's {shape[::-1]}", self.root)
        if values.max(initial=0) > limit:
            raise _BadFile(path, f"index {int(values.max())} is not one of 0..{limit}", self.root)
        return values

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        index %= len(self)
        record = self.records[index]
        path = self.root / "images" / f"{record['id']}.png"
        if not path.is_file():
            raise _BadFile(path, "missing file", self.root)
        try:
            image = load_image(path)
        except EclipError as err:  # keep load_image's reason, replace its fix by ours
            raise _BadFile(path, str(err).removeprefix(f"{path}: ").split("; ")[0], self.root) from err
        labels = self._index_map("masks", index, len(self.classnames), (image.height, image.width))
        masks = {self.classnames[c - 1]: labels == c for c in np.unique(labels) if c > 0}
        meta = {"caption": record.get("caption", ""), "background": record.get("background"),
                "objects": record.get("objects", []), "seed": record.get("seed")}
        return Sample(image_id=record["id"], image=image, masks=masks, ignore=None, meta=meta)

    def instances(self, index: int) -> np.ndarray:
        """(H, W) uint8 instance map of image `index`: 0 background, k = objects[k - 1]."""
        limit = len(self.records[index].get("objects", []))
        size = self.config.image_size
        return self._index_map("instances", index, limit, (size, size))

    def __iter__(self) -> Iterator[Sample]:
        self.skipped = []
        for index in range(len(self)):
            try:
                yield self[index]
            except _BadFile as err:
                logger.warning("skipping %s: %s", err.path, err.reason)
                self.skipped.append((err.path, err.reason))


class SyntheticEval(EvalDataset):
    """A folder written by `eclip synth` as an evaluation dataset, through `SyntheticDataset` (which reads and checks it)."""

    name = "synthetic"

    def __init__(self, root: str | Path, limit: int | None = None, split: str | None = None) -> None:
        if split is not None:
            raise DatasetError(f"split={split!r}: a synthetic dataset folder has no splits; write one folder per split")
        self.dataset = SyntheticDataset(root)
        super().__init__(self.dataset.root, [r["id"] for r in self.dataset.records], self.dataset.classnames, limit)

    def load(self, index: int) -> Sample:
        try:
            sample = self.dataset[index]
        except _BadFile as err:
            raise SkippedImage(self.ids[index], f"{err.path}: {err.reason}") from err
        sample.meta.update(dataset=self.name, index=index)
        return sample

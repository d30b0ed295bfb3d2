"""Image-text pairs for contrastive training, addressed by batch index.

A source returns batch `i` the same way every time, so a resumed run sees exactly the batches it
would have seen, and `torchrun` ranks can take disjoint slices of one global batch (`part`).
`eclip.data.loader.TrainingFeed` calls them in DataLoader worker processes.

Sources: synthetic scenes (`SyntheticPairs`, endless and seeded), a CSV of `image_path,caption`
(`CsvPairs`) and a folder of images with same-stem `.txt` captions (`FolderPairs`); `open_pairs`
also opens WebDataset shards, which are streamed instead (`eclip.data.shard_stream`).
File sources reshuffle every epoch with a seeded permutation. Bad entries (missing files, empty
or binary captions, undecodable images) are logged, recorded in `skipped` and replaced by the
next good item, deterministically, so batches keep their size and a resumed run stays exact.
Images come as uint8 (0..255): a quarter of the bytes between processes and to the GPU.
"""
from __future__ import annotations

import csv
import glob
import io
import logging
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from eclip.errors import DatasetError, ImageLoadError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def record_skip(skipped: list[tuple[str, str]], name: str, reason: str) -> None:
    """Log and record one bad entry of a pair source (`skipped`: the source's list the CLI reports)."""
    reason = reason.removeprefix(f"{name}: ")  # an ImageLoadError names the file already
    log.warning("skipped %s: %s", name, reason)
    skipped.append((name, reason))


class PairSource(Protocol):
    """Anything that yields (images (N, 3, H, W), N captions) for a batch index: images uint8 (0..255) or float in [0, 1]."""

    def batch(self, index: int, size: int) -> tuple[torch.Tensor, list[str]]: ...


def batch_part(source: PairSource, index: int, size: int, start: int, stop: int) -> tuple[torch.Tensor, list[str]]:
    """Items [start, stop) of batch `index` of `size` (a DDP rank's slice), without making the rest if possible."""
    part = getattr(source, "part", None)
    if part is not None:
        return part(index, size, start, stop)
    images, captions = source.batch(index, size)
    return images[start:stop], list(captions[start:stop])


class SyntheticPairs:
    """Synthetic scenes and their captions, an endless seeded stream (see `eclip.data.synthetic`).

    Scene `i` is a pure function of (seed, i), so batches are the same in any process and with any
    number of DataLoader workers drawing them.
    """

    def __init__(self, seed: int = 0, **scene_options) -> None:
        from eclip.data.synthetic import SceneConfig

        self.seed = seed
        self.config = SceneConfig(**scene_options)
        self.skipped: list[tuple[str, str]] = []

    def batch(self, index: int, size: int) -> tuple[torch.Tensor, list[str]]:
        return self.part(index, size, 0, size)

    def part(self, index: int, size: int, start: int, stop: int) -> tuple[torch.Tensor, list[str]]:
        """Scenes index*size + [start, stop) as uint8 (n, 3, H, W): each scene is drawn from its own global index."""
        from eclip.data.synthetic import batch_of_scenes

        images, captions = batch_of_scenes(self.seed, index * size + start, stop - start, self.config)
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous(), list(captions)


def decode_rgb(data: bytes | Path, name: str, size: int) -> torch.Tensor:
    """Image bytes or file -> (3, size, size) uint8 (bicubic resize, no crop).

    Raises ImageLoadError naming `name` for anything PIL cannot decode.
    """
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            image = image.convert("RGB").resize((size, size), Image.BICUBIC)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageLoadError(f"{name}: cannot decode image ({err}); re-encode or remove it") from err
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class FilePairs:
    """A finite list of (image, caption) items, reshuffled each epoch with a seeded permutation.

    Subclasses fill `names` (for messages), `captions` and `_read(i) -> bytes | Path`.
    """

    def __init__(self, image_size: int, seed: int = 0) -> None:
        self.image_size = int(image_size)
        self.seed = seed
        self.names: list[str] = []
        self.captions: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self._bad: set[int] = set()
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def _read(self, i: int) -> bytes | Path:
        raise NotImplementedError

    def _skip(self, name: str, reason: str) -> None:
        record_skip(self.skipped, name, reason)

    def _check_not_empty(self, where: str) -> None:
        if not self.names:
            raise DatasetError(f"{where}: no usable image-text pairs ({len(self.skipped)} skipped); check the layout")

    def _item_at(self, position: int) -> int:
        """The item index at global position `position` (epoch = position // len)."""
        n = len(self)
        epoch = position // n
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(n, generator=g))
        return int(self._perm[1][position % n])

    def _load(self, i: int) -> tuple[torch.Tensor, str]:
        """Item i, or the next good item after it (in file order) when i cannot be decoded."""
        for step in range(len(self)):
            j = (i + step) % len(self)
            if j in self._bad:
                continue
            try:
                return decode_rgb(self._read(j), self.names[j], self.image_size), self.captions[j]
            except (ImageLoadError, OSError, KeyError) as err:
                self._bad.add(j)
                self._skip(self.names[j], str(err))
        raise DatasetError(f"no image of this source can be decoded ({len(self._bad)} bad); check the files")

    def part(self, index: int, size: int, start: int, stop: int) -> tuple[torch.Tensor, list[str]]:
        items = [self._load(self._item_at(index * size + k)) for k in range(start, stop)]
        return torch.stack([img for img, _ in items]), [cap for _, cap in items]

    def batch(self, index: int, size: int) -> tuple[torch.Tensor, list[str]]:
        return self.part(index, size, 0, size)


def _clean_caption(text: str) -> str:
    return " ".join(text.split())


def read_caption(data: bytes) -> str | None:
    """A caption file's bytes -> its text with whitespace collapsed, or None when the file is not text.

    Binary data (NUL bytes, bytes that are not UTF-8, control characters other than whitespace)
    is not taken as a caption: a stray image renamed `.txt` would otherwise train on noise.
    A UTF-8 byte-order mark, as spreadsheets and Windows editors write, is dropped.
    """
    if b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if any(unicodedata.category(ch) == "Cc" and not ch.isspace() for ch in text):
        return None
    return _clean_caption(text)


NOT_TEXT = "caption file is binary, not UTF-8 text"


class CsvPairs(FilePairs):
    """A CSV with rows `image_path,caption` (optional header); relative paths are from the CSV's folder.

    Spreadsheets' CSVs read as written: a UTF-8 byte-order mark before the header and CRLF line
    ends are accepted, and quoted captions may span lines.
    """

    def __init__(self, path: Path, image_size: int, seed: int = 0) -> None:
        super().__init__(image_size, seed)
        path = Path(path)
        try:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                reader = csv.reader(handle)
                rows = [(reader.line_num, row) for row in reader]  # line_num: the row's last line in the file
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise DatasetError(f"{path}: cannot read the CSV ({err}); give a UTF-8 file of image_path,caption rows") from err
        if rows and [c.strip().lower() for c in rows[0][1][:2]] == ["image_path", "caption"]:
            rows = rows[1:]
        self.paths: list[Path] = []
        for line, row in rows:
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) < 2 or not row[1].strip():
                self._skip(f"{path}:{line}", "no caption (the caption field is empty)")
                continue
            image = Path(row[0].strip()).expanduser()
            image = image if image.is_absolute() else path.parent / image
            if not image.is_file():
                self._skip(str(image), "file not found")
                continue
            self.paths.append(image)
            self.names.append(str(image))
            self.captions.append(_clean_caption(",".join(row[1:])))
        self._check_not_empty(str(path))

    def _read(self, i: int) -> Path:
        return self.paths[i]


class FolderPairs(FilePairs):
    """A folder (searched recursively) of images, each with a same-stem `.txt` caption beside it."""

    def __init__(self, folder: Path, image_size: int, seed: int = 0) -> None:
        super().__init__(image_size, seed)
        folder = Path(folder)
        self.paths: list[Path] = []
        for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            text = image.with_suffix(".txt")
            caption = read_caption(text.read_bytes()) if text.is_file() else ""
            if caption is None:
                self._skip(str(image), f"{text.name}: {NOT_TEXT}")
                continue
            if not caption:
                self._skip(str(image), f"no caption ({text.name} missing or empty)")
                continue
            self.paths.append(image)
            self.names.append(str(image))
            self.captions.append(caption)
        self._check_not_empty(str(folder))

    def _read(self, i: int) -> Path:
        return self.paths[i]


def expand_shards(spec: str) -> list[Path]:
    """`a.tar`, a folder of `*.tar`, a glob, or a brace range `shard-{000..009}.tar` -> existing tar paths."""
    match = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
    if match:
        lo, hi = match.group(1), match.group(2)
        width = len(lo)
        names = [spec[: match.start()] + str(i).zfill(width) + spec[match.end():] for i in range(int(lo), int(hi) + 1)]
        return [Path(n) for n in names if Path(n).is_file()]
    path = Path(spec).expanduser()
    if path.is_dir():
        return sorted(path.glob("*.tar"))
    if any(ch in spec for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(str(path)) if p.endswith(".tar"))
    return [path] if path.is_file() else []


def open_pairs(spec: str, image_size: int, seed: int = 0,
               synthetic: Callable[[], PairSource] | None = None) -> PairSource:
    """A pair source from a `--data` value: `synthetic`, a `.csv`, WebDataset shards, or a folder.

    A folder holding `.tar` files is streamed as WebDataset shards, any other folder read as images with
    same-stem `.txt` captions. `synthetic` builds the synthetic source (its options live in the CLI).
    """
    if spec == "synthetic":
        if synthetic is None:
            raise DatasetError("synthetic pairs need their scene options; use SyntheticPairs directly")
        return synthetic()
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DatasetError(f"{path}: CSV not found; give an existing file of image_path,caption rows")
        return CsvPairs(path, image_size, seed)
    if path.is_dir() and not any(path.glob("*.tar")):
        return FolderPairs(path, image_size, seed)
    shards = expand_shards(spec)
    if not shards:
        raise DatasetError(
            f"--data {spec}: not 'synthetic', a .csv, a folder of images + .txt captions, or WebDataset .tar shards"
        )
    from eclip.data.shard_stream import WebDatasetPairs

    return WebDatasetPairs(shards, image_size, seed)

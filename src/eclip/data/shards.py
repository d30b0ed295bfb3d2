"""Synthetic scenes written as WebDataset shards: image-text pairs any training pipeline reads.

A shard is a tar of `NNNNNNNN.png` (or `.jpg`, as real image-text shards are) + `NNNNNNNN.txt`
(the scene and its caption), the WebDataset convention `eclip train --data` reads
(`eclip.data.shard_stream.WebDatasetPairs`). Decoding a PNG is
about ten times cheaper than drawing the scene, so many fine-tuning runs that share one set of
shards train from the same pairs without each drawing them again. Shards are independent, so
`workers` processes write them in parallel; each is written under a temporary name and renamed.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

from eclip.data.synthetic import SceneConfig, batch_of_scenes
from eclip.errors import DatasetError
from eclip.writing import atomic_write

IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG"}


def _write_shard(path: Path, seed: int, first: int, count: int, config: SceneConfig, image_format: str = "png") -> Path:
    """Scenes first..first+count-1 of `seed` into the tar `path` (atomically)."""
    from PIL import Image

    images, captions = batch_of_scenes(seed, first, count, config)

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w") as tar:
            for k, (image, caption) in enumerate(zip(images, captions)):
                key = f"{first + k:08d}"
                buffer = io.BytesIO()
                options = {"quality": 90} if image_format == "jpg" else {}
                Image.fromarray(image).save(buffer, format=IMAGE_FORMATS[image_format], **options)
                for suffix, data in ((f".{image_format}", buffer.getvalue()), (".txt", caption.encode("utf-8"))):
                    info = tarfile.TarInfo(key + suffix)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))

    atomic_write(path, write)
    return path


def write_shards(folder: str | Path, n: int, seed: int = 0, config: SceneConfig | None = None, shard_size: int = 10000,
                 workers: int = 0, image_format: str = "png") -> list[Path]:
    """Write scenes 0..n-1 of `seed` as `folder/shard-000000.tar`, ... of `shard_size` scenes each, images as PNG or JPEG (quality 90)."""
    if n < 1 or shard_size < 1:
        raise DatasetError(f"n={n}, shard_size={shard_size}: both must be at least 1")
    if image_format not in IMAGE_FORMATS:
        raise DatasetError(f"image format {image_format!r} is unknown; use one of {', '.join(IMAGE_FORMATS)}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DatasetError(f"{folder}: exists and is not a folder; pass a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    cfg = config or SceneConfig()
    jobs = [(folder / f"shard-{i:06d}.tar", seed, first, min(shard_size, n - first), cfg, image_format)
            for i, first in enumerate(range(0, n, shard_size))]
    if workers <= 1:
        return [_write_shard(*job) for job in jobs]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.starmap(_write_shard, jobs)

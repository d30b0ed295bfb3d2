"""Safe image decoding: whatever a user points eclip at becomes an upright RGB image or one clear error.

Why a module of its own: users' folders hold phone photos with EXIF rotation, PNGs with alpha,
16-bit scans, CMYK JPEGs, half-downloaded files and the odd `.DS_Store`. Every command reads
images through `load_image`, so each of these is handled once, the same way, and a bad file
becomes an `ImageLoadError` naming the file and the fix (the CLI reports it and goes on).
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from eclip.errors import ImageLoadError

logger = logging.getLogger(__name__)

#: Extensions picked up when a folder is expanded (explicitly named files are kept whatever their name).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico"})

#: Default pixel limit (about 16k x 16k): above it decoding could exhaust memory (a decompression bomb).
MAX_PIXELS = 256_000_000


def _fail(path: Path, reason: str, fix: str) -> ImageLoadError:
    return ImageLoadError(f"{path}: {reason}; {fix}")


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS, upright: bool = True) -> Image.Image:
    """Decode `path` into an upright RGB image detached from the file.

    EXIF orientation is applied (`upright=False` keeps the stored pixel grid, which is what
    dataset masks are drawn on, so a rotated photo stays aligned with its mask); grayscale and
    palette images become RGB; transparency (RGBA, LA,
    palette with a transparent index) is composited on white, as viewers show it; 16-bit and
    32-bit integer images are scaled from their full range (65535) to 8 bits, float images from
    [0, 1] when they fit there; CMYK and YCbCr go through Pillow's conversion. Multi-frame files
    give their first frame. Raises `ImageLoadError` for a missing, empty, truncated, corrupt or
    non-image file, and for one with more than `max_pixels` pixels.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "no such file", "check the path")
    if not path.is_file():
        raise _fail(path, "not a file", "pass an image file (folders are expanded by iter_image_files)")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file", "re-download or re-export the image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise _fail(path, f"{width}x{height} pixels is above the limit of {max_pixels} "
                                      "(a possible decompression bomb)", "resize the image, or raise max_pixels if you trust it")
                im.load()
                image = _upright(im, path) if upright else im
                return _to_rgb(image, path)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as err:
        raise _fail(path, f"too many pixels to decode safely ({err})", "resize the image first") from err
    except UnidentifiedImageError as err:
        raise _fail(path, "not an image format Pillow can read", "convert it to PNG or JPEG") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _fail(path, f"corrupt or truncated image ({reason})", "re-download or re-export the image") from err


def _upright(im: Image.Image, path: Path) -> Image.Image:
    """Apply the EXIF orientation, in place (no copy of a big image); a broken EXIF block only costs the rotation."""
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception as err:  # EXIF parsers raise anything; the pixels are still fine
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", path, err)
    return im


def _to_rgb(im: Image.Image, path: Path) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_wide_to_uint8(np.asarray(im), mode)).convert("RGB")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as err:
        raise _fail(path, f"colour mode {mode} cannot be converted to RGB", "convert it to an RGB PNG or JPEG") from err


def _wide_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """16/32-bit integer or float pixels -> uint8, keeping the relative brightness."""
    values = values.astype(np.float64)
    if mode == "F":
        top = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
    else:  # "I;16*" and "I" (Pillow opens 16-bit PNGs as either): 8-bit data stays as is
        top = 65535.0 if mode.startswith("I;16") or (values.size and values.max() > 255) else 255.0
    return np.clip(np.nan_to_num(values) * (255.0 / top), 0, 255).round().astype(np.uint8)


def iter_image_files(paths: str | Path | Iterable[str | Path], recursive: bool = False) -> list[Path]:
    """Expand files and folders into the image files to read, in a stable order.

    A folder contributes its files with an image extension (case-insensitive), sorted, hidden
    files (".name") excluded, sub-folders only when `recursive`. A file named explicitly is kept
    whatever its extension (the decoder decides). Duplicates keep their first position. A path
    that does not exist raises `ImageLoadError`.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            found.append(p)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            chosen = sorted(p for p in candidates
                            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not chosen:  # the caller decides whether an empty folder is worth a warning or an error
                logger.debug("%s: no image files found%s", path, "" if recursive else " (use recursive to descend)")
            for p in chosen:
                add(p)
        elif path.is_file():
            add(path)
        else:
            raise _fail(path, "no such file or folder", "check the path")
    return found

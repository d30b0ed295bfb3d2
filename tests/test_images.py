"""Safe decoding: odd modes become the RGB a viewer shows; bad files become one ImageLoadError naming them."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from eclip.data.images import iter_image_files, load_image
from eclip.errors import ImageLoadError


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def test_rgb_is_returned_exactly(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert np.array_equal(pixels(load_image(tmp_path / "a.png")), rgb)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (6, 4))
    image.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "phone.png", exif=exif)
    loaded = pixels(load_image(tmp_path / "phone.png"))
    assert loaded.shape == (6, 4, 3)
    assert tuple(loaded[0, 3]) == (255, 0, 0) and loaded.sum() == 255
    stored = pixels(load_image(tmp_path / "phone.png", upright=False))  # the grid dataset masks are drawn on
    assert stored.shape == (4, 6, 3) and tuple(stored[0, 0]) == (255, 0, 0)


def test_grayscale_and_sixteen_bit(tmp_path):
    gray = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert np.array_equal(pixels(load_image(tmp_path / "g.png")), np.repeat(gray[..., None], 3, axis=-1))
    deep = np.array([[0, 32768], [65535, 257]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    assert pixels(load_image(tmp_path / "d.png"))[..., 0].tolist() == [[0, 128], [255, 1]]


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = pixels(load_image(tmp_path / "t.png"))
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [255, 255, 255]
    assert all(abs(v - 127) <= 1 for v in out[0, 2])
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 255, 10, 20, 30] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png", transparency=1)
    assert pixels(load_image(tmp_path / "p.png")).tolist() == [[[0, 0, 255], [255, 255, 255]]]


def test_cmyk_becomes_rgb(tmp_path):
    Image.new("CMYK", (3, 2), (0, 255, 255, 0)).save(tmp_path / "c.tif")
    assert pixels(load_image(tmp_path / "c.tif"))[0, 0].tolist() == [255, 0, 0]


def test_bad_files_raise_one_line_errors_naming_them(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    (tmp_path / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (tmp_path / "text.jpg").write_bytes(b"this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    cases = {"truncated.png": "corrupt or truncated", "text.jpg": "not an image", "empty.png": "empty file",
             "missing.png": "no such file"}
    for name, reason in cases.items():
        with pytest.raises(ImageLoadError) as info:
            load_image(tmp_path / name)
        message = str(info.value)
        assert name in message and reason in message and "\n" not in message and ";" in message
    with pytest.raises(ImageLoadError, match="not a file"):
        load_image(tmp_path)


def test_pixel_limit_guards_against_decompression_bombs(tmp_path):
    Image.new("RGB", (20, 10)).save(tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="20x10 pixels.*decompression bomb"):
        load_image(tmp_path / "big.png", max_pixels=199)
    assert load_image(tmp_path / "big.png", max_pixels=200).size == (20, 10)


def test_iter_image_files(tmp_path):
    for name in ("b.JPG", "a.png", "notes.txt", ".hidden.png", "sub/c.webp", "odd.data"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in iter_image_files(tmp_path)] == ["a.png", "b.JPG"]
    assert [p.name for p in iter_image_files([tmp_path], recursive=True)] == ["a.png", "b.JPG", "c.webp"]
    explicit = iter_image_files([tmp_path / "odd.data", tmp_path, tmp_path / "a.png"])
    assert [p.name for p in explicit] == ["odd.data", "a.png", "b.JPG"]  # odd name kept, duplicate dropped
    with pytest.raises(ImageLoadError, match="nope.png: no such file or folder"):
        iter_image_files([tmp_path / "a.png", tmp_path / "nope.png"])

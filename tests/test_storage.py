"""Image files on disk: checked before writing, content-addressed, atomic, with thumbnails."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from app.storage import ImageRejected, Storage, write_atomically


def encode(image_format: str, size: tuple[int, int] = (64, 48), **options) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(out, image_format, **options)
    return out.getvalue()


def noisy_png(size: tuple[int, int] = (300, 200)) -> bytes:
    """A PNG with real pixel data, so corrupting it cannot go unnoticed by a decoder."""
    out = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(out, "PNG")
    return out.getvalue()


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def with_corrupt_pixel_data(png: bytes) -> bytes:
    """The same PNG with its compressed pixels scrambled but every chunk CRC still valid."""
    start = png.index(b"IDAT")
    (length,) = struct.unpack(">I", png[start - 4 : start])
    payload = bytearray(png[start + 4 : start + 4 + length])
    for offset in range(100, 200):
        payload[offset] ^= 0xFF
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + payload) & 0xFFFFFFFF)
    return png[: start + 4] + bytes(payload) + crc + png[start + 8 + length :]


# --- store_image -----------------------------------------------------------------------------


def test_store_image_writes_the_exact_bytes_under_their_sha256(tmp_path):
    data = encode("PNG")
    digest = hashlib.sha256(data).hexdigest()

    stored = Storage(tmp_path).store_image(data)

    assert stored.file_name == f"images/{digest[:2]}/{digest}.png"
    assert (tmp_path / stored.file_name).read_bytes() == data
    assert stored.sha256 == digest
    assert stored.bytes == len(data)
    assert (stored.width, stored.height) == (64, 48)
    assert stored.content_type == "image/png"


def test_store_image_writes_a_webp_thumbnail_with_longest_side_256(tmp_path):
    stored = Storage(tmp_path).store_image(encode("PNG", size=(512, 384)))

    digest = stored.sha256
    assert stored.thumbnail_name == f"thumbs/{digest[:2]}/{digest}-256.webp"
    with Image.open(tmp_path / stored.thumbnail_name) as thumbnail:
        assert thumbnail.format == "WEBP"
        assert thumbnail.size == (256, 192)


def test_storing_the_same_bytes_twice_keeps_one_file_and_the_same_result(tmp_path):
    data = encode("PNG")

    first = Storage(tmp_path).store_image(data)
    second = Storage(tmp_path).store_image(data)

    assert second == first
    assert [path.relative_to(tmp_path).as_posix() for path in files_under(tmp_path)] == sorted(
        [first.file_name, first.thumbnail_name, first.thumbnail_large_name]
    )


@pytest.mark.parametrize(
    ("image_format", "extension", "content_type"),
    [("JPEG", "jpg", "image/jpeg"), ("WEBP", "webp", "image/webp")],
)
def test_store_image_names_jpeg_and_webp_by_their_format(
    tmp_path, image_format, extension, content_type
):
    stored = Storage(tmp_path).store_image(encode(image_format))

    assert stored.file_name.endswith(f"{stored.sha256}.{extension}")
    assert stored.content_type == content_type
    assert (tmp_path / stored.file_name).exists()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"<html><body>Sign in to continue</body></html>", id="not-an-image"),
        pytest.param(noisy_png()[:2000], id="truncated-png"),
        pytest.param(encode("GIF"), id="gif"),
        # Solid colour: 25 megapixels, over MAX_PIXELS, yet only a few kB to store.
        pytest.param(encode("PNG", size=(5000, 5000)), id="over-max-pixels"),
    ],
)
def test_store_image_rejects_what_is_not_an_acceptable_image_and_writes_nothing(tmp_path, data):
    with pytest.raises(ImageRejected):
        Storage(tmp_path).store_image(data)

    assert files_under(tmp_path) == []


def test_store_image_rejects_a_png_whose_pixels_do_not_decode_and_writes_nothing(tmp_path):
    with pytest.raises(ImageRejected):
        Storage(tmp_path).store_image(with_corrupt_pixel_data(noisy_png()))

    assert files_under(tmp_path) == []


def test_store_image_rejects_a_truncated_jpeg_and_writes_nothing(tmp_path):
    out = io.BytesIO()
    Image.effect_noise((300, 200), 60).convert("RGB").save(out, "JPEG")
    truncated = out.getvalue()[: len(out.getvalue()) // 2]

    with pytest.raises(ImageRejected):
        Storage(tmp_path).store_image(truncated)

    assert files_under(tmp_path) == []


# --- write_atomically ------------------------------------------------------------------------


def test_write_atomically_creates_folders_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "images" / "ab" / "file.png"

    write_atomically(target, b"first")

    assert target.read_bytes() == b"first"
    assert files_under(tmp_path) == [target]


def test_write_atomically_replaces_existing_content(tmp_path):
    target = tmp_path / "file.png"
    target.write_bytes(b"old content that is longer")

    write_atomically(target, b"new")

    assert target.read_bytes() == b"new"
    assert files_under(tmp_path) == [target]


# --- path and remove_files -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "images/../../x", ""])
def test_resolve_refuses_names_outside_the_data_folder(tmp_path, name):
    with pytest.raises(ValueError):
        Storage(tmp_path / "data").path(name)


def test_resolve_returns_the_absolute_path_of_a_stored_name(tmp_path):
    assert Storage(tmp_path).path("images/ab/abc.png") == tmp_path.resolve() / "images/ab/abc.png"


def test_remove_files_removes_the_named_files(tmp_path):
    stored = Storage(tmp_path).store_image(encode("PNG"))

    Storage(tmp_path).remove_files(
        [stored.file_name, stored.thumbnail_name, stored.thumbnail_large_name]
    )

    assert files_under(tmp_path) == []


def test_remove_files_ignores_files_already_gone(tmp_path):
    Storage(tmp_path).remove_files(["images/ab/missing.png"])  # does not raise


def test_thumbnails_come_in_two_sizes_with_a_placeholder_colour(tmp_path):
    stored = Storage(tmp_path).store_image(encode("PNG", size=(1536, 1024)))

    sizes = []
    for name in (stored.thumbnail_name, stored.thumbnail_large_name):
        with Image.open(tmp_path / name) as thumbnail:
            assert thumbnail.format == "WEBP"
            sizes.append(thumbnail.size)
    assert sizes == [(256, 171), (512, 341)]
    assert re.fullmatch(r"#[0-9a-f]{6}", stored.placeholder)


def _fine_checkerboard(mode: str) -> Image.Image:
    """1024x683 of alternating black and white pixels, in `mode` (translucent with alpha)."""
    grey = Image.new("L", (1024, 683))
    grey.putdata([255 * ((x + y) % 2) for y in range(683) for x in range(1024)])
    if mode == "P":
        return grey.convert("RGB").quantize(colors=2)
    if mode == "I;16":
        return grey.point(lambda value: value * 257, "I").convert("I;16")
    image = grey.convert(mode)
    if "A" in mode:
        image.putalpha(200)
    return image


@pytest.mark.parametrize(
    ("mode", "image_format", "alpha"),
    [
        ("RGB", "PNG", False),
        ("RGBA", "PNG", True),
        ("L", "PNG", False),
        ("LA", "PNG", True),
        ("P", "PNG", True),  # a palette PNG decodes as P (and keeps transparency as RGBA)
        ("I;16", "PNG", False),
        ("1", "PNG", False),
        ("CMYK", "JPEG", False),
        ("RGB", "WEBP", False),
    ],
)
def test_thumbnails_of_every_pixel_mode_are_smooth_reductions(tmp_path, mode, image_format, alpha):
    """Whatever the mode, both thumbnails keep the aspect ratio and are resampled, not picked
    pixel by pixel: a 1-pixel checkerboard reduces to grey (a palette resized as it is would
    stay black and white)."""
    out = io.BytesIO()
    _fine_checkerboard(mode).save(out, image_format, **({"quality": 95} if mode == "CMYK" else {}))
    stored = Storage(tmp_path).store_image(out.getvalue())

    sizes = []
    for name in (stored.thumbnail_name, stored.thumbnail_large_name):
        with Image.open(tmp_path / name) as thumbnail:
            assert thumbnail.format == "WEBP"
            sizes.append(thumbnail.size)
            assert (thumbnail.mode == "RGBA") == alpha or mode == "P"
            low, high = thumbnail.convert("L").getextrema()
            assert 60 < low <= high < 195, (name, low, high)
    assert sizes == [(256, 171), (512, 342)]
    assert 0x60 < int(stored.placeholder[1:3], 16) < 0xA0

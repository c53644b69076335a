"""Unit tests for simsearch.decode: reading a file safely, decoding it, and load()."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from synth import encode, noise, write

from simsearch import decode
from simsearch.decode import load, open_image, read_file
from simsearch.errors import ImageError
from simsearch.preprocess import Preprocess, preprocess

# ---------------------------------------------------------------- read_file / open_image


def test_read_file_roundtrip_and_errors(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc")
    assert read_file(p) == b"abc"
    cases = {
        tmp_path / "missing.png": "file not found",
        tmp_path: "is a directory",
    }
    (tmp_path / "empty.png").write_bytes(b"")
    cases[tmp_path / "empty.png"] = "empty file"
    for path, reason in cases.items():
        with pytest.raises(ImageError) as ei:
            read_file(path)
        assert ei.value.reason == reason
        assert ei.value.path == str(path)


def test_read_file_fifo_does_not_block(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        read_file(fifo)


def test_read_file_permission_denied_monkeypatched(tmp_path, monkeypatch):
    p = tmp_path / "secret.png"
    p.write_bytes(b"x")

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(decode.os, "open", deny)
    with pytest.raises(ImageError) as ei:
        read_file(p)
    assert ei.value.reason == "permission denied"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file modes")
def test_read_file_permission_denied_real(tmp_path):
    p = tmp_path / "secret.png"
    p.write_bytes(encode(Image.new("L", (2, 2))))
    p.chmod(0)
    try:
        with pytest.raises(ImageError) as ei:
            read_file(p)
        assert ei.value.reason == "permission denied"
    finally:
        p.chmod(0o644)


def test_open_image_path_and_bytes_agree(tmp_path):
    img = noise(13, 7)
    p = write(tmp_path / "n.png", img)
    a = open_image(p)
    b = open_image(p.read_bytes())
    assert a.size == b.size == (13, 7)
    assert np.array_equal(np.asarray(a), np.asarray(img))
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_open_image_bytes_error_names_bytes():
    with pytest.raises(ImageError) as ei:
        open_image(b"definitely not an image")
    assert ei.value.path == "<bytes>"
    assert ei.value.reason == "not a recognised image format"
    assert str(ei.value) == "<bytes>: not a recognised image format"


def test_open_image_accepts_bytearray_and_memoryview():
    data = encode(Image.new("RGB", (3, 2), (1, 2, 3)))
    for src in (bytearray(data), memoryview(data)):
        assert open_image(src).getpixel((0, 0)) == (1, 2, 3)


def test_open_image_keeps_truncated_images_strict():
    from PIL import ImageFile

    data = encode(noise(32, 32), "PNG")
    with pytest.raises(ImageError):
        open_image(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_open_image_respects_lowered_pixel_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = encode(Image.new("L", (20, 20)))
    with pytest.raises(ImageError) as ei:
        open_image(data)
    assert ei.value.reason == "image too large: 20x20 pixels"
    assert open_image(encode(Image.new("L", (10, 10)))).size == (10, 10)


def test_open_image_broken_exif_is_ignored():
    # orientation tag present but EXIF block is garbage after it
    exif = Image.Exif()
    exif[0x0112] = 6
    raw = exif.tobytes()
    broken = raw[:-4] + b"\xff\xff\xff\xff"
    for blob in (broken, b"Exif\x00\x00II*\x00\xff\xff\xff\x7f", b"Exif\x00\x00garbage"):
        data = encode(Image.new("RGB", (8, 4), "red"), "JPEG", exif=blob)
        img = open_image(data)
        assert img.size in ((8, 4), (4, 8))


# ---------------------------------------------------------------- load


def test_load_png_equals_open_plus_preprocess(tmp_path):
    img = noise(50, 31)
    p = write(tmp_path / "n.png", img)
    pre = Preprocess(16, 3)
    expected = preprocess(img, pre)
    assert np.array_equal(load(p, pre), expected)
    assert np.array_equal(load(p.read_bytes(), pre), expected)
    assert np.array_equal(load(str(p), pre), expected)


def test_load_jpeg_uses_draft_and_stays_close(monkeypatch):
    from PIL import JpegImagePlugin

    img = Image.fromarray(
        np.kron(np.random.default_rng(1).integers(0, 256, (8, 8, 3)), np.ones((64, 64, 1))).astype(np.uint8)
    )  # 512x512 blocky, so downscaling is well-defined
    data = encode(img, "JPEG", quality=95)
    calls = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        calls.append((mode, size))
        return real(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    pre = Preprocess(32, 3)
    fast = load(data, pre)
    assert calls == [("RGB", (32, 32))]
    full = preprocess(open_image(data), pre)  # no draft
    assert len(calls) == 1
    assert fast.shape == full.shape == (3, 32, 32)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 6
    load(data, Preprocess(32, 1))
    assert calls[-1] == ("L", (32, 32))


def test_load_errors_carry_path(tmp_path):
    p = tmp_path / "bad.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageError) as ei:
        load(p, Preprocess(8, 3))
    assert ei.value.path == str(p)
    assert "\n" not in ei.value.reason and ei.value.reason == ei.value.reason.lower()

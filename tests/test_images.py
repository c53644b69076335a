"""Unit tests for simsearch.images (discovery, decoding, preprocessing)."""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synth import encode, write

from simsearch import images
from simsearch.errors import ImageError, SimsearchError
from simsearch.images import (
    IMAGE_EXTENSIONS,
    Preprocess,
    decode_files,
    discover,
    from_array,
    load,
    open_image,
    preprocess,
    probe,
    read_file,
)


def stripes(w: int = 30, h: int = 10) -> Image.Image:
    """Left third red, middle third green, right third blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 3] = (255, 0, 0)
    a[:, w // 3 : 2 * w // 3] = (0, 255, 0)
    a[:, 2 * w // 3 :] = (0, 0, 255)
    return Image.fromarray(a)


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# ---------------------------------------------------------------- extensions


def test_image_extensions_cover_common_formats():
    assert isinstance(IMAGE_EXTENSIONS, frozenset)
    for ext in (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"):
        assert ext in IMAGE_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)


def test_image_extensions_exclude_write_only_and_stub_formats():
    # PDF is save-only in Pillow; HDF5/BUFR/GRIB are stubs without a decoder;
    # MPEG only parses a header.
    for ext in (".pdf", ".h5", ".bufr", ".grib", ".mpg"):
        assert ext not in IMAGE_EXTENSIONS


# ---------------------------------------------------------------- Preprocess


def test_preprocess_dict_roundtrip():
    for pre in (Preprocess(28, 1), Preprocess(64, 3, "pad"), Preprocess(16, 3, "stretch")):
        d = pre.to_dict()
        assert d == {"size": pre.size, "channels": pre.channels, "fit": pre.fit}
        assert Preprocess.from_dict(d) == pre


def test_preprocess_defaults_to_center_crop():
    assert Preprocess(32, 3).fit == "center-crop"
    assert Preprocess.from_dict({"size": 32, "channels": 3}).fit == "center-crop"


@pytest.mark.parametrize(
    "d",
    [
        {"size": 0, "channels": 3},
        {"size": -4, "channels": 3},
        {"size": True, "channels": 3},
        {"size": "64", "channels": 3},
        {"size": 6.5, "channels": 3},
        {"size": 10**6, "channels": 3},
        {"size": 64, "channels": 2},
        {"size": 64, "channels": True},
        {"size": 64, "channels": 3.0},
        {"size": 64, "channels": 3, "fit": "zoom"},
        {"size": 64, "channels": 3, "colour": "yes"},
        {"channels": 3},
        {"size": 64},
    ],
)
def test_preprocess_from_dict_rejects_nonsense(d):
    with pytest.raises(ValueError):
        Preprocess.from_dict(d)


def test_preprocess_from_dict_rejects_non_mapping():
    with pytest.raises(ValueError):
        Preprocess.from_dict([64, 3])  # type: ignore[arg-type]


def test_preprocess_is_frozen_and_hashable():
    pre = Preprocess(64, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pre.size = 32  # type: ignore[misc]
    assert {pre: 1}[Preprocess(64, 3)] == 1


# ---------------------------------------------------------------- discover


def test_discover_sorted_recursive_and_filtered(tmp_path):
    img = Image.new("L", (4, 4))
    for rel in ["b.png", "a/z.JPG", "a/y.gif", "a.png", "c/d/e.tiff", "B.bmp"]:
        write(tmp_path / rel, img)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a" / "data.npy").write_bytes(b"x")
    files, problems = discover(tmp_path)
    rel = [p.relative_to(tmp_path).as_posix() for p in files]
    # byte order of the relative POSIX path: 'B' < 'a', 'a.png' < 'a/...' ('.' < '/')
    assert rel == ["B.bmp", "a.png", "a/y.gif", "a/z.JPG", "b.png", "c/d/e.tiff"]
    assert problems == []
    assert all(p.parent.is_relative_to(tmp_path) for p in files)


def test_discover_skips_hidden_files_and_dirs(tmp_path):
    img = Image.new("L", (4, 4))
    write(tmp_path / "visible.png", img)
    write(tmp_path / ".hidden.png", img)
    write(tmp_path / ".cache" / "x.png", img)
    write(tmp_path / "sub" / ".also.png", img)
    files, problems = discover(tmp_path)
    assert [p.name for p in files] == ["visible.png"]
    assert problems == []


def test_discover_hidden_root_is_still_walked(tmp_path):
    root = tmp_path / ".thumbnails"
    write(root / "x.png", Image.new("L", (4, 4)))
    files, _ = discover(root)
    assert files == [root / "x.png"]


def test_discover_keeps_relative_root_relative(tmp_path, monkeypatch):
    write(tmp_path / "imgs" / "x.png", Image.new("L", (4, 4)))
    monkeypatch.chdir(tmp_path)
    files, _ = discover("imgs")
    assert files == [Path("imgs") / "x.png"]


def test_discover_single_file_root(tmp_path):
    p = write(tmp_path / "one.webp", Image.new("RGB", (4, 4)), "WEBP")
    assert discover(p) == ([p], [])
    assert discover(str(p)) == ([p], [])


def test_discover_root_not_image_raises(tmp_path):
    p = tmp_path / "readme.txt"
    p.write_text("hi")
    with pytest.raises(SimsearchError, match="readme.txt"):
        discover(p)


def test_discover_missing_root_raises_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(SimsearchError) as ei:
        discover(missing)
    msg = str(ei.value)
    assert "nope" in msg and "\n" not in msg


def test_discover_is_deterministic(tmp_path):
    img = Image.new("L", (2, 2))
    for i in range(30):
        write(tmp_path / f"d{i % 3}" / f"{(i * 7919) % 101}.png", img)
    assert discover(tmp_path) == discover(tmp_path)


def test_discover_unreadable_dir_monkeypatched(tmp_path, monkeypatch):
    # Works even as root (where chmod 000 does not stop reading).
    write(tmp_path / "ok.png", Image.new("L", (2, 2)))
    bad = tmp_path / "locked"
    write(bad / "x.png", Image.new("L", (2, 2)))
    real_scandir = os.scandir

    def fake_scandir(path):
        if Path(path) == bad:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(images.os, "scandir", fake_scandir)
    files, problems = discover(tmp_path)
    assert files == [tmp_path / "ok.png"]
    assert problems == [(bad, "cannot read directory: permission denied")]


def test_discover_fifo_with_image_name_is_a_problem_not_a_file(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "pipe.png")
    files, problems = discover(tmp_path)
    assert files == []
    assert problems == [(tmp_path / "pipe.png", "not a regular file")]


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

    monkeypatch.setattr(images.os, "open", deny)
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


# ---------------------------------------------------------------- preprocess


@pytest.mark.parametrize("fit", ["center-crop", "pad", "stretch"])
@pytest.mark.parametrize("channels", [1, 3])
def test_preprocess_shape_dtype_contiguous(fit, channels):
    pre = Preprocess(16, channels, fit)
    for size in [(1, 1), (16, 16), (40, 7), (7, 40), (300, 200)]:
        out = preprocess(noise(*size), pre)
        assert out.shape == (channels, 16, 16)
        assert out.dtype == np.uint8
        assert out.flags["C_CONTIGUOUS"]


def test_preprocess_center_crop_keeps_centre():
    # centre 10x10 of the 60-wide image lies well inside the green stripe
    out = preprocess(stripes(60, 10), Preprocess(8, 3, "center-crop"))
    assert (out[:, :, :] == np.array([0, 255, 0], np.uint8)[:, None, None]).all()


def test_preprocess_center_crop_vertical():
    img = stripes(60, 10).rotate(90, expand=True)  # 10 wide, 60 tall; green stays in middle
    out = preprocess(img, Preprocess(8, 3))
    assert (out == np.array([0, 255, 0], np.uint8)[:, None, None]).all()


def test_preprocess_pad_adds_white_bars_and_keeps_everything():
    out = preprocess(stripes(30, 10), Preprocess(30, 3, "pad"))
    # content is 30x10, centred vertically: rows 0..9 and 20..29 are white
    assert (out[:, :10, :] == 255).all() and (out[:, 20:, :] == 255).all()
    assert tuple(out[:, 15, 2]) == (255, 0, 0)
    assert tuple(out[:, 15, 15]) == (0, 255, 0)
    assert tuple(out[:, 15, 27]) == (0, 0, 255)


def test_preprocess_stretch_keeps_all_stripes():
    out = preprocess(stripes(30, 10), Preprocess(9, 3, "stretch"))
    assert tuple(out[:, 4, 0]) == (255, 0, 0)
    assert tuple(out[:, 4, 4]) == (0, 255, 0)
    assert tuple(out[:, 4, 8]) == (0, 0, 255)


def test_preprocess_downscale_is_filtered_not_nearest():
    # 1-px checkerboard must average to mid-grey, not alias to black/white
    a = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    out = preprocess(Image.fromarray(a), Preprocess(16, 1))
    assert 100 < out.mean() < 155
    assert out.std() < 40


def test_preprocess_luminance_and_gray_to_rgb():
    red = preprocess(Image.new("RGB", (4, 4), (255, 0, 0)), Preprocess(4, 1))
    assert (red == 76).all()  # ITU-R 601-2: 0.299 * 255
    gray = preprocess(Image.new("L", (4, 4), 77), Preprocess(4, 3))
    assert (gray == 77).all() and gray.shape == (3, 4, 4)


def test_preprocess_i16_scaling():
    a = np.array([[0, 65535], [257 * 100, 257]], dtype=np.uint16)
    out = preprocess(Image.fromarray(a), Preprocess(2, 1, "stretch"))
    assert out[0].tolist() == [[0, 255], [100, 1]]


def test_preprocess_i16_big_endian():
    a = np.array([[0, 65535], [257 * 100, 257]], dtype=np.uint16)
    img = Image.frombytes("I;16B", (2, 2), a.astype(">u2").tobytes())
    assert img.mode == "I;16B"
    out = preprocess(img, Preprocess(2, 1, "stretch"))
    assert out[0].tolist() == [[0, 255], [100, 1]]


def test_preprocess_int32_in_range_kept_out_of_range_scaled():
    inside = Image.fromarray(np.array([[0, 10], [200, 255]], dtype=np.int32))
    assert preprocess(inside, Preprocess(2, 1, "stretch"))[0].tolist() == [[0, 10], [200, 255]]
    outside = Image.fromarray(np.array([[-100, 0], [100, 400]], dtype=np.int32))
    got = preprocess(outside, Preprocess(2, 1, "stretch"))[0].tolist()
    assert got == [[0, 51], [102, 255]]  # (x + 100) * 255 / 500


def test_preprocess_float_scaling_and_non_finite():
    img = Image.fromarray(np.array([[-1.0, 1.5], [np.nan, np.inf]], dtype=np.float32))
    got = preprocess(img, Preprocess(2, 1, "stretch"))[0]
    assert got[0].tolist() == [0, 255]
    assert got.dtype == np.uint8
    allnan = Image.fromarray(np.full((3, 3), np.nan, dtype=np.float32))
    assert (preprocess(allnan, Preprocess(3, 1)) == 0).all()
    unit = Image.fromarray(np.array([[0.0, 128.4]], dtype=np.float32))
    assert preprocess(unit, Preprocess(2, 1, "stretch"))[0, 0].tolist() == [0, 128]


def test_preprocess_constant_out_of_range_image():
    img = Image.fromarray(np.full((4, 4), 5000, dtype=np.int32))
    assert (preprocess(img, Preprocess(4, 1)) == 255).all()


def test_preprocess_rgba_on_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert (preprocess(img, Preprocess(4, 3)) == 255).all()
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    v = preprocess(half, Preprocess(4, 3))
    assert np.abs(v.astype(int) - 127).max() <= 1
    opaque = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    assert tuple(preprocess(opaque, Preprocess(4, 3))[:, 0, 0]) == (10, 20, 30)


def test_preprocess_rgb_colour_key_transparency():
    img = Image.new("RGB", (2, 1), (0, 0, 0))
    img.putpixel((1, 0), (9, 9, 9))
    img.info["transparency"] = (0, 0, 0)
    out = preprocess(img, Preprocess(2, 3, "stretch"))
    assert tuple(out[:, 0, 0]) == (255, 255, 255)
    assert tuple(out[:, 0, 1]) == (9, 9, 9)


def test_preprocess_premultiplied_modes():
    la = Image.new("La", (2, 2), (0, 0))
    assert (preprocess(la, Preprocess(2, 1)) == 255).all()
    rgba = Image.new("RGBa", (2, 2), (0, 0, 0, 0))
    assert (preprocess(rgba, Preprocess(2, 3)) == 255).all()


@pytest.mark.parametrize(
    "mode,colour,expected",
    [
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("YCbCr", (76, 85, 255), (254, 0, 0)),
        ("LAB", (255, 128, 128), (254, 255, 254)),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
    ],
)
def test_preprocess_colour_spaces(mode, colour, expected):
    out = preprocess(Image.new(mode, (3, 3), colour), Preprocess(3, 3))
    assert np.abs(out[:, 1, 1].astype(int) - np.array(expected)).max() <= 2


def test_preprocess_zero_size_image_raises_image_error():
    with pytest.raises(ImageError, match="no pixels"):
        preprocess(Image.new("RGB", (0, 5)), Preprocess(4, 3))


def test_preprocess_upscales_tiny():
    out = preprocess(Image.new("RGB", (2, 2), (5, 6, 7)), Preprocess(16, 3))
    assert (out == np.array([5, 6, 7], np.uint8)[:, None, None]).all()


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


# ---------------------------------------------------------------- from_array


def test_from_array_matches_preprocess_of_pil():
    img = noise(21, 17)
    pre = Preprocess(8, 3)
    a = np.asarray(img)
    expected = preprocess(img, pre)
    assert np.array_equal(from_array(a, pre), expected)
    assert np.array_equal(from_array(a.transpose(2, 0, 1), pre), expected)  # CxHxW
    assert np.array_equal(from_array(a / 255.0, pre), expected)  # float 0..1
    assert np.array_equal(from_array(a.astype(np.float32), pre), expected)  # float 0..255
    assert np.array_equal(from_array(a.astype(np.int64), pre), expected)


def test_from_array_gray_shapes_and_bool():
    pre = Preprocess(4, 1)
    g = np.full((6, 6), 200, np.uint8)
    assert (from_array(g, pre) == 200).all()
    assert (from_array(g[:, :, None], pre) == 200).all()
    assert (from_array(g[None, :, :], pre) == 200).all()
    assert (from_array(np.ones((6, 6), bool), pre) == 255).all()
    assert (from_array(np.zeros((6, 6), bool), pre) == 0).all()


def test_from_array_rgba_composited_on_white():
    a = np.zeros((5, 5, 4), np.uint8)
    assert (from_array(a, Preprocess(4, 3)) == 255).all()
    assert (from_array(a.transpose(2, 0, 1), Preprocess(4, 3)) == 255).all()


def test_from_array_hwc_wins_when_ambiguous():
    a = np.zeros((3, 3, 3), np.uint8)
    a[..., 0] = 255  # HWC reading: a red image
    out = from_array(a, Preprocess(3, 3))
    assert (out[0] == 255).all() and (out[1:] == 0).all()


@pytest.mark.parametrize(
    "arr,match",
    [
        (np.zeros(5), "dimensions"),
        (np.zeros((2, 2, 2, 2)), "dimensions"),
        (np.zeros((5, 5, 2)), "channel"),
        (np.zeros((0, 5)), "empty"),
        (np.array([[np.nan, 0.0]]), "NaN"),
        (np.array([[np.inf, 0.0]]), "NaN or infinite"),
        (np.array([[-0.5, 0.0]]), "0..1 or 0..255"),
        (np.array([[300.0, 0.0]]), "0..1 or 0..255"),
        (np.array([[256, 0]]), "0..255"),
        (np.array([[-1, 0]]), "0..255"),
        (np.zeros((3, 3), complex), "numeric"),
        (np.array([["a", "b"]]), "numeric"),
        (np.empty((2, 2), object), "numeric"),
    ],
)
def test_from_array_validation(arr, match):
    with pytest.raises(ValueError, match=match):
        from_array(arr, Preprocess(4, 3))


# ---------------------------------------------------------------- probe


def test_probe_small_gray_corpus(tmp_path):
    files = [write(tmp_path / f"{i}.png", Image.new("L", (28, 28), i)) for i in range(10)]
    assert probe(files) == Preprocess(28, 1)


def test_probe_photos(tmp_path):
    files = [write(tmp_path / f"{i}.jpg", noise(160, 120, i), "JPEG") for i in range(5)]
    assert probe(files) == Preprocess(64, 3)


def test_probe_rgb_that_is_gray_counts_as_gray(tmp_path):
    gray_rgb = Image.fromarray(np.repeat(np.asarray(noise(40, 40))[:, :, :1], 3, axis=2))
    files = [write(tmp_path / "a.png", gray_rgb), write(tmp_path / "b.jpg", gray_rgb, "JPEG")]
    pal = Image.fromarray(np.asarray(noise(40, 40))[:, :, 0]).convert("P")  # via L: grey palette
    pal.putpalette([v for i in range(256) for v in (i, i, i)])
    files.append(write(tmp_path / "c.png", pal))
    assert probe(files).channels == 1
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    colourful = write(tmp_path / "d.png", pal)
    assert probe([colourful]).channels == 3


def test_probe_mostly_gray_is_not_enough(tmp_path):
    files = [write(tmp_path / f"g{i}.png", Image.new("L", (20, 20))) for i in range(9)]
    files.append(write(tmp_path / "colour.png", noise(20, 20)))
    assert probe(files).channels == 3  # 90% < 95%
    files += [write(tmp_path / f"h{i}.png", Image.new("L", (20, 20))) for i in range(10)]
    assert probe(files).channels == 1  # 19/20 = 95%


@pytest.mark.parametrize("side,expected", [(30, 32), (29, 32), (32, 32), (10, 16), (1, 16), (500, 64)])
def test_probe_size_rounding(tmp_path, side, expected):
    files = [write(tmp_path / "x.png", Image.new("L", (side, side + 50)))]
    assert probe(files).size == expected


def test_probe_uses_median_shorter_side(tmp_path):
    sides = [20, 24, 40, 100, 8]
    files = [write(tmp_path / f"{i}.png", Image.new("L", (s, 3 * s))) for i, s in enumerate(sides)]
    assert probe(files).size == 24


def test_probe_ignores_unreadable(tmp_path):
    good = write(tmp_path / "good.png", Image.new("L", (28, 28)))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert probe([bad, tmp_path / "missing.png", good]) == Preprocess(28, 1)


def test_probe_nothing_readable_raises(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(SimsearchError, match="no readable images among 2 files"):
        probe([bad, tmp_path / "missing.png"])
    with pytest.raises(SimsearchError, match="no readable images among 0 files"):
        probe([])


def test_probe_sample_is_deterministic_and_bounded(tmp_path):
    files = [write(tmp_path / f"{i:02d}.png", Image.new("L", (16 + 4 * i, 200))) for i in range(20)]
    a = probe(files, sample=5, seed=3)
    assert a == probe(files, sample=5, seed=3)
    assert 16 <= a.size <= 64
    # a sample of 1 reads exactly one file: its shorter side decides the size
    sizes = {probe(files, sample=1, seed=s).size for s in range(20)}
    assert len(sizes) > 1


# ---------------------------------------------------------------- decode_files


def make_corpus(tmp_path: Path, n: int = 12) -> list[Path]:
    paths = []
    for i in range(n):
        if i % 4 == 3:
            p = tmp_path / f"{i:02d}.png"
            p.write_bytes(b"garbage" * i)
        else:
            fmt = ["PNG", "JPEG", "WEBP"][i % 3]
            p = write(tmp_path / f"{i:02d}.{fmt.lower()}", noise(20 + i, 30, i), fmt)
        paths.append(p)
    return paths


def test_decode_files_in_process_order_and_info(tmp_path):
    paths = make_corpus(tmp_path)
    pre = Preprocess(16, 3)
    out = list(decode_files(paths, pre, workers=1))
    assert [r[0] for r in out] == list(range(len(paths)))
    for (i, arr, reason, info), p in zip(out, paths):
        data = p.read_bytes()
        assert info["size"] == len(data)
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
        assert info["mtime_ns"] == os.stat(p).st_mtime_ns
        if i % 4 == 3:
            assert arr is None and reason == "not a recognised image format"
        else:
            assert reason is None
            assert np.array_equal(arr, load(p, pre))


def test_decode_files_workers_agree(tmp_path):
    paths = make_corpus(tmp_path, 14)
    pre = Preprocess(16, 1)
    one = list(decode_files(paths, pre, workers=1))
    two = list(decode_files(paths, pre, workers=2, chunksize=3))
    assert len(one) == len(two) == 14
    for a, b in zip(one, two):
        assert a[0] == b[0] and a[2] == b[2] and a[3] == b[3]
        assert (a[1] is None) == (b[1] is None)
        if a[1] is not None:
            assert np.array_equal(a[1], b[1])


def test_decode_files_empty_and_bad_arguments(tmp_path):
    assert list(decode_files([], Preprocess(8, 3))) == []
    with pytest.raises(ValueError):
        list(decode_files([tmp_path / "x.png"], Preprocess(8, 3), workers=-1))
    with pytest.raises(ValueError):
        list(decode_files([tmp_path / "x.png"], Preprocess(8, 3), chunksize=0))


def test_decode_files_default_workers(tmp_path):
    paths = make_corpus(tmp_path, 5)
    out = list(decode_files(paths, Preprocess(8, 3)))
    assert [r[0] for r in out] == list(range(5))


def _children_gone(ours: set) -> bool:
    """True when none of the processes in ``ours`` is still alive."""
    for p in ours:
        p.join(timeout=10)
    return not any(p.is_alive() for p in ours)


@pytest.mark.skipif(sys.platform != "linux", reason="pool bookkeeping checked on Linux")
def test_decode_files_close_terminates_pool(tmp_path):
    paths = make_corpus(tmp_path, 40)
    before = set(multiprocessing.active_children())
    gen = decode_files(paths, Preprocess(8, 3), workers=2, chunksize=1)
    first = next(gen)
    assert first[0] == 0
    ours = set(multiprocessing.active_children()) - before
    assert ours  # the pool's workers
    gen.close()
    assert _children_gone(ours)


@pytest.mark.skipif(sys.platform != "linux", reason="pool bookkeeping checked on Linux")
def test_decode_files_keyboard_interrupt_terminates_pool(tmp_path):
    paths = make_corpus(tmp_path, 40)
    before = set(multiprocessing.active_children())
    gen = decode_files(paths, Preprocess(8, 3), workers=2, chunksize=1)
    next(gen)
    ours = set(multiprocessing.active_children()) - before
    assert ours
    with pytest.raises(KeyboardInterrupt):
        gen.throw(KeyboardInterrupt)
    assert _children_gone(ours)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods() or sys.platform != "linux",
    reason="needs fork so the monkeypatch reaches the workers",
)
def test_decode_files_survives_worker_crash(tmp_path, monkeypatch):
    paths = make_corpus(tmp_path, 10)
    crash = write(tmp_path / "crash.png", Image.new("L", (8, 8)))
    paths.insert(5, crash)
    real = images._load_bytes

    def crashing(data, pre, name):
        if "crash" in str(name):
            os._exit(3)  # simulate a segfaulting decoder
        return real(data, pre, name)

    monkeypatch.setattr(images, "_load_bytes", crashing)
    pre = Preprocess(8, 3)
    before = set(multiprocessing.active_children())
    out = list(decode_files(paths, pre, workers=2, chunksize=2))
    assert _children_gone(set(multiprocessing.active_children()) - before)
    assert [r[0] for r in out] == list(range(len(paths)))
    assert out[5][1] is None and "crashed" in out[5][2]
    monkeypatch.setattr(images, "_load_bytes", real)
    for i, arr, reason, _ in out:
        if i != 5:
            expected = next(iter(decode_files([paths[i]], pre, workers=1)))
            assert reason == expected[2]
            assert (arr is None) == (expected[1] is None)
            if arr is not None:
                assert np.array_equal(arr, expected[1])

"""Hostile and unusual inputs for stage 1 (discover / decode / preprocess).

Every case builds its input in ``tmp_path`` and asserts either a correct
array of the right shape or an ImageError with a meaningful reason.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, features
from synth import encode, write

from simsearch import decode
from simsearch.decode import load, open_image
from simsearch.discover import discover
from simsearch.errors import ImageError
from simsearch.pool import decode_files
from simsearch.preprocess import Preprocess

RGB = Preprocess(16, 3)
GRAY = Preprocess(16, 1)


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def expect_error(source, pre: Preprocess = RGB) -> ImageError:
    with pytest.raises(ImageError) as ei:
        load(source, pre)
    err = ei.value
    assert err.reason and "\n" not in err.reason and err.reason == err.reason.lower()
    assert "traceback" not in err.reason
    return err


def expect_array(source, pre: Preprocess = RGB) -> np.ndarray:
    arr = load(source, pre)
    assert arr.shape == (pre.channels, pre.size, pre.size)
    assert arr.dtype == np.uint8 and arr.flags["C_CONTIGUOUS"]
    return arr


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def uniform(arr: np.ndarray, value, tol: int = 0) -> bool:
    v = np.asarray(value, dtype=int).reshape(-1, 1, 1)
    return bool(np.abs(arr.astype(int) - v).max() <= tol)


# ---------------------------------------------------------------- broken / fake files


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    assert expect_error(p).reason == "empty file"


def test_truncated_jpeg(tmp_path):
    data = encode(noise(64, 64), "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    err = expect_error(p)
    assert "truncated" in err.reason
    assert err.path == str(p)


def test_truncated_png(tmp_path):
    data = encode(noise(64, 64), "PNG")
    p = tmp_path / "cut.png"
    p.write_bytes(data[: len(data) // 2])
    assert "truncated" in expect_error(p).reason


def test_text_file_named_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is just some text\n" * 10)
    assert expect_error(p).reason == "not a recognised image format"


def test_random_bytes_named_jpg(tmp_path):
    p = tmp_path / "random.jpg"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert expect_error(p).reason == "not a recognised image format"


def test_jpeg_magic_then_garbage(tmp_path):
    p = tmp_path / "fake.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    err = expect_error(p)
    assert err.reason  # any one-line reason; the point is: no other exception


def test_decompression_bomb_png_header(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(png_header_only(100_000, 100_000))  # 10^10 pixels, > 2 * MAX_IMAGE_PIXELS
    assert expect_error(p).reason == "image too large: 100000x100000 pixels"


def test_decompression_bomb_between_limit_and_twice(tmp_path, recwarn):
    # 10^8 pixels: Pillow only *warns* for this one; we still refuse it.
    p = tmp_path / "bomb2.png"
    p.write_bytes(png_header_only(10_000, 10_000))
    assert Image.MAX_IMAGE_PIXELS < 10_000 * 10_000 < 2 * Image.MAX_IMAGE_PIXELS
    assert expect_error(p).reason == "image too large: 10000x10000 pixels"
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_directory_named_like_an_image(tmp_path):
    d = tmp_path / "x.jpg"
    d.mkdir()
    write(d / "inner.png", Image.new("L", (4, 4)))
    files, problems = discover(tmp_path)
    assert files == [d / "inner.png"]
    assert problems == []
    with pytest.raises(ImageError) as ei:
        open_image(d)
    assert ei.value.reason == "is a directory"
    assert expect_error(d).reason == "is a directory"


def test_file_deleted_between_discover_and_load(tmp_path):
    p = write(tmp_path / "gone.png", Image.new("L", (4, 4)))
    keep = write(tmp_path / "kept.png", Image.new("L", (4, 4), 9))
    files, _ = discover(tmp_path)
    assert files == [p, keep]
    p.unlink()
    assert expect_error(p).reason == "file not found"
    out = list(decode_files(files, GRAY, workers=1))
    assert out[0][1] is None and out[0][2] == "file not found" and out[0][3] == {}
    assert out[1][2] is None and uniform(out[1][1], 9)


# ---------------------------------------------------------------- unusual modes


def test_png_16bit_grayscale(tmp_path):
    a = np.zeros((8, 8), np.uint16)
    a[:4] = 65535
    a[4:] = 257 * 60
    p = write(tmp_path / "deep.png", Image.fromarray(a))
    assert Image.open(p).mode == "I;16"
    arr = expect_array(p, Preprocess(8, 1))
    assert (arr[0, :4] == 255).all() and (arr[0, 4:] == 60).all()


def test_cmyk_jpeg(tmp_path):
    p = write(tmp_path / "cmyk.jpg", Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG")
    assert Image.open(p).mode == "CMYK"
    assert uniform(expect_array(p), (255, 0, 0), tol=3)


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 4, 8, 8))  # bottom half index 1 (red), top half index 0 (transparent black)
    p = write(tmp_path / "pal.png", img, transparency=0)
    assert Image.open(p).mode == "P" and "transparency" in Image.open(p).info
    arr = expect_array(p, Preprocess(8, 3, "stretch"))
    assert uniform(arr[:, :4], 255)
    assert uniform(arr[:, 4:], (200, 0, 0))


def test_palette_png_without_transparency(tmp_path):
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6))
    p = write(tmp_path / "pal.png", img)
    assert uniform(expect_array(p, Preprocess(8, 3)), (10, 20, 30))


def test_la_png(tmp_path):
    a = np.zeros((8, 8, 2), np.uint8)
    a[:, :4] = (0, 0)  # transparent black → white
    a[:, 4:] = (50, 255)  # opaque dark grey
    p = write(tmp_path / "la.png", Image.fromarray(a))
    assert Image.open(p).mode == "LA"
    arr = expect_array(p, Preprocess(8, 1, "stretch"))
    assert uniform(arr[:, :, :4], 255) and uniform(arr[:, :, 4:], 50)


def test_one_bit_png(tmp_path):
    img = Image.new("1", (8, 8), 0)
    img.paste(1, (0, 0, 8, 4))
    p = write(tmp_path / "bits.png", img)
    assert Image.open(p).mode == "1"
    arr = expect_array(p, Preprocess(8, 1, "stretch"))
    assert set(np.unique(arr)) == {0, 255}
    assert uniform(arr[:, :4], 255) and uniform(arr[:, 4:], 0)


def test_rgba_composited_on_white(tmp_path):
    a = np.zeros((8, 8, 4), np.uint8)
    a[:, :, :3] = (0, 0, 200)
    a[:4, :, 3] = 0
    a[4:, :, 3] = 128
    p = write(tmp_path / "rgba.png", Image.fromarray(a))
    arr = expect_array(p, Preprocess(8, 3, "stretch"))
    assert uniform(arr[:, :4], 255)
    # 50% blue over white: (255 * 127 + c * 128) / 255
    assert uniform(arr[:, 4:], (127, 127, 227), tol=1)


def test_float32_tiff(tmp_path):
    a = np.linspace(-2.0, 2.0, 64, dtype=np.float32).reshape(8, 8)
    p = write(tmp_path / "float.tif", Image.fromarray(a), "TIFF")
    assert Image.open(p).mode == "F"
    arr = expect_array(p, Preprocess(8, 1, "stretch"))
    assert arr.min() == 0 and arr.max() == 255
    assert (np.diff(arr[0].astype(int).ravel()) >= 0).all()  # monotone ramp survives


def test_int32_tiff(tmp_path):
    a = (np.arange(64, dtype=np.int32).reshape(8, 8) - 10) * 3000
    p = write(tmp_path / "int.tif", Image.fromarray(a), "TIFF")
    assert Image.open(p).mode == "I"
    arr = expect_array(p, Preprocess(8, 1, "stretch"))
    assert arr[0, 0, 0] == 0 and arr[0, 7, 7] == 255


def test_int32_image_saved_as_png(tmp_path):
    # Pillow cannot write mode "I" as PNG; a 16-bit PNG made from an "I" image
    # comes back as I;16 and must scale by /257.
    img = Image.fromarray(np.full((8, 8), 257 * 33, dtype=np.uint16))
    p = write(tmp_path / "i.png", img)
    assert uniform(expect_array(p, Preprocess(8, 1)), 33)


def test_gif_with_transparency(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 0, 150, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (4, 0, 8, 8))
    p = write(tmp_path / "t.gif", img, "GIF", transparency=0)
    arr = expect_array(p, Preprocess(8, 3, "stretch"))
    assert uniform(arr[:, :, :4], 255)
    assert uniform(arr[:, :, 4:], (0, 150, 0))


# ---------------------------------------------------------------- multi-frame


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue", "lime")]
    p = write(tmp_path / "anim.gif", frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(p).n_frames == 3
    assert uniform(expect_array(p), (255, 0, 0))


@pytest.mark.skipif(not features.check("webp"), reason="no WebP support in Pillow")
def test_animated_webp_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    p = write(tmp_path / "anim.webp", frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert Image.open(p).n_frames == 2
    assert uniform(expect_array(p), (255, 0, 0), tol=2)


def test_multipage_tiff_first_page(tmp_path):
    pages = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    p = write(tmp_path / "pages.tif", pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert Image.open(p).n_frames == 2
    assert uniform(expect_array(p), (255, 0, 0))


# ---------------------------------------------------------------- orientation / geometry


def test_exif_rotated_jpeg(tmp_path):
    # 40 wide x 20 tall, red marker in the top-left corner, rest blue.
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # display = rotate 90° clockwise
    p = write(tmp_path / "rot.jpg", img, "JPEG", exif=exif.tobytes(), quality=95)
    shown = open_image(p)
    assert shown.size == (20, 40)  # dimensions swapped
    r, _g, b = shown.getpixel((15, 5))  # top-left marker is now top-right
    assert r > 200 and b < 60
    r, _g, b = shown.getpixel((4, 5))
    assert b > 200 and r < 60
    arr = expect_array(p, Preprocess(20, 3, "pad"))
    # padded: 10 px content in the middle columns, marker at top of that strip
    assert uniform(arr[:, :, :5], 255) and uniform(arr[:, :, 15:], 255)
    assert arr[0, 2, 12] > 200 and arr[2, 2, 12] < 60


def test_one_by_one_image(tmp_path):
    p = write(tmp_path / "dot.png", Image.new("RGB", (1, 1), (12, 34, 56)))
    for fit in ("center-crop", "pad", "stretch"):
        arr = expect_array(p, Preprocess(16, 3, fit))
        assert tuple(arr[:, 8, 8]) == (12, 34, 56)


def test_extremely_wide_image(tmp_path):
    img = Image.new("RGB", (10_000, 3), (0, 0, 0))
    img.paste((255, 255, 255), (5000 - 2, 0, 5000 + 2, 3))
    p = write(tmp_path / "wide.png", img)
    for fit in ("center-crop", "pad", "stretch"):
        expect_array(p, Preprocess(16, 1, fit))
    crop = expect_array(p, Preprocess(16, 1, "center-crop"))
    assert crop.mean() > 200  # the 3x3 centre is inside the white band
    pad = expect_array(p, Preprocess(16, 1, "pad"))
    assert (pad[0, 0] == 255).all() and (pad[0, -1] == 255).all()


def test_huge_but_legal_jpeg_via_draft(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    img = Image.new("RGB", (4000, 3000), (30, 160, 90))
    img.paste((250, 250, 0), (1500, 1000, 2500, 2000))
    p = write(tmp_path / "photo.jpg", img, "JPEG", quality=85)
    sizes = []
    real_load = JpegImagePlugin.JpegImageFile.load

    def spy_load(self):
        sizes.append(self.size)
        return real_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy_load)
    arr = expect_array(p, Preprocess(64, 3))
    assert sizes and sizes[0] == (500, 375)  # decoded at 1/8 scale, still >= 64
    assert uniform(arr[:, 30:34, 30:34], (250, 250, 0), tol=6)
    assert uniform(arr[:, :3, :3], (30, 160, 90), tol=6)


def test_progressive_jpeg(tmp_path):
    p = write(tmp_path / "prog.jpg", noise(120, 80), "JPEG", progressive=True)
    assert Image.open(p).info.get("progressive")
    a = expect_array(p)
    assert a.std() > 5  # real content, not a flat fill


def test_webp_still(tmp_path):
    if not features.check("webp"):
        pytest.skip("no WebP support")
    p = write(tmp_path / "still.webp", Image.new("RGB", (20, 10), (5, 100, 200)), "WEBP", lossless=True)
    assert uniform(expect_array(p), (5, 100, 200))


def test_bmp(tmp_path):
    p = write(tmp_path / "pic.bmp", Image.new("RGB", (20, 10), (7, 8, 9)), "BMP")
    assert uniform(expect_array(p), (7, 8, 9))


# ---------------------------------------------------------------- names and links


def test_non_utf8_file_name(tmp_path):
    if sys.platform == "darwin":
        pytest.skip("macOS file systems reject non-UTF-8 names")
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    with open(raw, "wb") as f:
        f.write(encode(Image.new("L", (4, 4), 42)))
    files, problems = discover(tmp_path)
    assert problems == [] and len(files) == 1
    assert os.fsencode(files[0]) == raw
    assert uniform(expect_array(files[0], GRAY), 42)
    ((_i, arr, reason, _info),) = decode_files(files, GRAY, workers=1)
    assert reason is None and uniform(arr, 42)
    repr(files[0])  # must not raise


def test_unicode_and_spaces_in_name(tmp_path):
    p = write(tmp_path / "ünï cødé 写真 (1).PNG", Image.new("RGB", (6, 6), (1, 2, 3)))
    files, _ = discover(tmp_path)
    assert files == [p]
    assert uniform(expect_array(p), (1, 2, 3))


def test_broken_symlink(tmp_path):
    good = write(tmp_path / "good.png", Image.new("L", (4, 4)))
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "does-not-exist.jpg")
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "does-not-exist.txt")
    files, problems = discover(tmp_path)
    assert files == [good]
    assert problems == [(tmp_path / "dangling.jpg", "broken symlink")]
    assert expect_error(tmp_path / "dangling.jpg").reason == "file not found"


def test_symlink_to_file_is_followed(tmp_path):
    target = write(tmp_path / "store" / "real.dat", Image.new("L", (4, 4), 5))
    (tmp_path / "alias.png").symlink_to(target)
    files, problems = discover(tmp_path)
    assert files == [tmp_path / "alias.png"] and problems == []
    assert uniform(expect_array(files[0], GRAY), 5)


def test_symlink_loop_of_directories(tmp_path):
    write(tmp_path / "a" / "one.png", Image.new("L", (4, 4)))
    write(tmp_path / "b" / "two.png", Image.new("L", (4, 4)))
    (tmp_path / "a" / "to_b").symlink_to(tmp_path / "b")
    (tmp_path / "b" / "to_a").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "to_root").symlink_to(tmp_path)
    (tmp_path / "self").symlink_to(tmp_path / "self")  # self-referencing link
    files, problems = discover(tmp_path)
    names = sorted(p.name for p in files)
    assert names == ["one.png", "two.png"]  # each directory walked once
    assert all(p.name != "self" for p, _ in problems)


def test_symlink_loop_with_image_name(tmp_path):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    files, problems = discover(tmp_path)
    assert files == []
    assert len(problems) == 1 and problems[0][0] == tmp_path / "loop.png"
    assert expect_error(tmp_path / "loop.png").reason


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read any directory")
def test_unreadable_directory_real(tmp_path):
    locked = tmp_path / "locked"
    write(locked / "x.png", Image.new("L", (4, 4)))
    locked.chmod(0)
    try:
        files, problems = discover(tmp_path)
        assert files == []
        assert problems == [(locked, "cannot read directory: permission denied")]
    finally:
        locked.chmod(0o755)


# ---------------------------------------------------------------- files that change under us


def test_file_changing_while_indexing_is_read_once(tmp_path, monkeypatch):
    """The array and the sha256 must describe the same bytes, even if the
    file is replaced right after it was opened."""
    old_img, new_img = Image.new("L", (8, 8), 10), Image.new("L", (8, 8), 240)
    p = write(tmp_path / "moving.png", old_img)
    old_bytes = p.read_bytes()
    old_mtime = os.stat(p).st_mtime_ns
    replacement = write(tmp_path / "next.tmp", new_img)
    os.utime(replacement, ns=(old_mtime + 5 * 10**9, old_mtime + 5 * 10**9))
    opens = []
    real_os_open = os.open

    def os_open_then_replace(path, *a, **k):
        fd = real_os_open(path, *a, **k)
        if os.fspath(path) == os.fspath(p):
            opens.append(path)
            if len(opens) == 1:
                os.replace(replacement, p)  # anybody opening again sees new content
        return fd

    monkeypatch.setattr(decode.os, "open", os_open_then_replace)
    ((_i, arr, reason, info),) = decode_files([p], GRAY, workers=1)
    assert opens == [p]  # exactly one open of the path
    assert reason is None
    assert info["sha256"] == hashlib.sha256(old_bytes).hexdigest()
    assert info["size"] == len(old_bytes)
    assert info["mtime_ns"] == old_mtime
    assert uniform(arr, 10)  # decoded from the same bytes that were hashed
    assert p.read_bytes() != old_bytes  # the file really did change


def test_load_path_reads_file_once(tmp_path, monkeypatch):
    p = write(tmp_path / "once.png", Image.new("L", (8, 8), 77))
    calls = []
    real_os_open = os.open
    real_image_open = Image.open

    def count_os_open(path, *a, **k):
        calls.append(("os.open", os.fspath(path)))
        return real_os_open(path, *a, **k)

    def count_image_open(fp, *a, **k):
        if isinstance(fp, (str, os.PathLike)):
            calls.append(("Image.open", os.fspath(fp)))
        return real_image_open(fp, *a, **k)

    monkeypatch.setattr(decode.os, "open", count_os_open)
    monkeypatch.setattr(Image, "open", count_image_open)
    assert uniform(load(p, GRAY), 77)
    assert calls == [("os.open", str(p))]


# ---------------------------------------------------------------- batch decoding


@pytest.mark.parametrize("workers", [1, 2])
def test_decode_files_mixed_good_and_bad(tmp_path, workers):
    paths = []
    expected: list[tuple[str, object]] = []

    def add(name, payload, want):
        p = tmp_path / name
        if isinstance(payload, Image.Image):
            write(p, payload, "JPEG" if name.endswith(".jpg") else "PNG")
        elif payload is not None:
            p.write_bytes(payload)
        paths.append(p)
        expected.append(want)

    add("00.png", Image.new("L", (8, 8), 1), 1)
    add("01.png", b"", "empty file")
    add("02.png", Image.new("L", (8, 8), 2), 2)
    add("03.jpg", b"hello", "not a recognised image format")
    add("04.png", None, "file not found")
    add("05.png", png_header_only(100_000, 100_000), "image too large: 100000x100000 pixels")
    add("06.jpg", Image.new("L", (8, 8), 200), 200)
    d = tmp_path / "07.png"
    d.mkdir()
    paths.append(d)
    expected.append("is a directory")
    add("08.png", Image.new("L", (8, 8), 3), 3)
    out = list(decode_files(paths, Preprocess(8, 1), workers=workers, chunksize=2))
    assert [r[0] for r in out] == list(range(len(paths)))
    for (i, arr, reason, info), want in zip(out, expected):
        if isinstance(want, int):
            assert reason is None, (i, reason)
            assert uniform(arr, want, tol=1)
            assert info["sha256"] == hashlib.sha256(paths[i].read_bytes()).hexdigest()
        else:
            assert arr is None
            assert reason == want, (i, reason)


def test_decode_files_workers_identical_on_hostile_mix(tmp_path):
    paths = [
        write(tmp_path / "a.png", noise(33, 17, 1)),
        write(tmp_path / "b.jpg", noise(64, 48, 2), "JPEG"),
        write(tmp_path / "c.gif", noise(20, 20, 3).convert("P"), "GIF"),
        write(tmp_path / "d.tif", Image.fromarray(np.arange(100, dtype=np.float32).reshape(10, 10)), "TIFF"),
        write(tmp_path / "e.bmp", noise(9, 31, 4), "BMP"),
    ]
    (tmp_path / "f.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    paths.append(tmp_path / "f.png")
    one = list(decode_files(paths, RGB, workers=1))
    two = list(decode_files(paths, RGB, workers=2, chunksize=1))
    for a, b in zip(one, two, strict=True):
        assert a[0] == b[0] and a[2] == b[2] and a[3] == b[3]
        if a[1] is None:
            assert b[1] is None
        else:
            assert np.array_equal(a[1], b[1])
    assert one[-1][1] is None and one[-1][2]

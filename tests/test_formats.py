"""Which formats are read (simsearch.formats): the image extensions discovered; HEIC/HEIF (phone
photos, via pillow-heif) and AVIF (Pillow with libavif): discovered always, decoded when this
installation can, otherwise skipped with a reason naming what would read them.

All inputs are generated here; nothing is downloaded.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image, features

from simsearch import formats, pool
from simsearch.decode import load, open_image
from simsearch.discover import discover
from simsearch.errors import ImageError, SimsearchError
from simsearch.formats import IMAGE_EXTENSIONS
from simsearch.pool import decode_files
from simsearch.preprocess import Preprocess, preprocess, probe

PRE = Preprocess(32, 3, "stretch")
HEIF_REASON = "HEIC/HEIF needs the pillow-heif package (pip install pillow-heif)"
AVIF_REASON = "AVIF needs Pillow built with libavif (Pillow >= 11.3 wheels)"
# Only the ISO-BMFF 'ftyp' box of an iPhone-style HEIC / of an AVIF file, then junk: enough for the
# "cannot be decoded here" path, which must not need the codec to recognise the file.
HEIC_HEADER = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
AVIF_HEADER = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64

needs_avif = pytest.mark.skipif(not features.check("avif"), reason="Pillow without libavif")


def blocks(w: int = 64, h: int = 48) -> Image.Image:
    """Four flat colour quadrants: survives lossy coding well, and shows any rotation/flip."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (220, 30, 30)
    a[: h // 2, w // 2 :] = (30, 200, 40)
    a[h // 2 :, : w // 2] = (30, 40, 210)
    a[h // 2 :, w // 2 :] = (240, 240, 40)
    return Image.fromarray(a)


def heic_bytes(img: Image.Image, **kw) -> bytes:
    pytest.importorskip("pillow_heif")
    if not formats._HEIF_READABLE:
        pytest.skip("pillow-heif present but its opener could not be registered")
    buf = io.BytesIO()
    img.save(buf, format="HEIF", quality=90, **kw)
    return buf.getvalue()


def avif_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="AVIF", quality=90)
    return buf.getvalue()


def assert_close(arr: np.ndarray, img: Image.Image, mean_tol: float = 6.0, max_tol: int = 60) -> None:
    expected = preprocess(img, PRE).astype(np.int16)
    diff = np.abs(arr.astype(np.int16) - expected)
    assert diff.mean() <= mean_tol, diff.mean()
    assert diff.max() <= max_tol, diff.max()


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


# ---------------------------------------------------------------- discovery


def test_heif_and_avif_extensions_are_always_discovered():
    assert {".heic", ".heif", ".hif", ".avif"} <= IMAGE_EXTENSIONS


def test_discover_finds_heic_heif_hif_avif(tmp_path):
    for name in ("a.heic", "b.HEIC", "c.heif", "d.hif", "e.avif", "notes.txt"):
        (tmp_path / name).write_bytes(HEIC_HEADER)
    files, problems = discover(tmp_path)
    assert [p.name for p in files] == ["a.heic", "b.HEIC", "c.heif", "d.hif", "e.avif"]
    assert problems == []
    assert discover(tmp_path / "a.heic") == ([tmp_path / "a.heic"], [])


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    "fmt, encode",
    [
        ("HEIF", lambda img: heic_bytes(img)),
        pytest.param("AVIF", lambda img: avif_bytes(img), marks=needs_avif),
    ],
)
def test_heic_and_avif_decode_close_to_original(tmp_path, fmt, encode):
    img = blocks()
    path = tmp_path / ("photo.heic" if fmt == "HEIF" else "photo.avif")
    path.write_bytes(encode(img))
    assert discover(tmp_path)[0] == [path]
    im = open_image(path)
    assert im.format == fmt and im.size == img.size
    assert_close(load(path, PRE), img)
    assert_close(load(path.read_bytes(), PRE), img)


def test_heic_exif_orientation_applied_once(tmp_path):
    img = blocks(64, 32)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    (tmp_path / "r.heic").write_bytes(heic_bytes(img, exif=exif.tobytes()))
    jpeg = io.BytesIO()
    img.save(jpeg, format="JPEG", quality=95, exif=exif.tobytes())
    (tmp_path / "r.jpg").write_bytes(jpeg.getvalue())

    want = img.transpose(Image.Transpose.ROTATE_270)
    for name in ("r.heic", "r.jpg"):
        im = open_image(tmp_path / name)
        assert im.size == (32, 64), name  # rotated, and not rotated back by a second pass
        diff = np.abs(np.asarray(im.convert("RGB"), np.int16) - np.asarray(want, np.int16))
        assert diff.mean() < 6, (name, diff.mean())


def test_heic_in_decode_worker_processes(tmp_path, monkeypatch):
    """Workers started with 'spawn' only have what importing simsearch.pool (→ decode → formats) registers."""
    import multiprocessing

    data = heic_bytes(blocks())
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.heic")
        paths[-1].write_bytes(data)
    monkeypatch.setattr(pool, "_mp_context", lambda: multiprocessing.get_context("spawn"))
    out = list(decode_files(paths, PRE, workers=2, chunksize=1))
    assert [reason for _, _, reason, _ in out] == [None] * 4
    assert_close(out[0][1], blocks())


def test_truncated_heic_is_a_one_line_error(tmp_path):
    data = heic_bytes(blocks())
    for cut in (len(data) // 2, 40, 20):
        with pytest.raises(ImageError) as ei:
            load(data[:cut], PRE)
        assert "\n" not in ei.value.reason and ei.value.reason


def test_jpeg_named_heic_still_decodes(tmp_path):
    """Content decides, not the name (exports often keep a .heic name on a JPEG)."""
    buf = io.BytesIO()
    blocks().save(buf, format="JPEG", quality=95)
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(buf.getvalue())
    assert_close(load(path, PRE), blocks())


# ---------------------------------------------------------------- codec missing


def test_heic_without_pillow_heif_is_skipped_with_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "_HEIF_READABLE", False)
    path = tmp_path / "IMG_0001.heic"
    path.write_bytes(HEIC_HEADER)
    files, problems = discover(tmp_path)
    assert files == [path] and problems == []
    (res,) = list(decode_files(files, PRE, workers=1))
    assert res[1] is None and res[2] == HEIF_REASON
    with pytest.raises(ImageError, match="pillow-heif"):
        open_image(path)


def test_a_folder_of_unreadable_heic_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "_HEIF_READABLE", False)
    for i in range(3):
        (tmp_path / f"IMG_{i}.heic").write_bytes(HEIC_HEADER)
    with pytest.raises(SimsearchError, match="no readable images among 3 files .*pillow-heif"):
        probe(discover(tmp_path)[0])


def test_real_heic_without_pillow_heif_is_skipped_with_reason(tmp_path, monkeypatch):
    data = heic_bytes(blocks())
    monkeypatch.setattr(formats, "_HEIF_READABLE", False)
    with pytest.raises(ImageError) as ei:
        load(data, PRE)
    assert ei.value.reason == HEIF_REASON


def test_avif_without_libavif_is_skipped_with_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "_AVIF_READABLE", False)
    path = tmp_path / "new.avif"
    path.write_bytes(AVIF_HEADER)
    (res,) = list(decode_files(discover(tmp_path)[0], PRE, workers=1))
    assert res[2] == AVIF_REASON


def test_reading_works_and_reports_without_pillow_heif(tmp_path):
    """pillow-heif is a dependency, but formats.py and the modules that read images must work (and
    say why) when it is missing."""
    (tmp_path / "x.heic").write_bytes(HEIC_HEADER)
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["pillow_heif"] = None  # import pillow_heif -> ImportError
        from simsearch import discover, formats, pool, preprocess
        assert not formats._HEIF_READABLE
        assert ".heic" in formats.IMAGE_EXTENSIONS
        files, _ = discover.discover({str(tmp_path)!r})
        (res,) = pool.decode_files(files, preprocess.Preprocess(16, 3), workers=1)
        print(res[2])
        assert "torch" not in sys.modules and "faiss" not in sys.modules
        """
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == HEIF_REASON


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIF"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "HEIF"),
        (b"\x00\x00\x00\x14ftypmif1\x00\x00\x00\x00mif1", "HEIF"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "AVIF"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif", "AVIF"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", None),  # an MP4 video
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 16, None),
    ],
)
def test_container_sniffing(head, kind):
    assert formats._heif_container(head + b"\x00" * 32) == kind


def test_container_sniffing_short_input():
    assert formats._heif_container(b"\x00\x00\x00\x18ftypheic") is None

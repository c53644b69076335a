"""Fuzz the decode path with mutated bytes of valid PNG/JPEG/GIF/BMP/TIFF/WebP seeds.

Property: ``load(data, pre)`` / ``open_image(data)`` + ``preprocess`` either
return a C-contiguous uint8 array of shape (channels, size, size) or raise
ImageError with a one-line reason — never any other exception and never a
hang.  ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False throughout.

The quick variant (a few hundred derandomized examples) runs by default; the
full variant (>= 10,000 random inputs) is marked ``slow``.
"""

from __future__ import annotations

import faulthandler
import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, features

from simsearch.decode import load, open_image
from simsearch.errors import ImageError
from simsearch.preprocess import Preprocess, preprocess

# A decode that takes this long on a few-KB input is a hang, not slowness.
# faulthandler fires from a C-level thread, so it also catches loops inside
# Pillow's C decoders; it dumps all stacks and exits the test process.
HANG_SECONDS = 120

PRES = [Preprocess(16, 3), Preprocess(16, 1, "pad"), Preprocess(12, 3, "stretch"), Preprocess(20, 1)]


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _make_seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:12, 0:16]
    rgb = np.stack([x * 16, y * 20, (x + y) * 9], axis=-1).astype(np.uint8)
    rgb[::3, ::5] = rng.integers(0, 256, rgb[::3, ::5].shape, dtype=np.uint8)
    im = Image.fromarray(rgb)
    rgba = Image.fromarray(np.dstack([rgb, (x * 16).astype(np.uint8)]))
    gray = im.convert("L")
    pal = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds = {
        "png-rgb": _encode(im, "PNG"),
        "png-rgba": _encode(rgba, "PNG"),
        "png-p-trns": _encode(pal, "PNG", transparency=0),
        "png-la": _encode(gray.convert("LA"), "PNG"),
        "png-i16": _encode(Image.fromarray(np.asarray(gray).astype(np.uint16) * 257), "PNG"),
        "png-1bit": _encode(gray.convert("1"), "PNG"),
        "png-optimized": _encode(im, "PNG", optimize=True),
        "jpeg": _encode(im, "JPEG", quality=80),
        "jpeg-progressive": _encode(im, "JPEG", progressive=True),
        "jpeg-gray": _encode(gray, "JPEG"),
        "jpeg-cmyk": _encode(im.convert("CMYK"), "JPEG"),
        "jpeg-exif": _encode(im, "JPEG", exif=exif.tobytes()),
        "gif": _encode(pal, "GIF"),
        "gif-anim": _encode(
            pal, "GIF", save_all=True, append_images=[pal.transpose(Image.Transpose.ROTATE_180)], transparency=0
        ),
        "bmp": _encode(im, "BMP"),
        "bmp-p": _encode(pal, "BMP"),
        "tiff": _encode(im, "TIFF"),
        "tiff-lzw": _encode(im, "TIFF", compression="tiff_lzw"),
        "tiff-packbits": _encode(gray, "TIFF", compression="packbits"),
        "tiff-float": _encode(Image.fromarray(np.asarray(gray, dtype=np.float32) / 7 - 3), "TIFF"),
        "tiff-multipage": _encode(im, "TIFF", save_all=True, append_images=[gray.convert("RGB")]),
    }
    if features.check("webp"):
        seeds["webp-lossy"] = _encode(im, "WEBP", quality=70)
        seeds["webp-lossless"] = _encode(rgba, "WEBP", lossless=True)
        seeds["webp-anim"] = _encode(
            im, "WEBP", save_all=True, append_images=[im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        )
    return seeds


SEEDS = _make_seeds()
SEED_NAMES = sorted(SEEDS)

INTERESTING = [
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x01",
    b"\x00\x00",
    b"\xff\xff",
    b"\x7f\xff",
    b"\x80\x00",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x00\x01\x00\x00",
    b"\x00\x00\x40\x00",
]


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute PNG chunk CRCs so mutations reach the decoder, not the CRC check."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out = bytearray(data)
    pos = 8
    while pos + 12 <= len(out):
        (length,) = struct.unpack(">I", out[pos : pos + 4])
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        out[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(out[pos + 4 : end])) & 0xFFFFFFFF)
        pos = end + 4
    return bytes(out)


@st.composite
def mutated_images(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(SEED_NAMES))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3, 6]))):
        n = len(data)
        if n == 0:
            break
        # Most interesting structure sits in the first bytes (headers).
        pos = draw(st.one_of(st.integers(0, min(n - 1, 96)), st.integers(0, n - 1)))
        op = draw(st.sampled_from(["flip", "byte", "interesting", "truncate", "insert", "delete", "dup", "splice"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op == "interesting":
            val = draw(st.sampled_from(INTERESTING))
            data[pos : pos + len(val)] = val
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "dup":
            k = draw(st.integers(1, 256))
            data[pos:pos] = data[pos : pos + k]
        else:  # splice: graft part of another seed
            other = SEEDS[draw(st.sampled_from(SEED_NAMES))]
            start = draw(st.integers(0, len(other) - 1))
            data[pos:] = other[start : start + draw(st.integers(1, 512))]
    if draw(st.booleans()):
        data = bytearray(fix_png_crcs(bytes(data)))
    return name, bytes(data)


def check_decode(data: bytes, pre: Preprocess, via_open_image: bool) -> bool:
    """Run the property once; returns True if it decoded to an array."""
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            decoded = _check_decode(data, pre, via_open_image)
    finally:
        faulthandler.cancel_dump_traceback_later()
    # decoding hostile bytes must not spray Python warnings at the user
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    return decoded


def _check_decode(data: bytes, pre: Preprocess, via_open_image: bool) -> bool:
    try:
        if via_open_image:
            img = open_image(data)
            assert img.size[0] > 0 and img.size[1] > 0
            try:
                arr = preprocess(img, pre)
            except ImageError as err:
                assert err.reason and "\n" not in err.reason
                return False
        else:
            arr = load(data, pre)
    except ImageError as err:
        assert err.path == "<bytes>"
        assert err.reason and "\n" not in err.reason and len(err.reason) < 300
        return False
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.uint8
    assert arr.shape == (pre.channels, pre.size, pre.size)
    assert arr.flags["C_CONTIGUOUS"]
    return True


COUNTS = {"inputs": 0, "decoded": 0}


def _run(sample: tuple[str, bytes], pre_index: int, via_open_image: bool) -> None:
    _, data = sample
    COUNTS["inputs"] += 1
    COUNTS["decoded"] += check_decode(data, PRES[pre_index], via_open_image)


_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seeds_are_valid(name):
    """Fuzzing starts from images that really decode."""
    for pre in PRES:
        assert check_decode(SEEDS[name], pre, via_open_image=False)
        assert check_decode(SEEDS[name], pre, via_open_image=True)


def test_seed_set_covers_required_formats():
    formats = {Image.open(io.BytesIO(d)).format for d in SEEDS.values()}
    expected = {"PNG", "JPEG", "GIF", "BMP", "TIFF"} | ({"WEBP"} if features.check("webp") else set())
    assert expected <= formats


def test_fix_png_crcs_makes_mutated_png_pass_crc():
    data = bytearray(SEEDS["png-rgb"])
    data[23] ^= 0x01  # IHDR height 12 -> 13
    with pytest.raises(ImageError):
        open_image(bytes(data))  # IHDR CRC mismatch
    # Pillow quirk: a complete zlib stream with too few rows decodes, missing rows black
    assert open_image(fix_png_crcs(bytes(data))).size == (16, 13)


@settings(max_examples=300, derandomize=True, **_COMMON)
@given(mutated_images(), st.integers(0, len(PRES) - 1), st.booleans())
def test_fuzz_decode_quick(sample, pre_index, via_open_image):
    _run(sample, pre_index, via_open_image)


@pytest.mark.slow
def test_fuzz_decode_full():
    start, start_decoded = COUNTS["inputs"], COUNTS["decoded"]

    @settings(max_examples=10_000, **_COMMON)
    @given(mutated_images(), st.integers(0, len(PRES) - 1), st.booleans())
    def fuzz(sample, pre_index, via_open_image):
        _run(sample, pre_index, via_open_image)

    fuzz()
    ran = COUNTS["inputs"] - start
    print(f"\nfull fuzz: {ran} inputs, {COUNTS['decoded'] - start_decoded} decoded to arrays")
    assert ran >= 10_000

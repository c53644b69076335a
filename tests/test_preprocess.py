"""Unit tests for simsearch.preprocess: the Preprocess settings, preprocess(), from_array() and probe()."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image
from synth import noise, write

from simsearch.errors import ImageError, SimsearchError
from simsearch.preprocess import Preprocess, content_box, from_array, preprocess, probe


def stripes(w: int = 30, h: int = 10) -> Image.Image:
    """Left third red, middle third green, right third blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 3] = (255, 0, 0)
    a[:, w // 3 : 2 * w // 3] = (0, 255, 0)
    a[:, 2 * w // 3 :] = (0, 0, 255)
    return Image.fromarray(a)


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


# ---------------------------------------------------------------- preprocess


@pytest.mark.parametrize("fit", ["center-crop", "pad", "stretch", "trim"])
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


def margin_drawing(canvas=(300, 200), at=(170, 60), bg=(255, 255, 255)) -> Image.Image:
    """A 90×60 drawing (``stripes`` with a black frame) placed off-centre on a plain canvas."""
    img = Image.new("RGB", canvas, bg)
    d = stripes(90, 60)
    a = np.asarray(d).copy()
    a[:3], a[-3:], a[:, :3], a[:, -3:] = 0, 0, 0, 0
    img.paste(Image.fromarray(a), at)
    return img


def test_preprocess_trim_takes_the_square_around_the_content():
    """``trim``: the plain margin is cut to the square around the drawing (centre-crop would take the
    canvas's middle, missing most of it), so a copy with another margin gives the same input."""
    pre = Preprocess(30, 3, "trim")
    out = preprocess(margin_drawing(), pre)
    # the 90x60 drawing is centred in its 90x90 square: 5 rows of margin above and below it at 30 px
    assert (out[:, :4, :] == 255).all() and (out[:, 26:, :] == 255).all()
    assert tuple(out[:, 15, 5]) == (255, 0, 0) and tuple(out[:, 15, 15]) == (0, 255, 0)
    assert tuple(out[:, 15, 25]) == (0, 0, 255)
    crop = preprocess(margin_drawing(), Preprocess(30, 3, "center-crop"))
    assert not (crop[:, 15, 15] == (0, 255, 0)).all()  # the canvas's middle: mostly margin
    for canvas, at, bg in (((400, 500), (20, 300), (255, 255, 255)), ((150, 150), (30, 40), (40, 40, 40))):
        other = preprocess(margin_drawing(canvas, at, bg), pre)
        if bg == (255, 255, 255):
            assert np.abs(other.astype(int) - out).mean() < 10  # the box is found to a pixel or two of 256
        else:  # another margin colour: the same drawing, on its own colour above and below
            assert np.abs(other[:, 10:20].astype(int) - out[:, 10:20]).mean() < 10
    # no plain edge (a photo), or no margin: centre-crop as before
    for img in (stripes(60, 10), noise(80, 50)):
        np.testing.assert_array_equal(preprocess(img, pre), preprocess(img, Preprocess(30, 3, "center-crop")))
    # content wider than the picture is tall: the square is clipped to the picture, then centre-cropped
    wide = margin_drawing((400, 70), (100, 5))
    box = content_box(wide)
    assert box is not None and box[2] - box[0] > 70  # wider than the picture is tall
    x0 = (box[0] + box[2]) / 2 - 35  # the 70 px square in the middle of the content
    want = wide.resize((30, 30), Image.Resampling.BILINEAR, box=(x0, 0, x0 + 70, 70), reducing_gap=3.0)
    np.testing.assert_array_equal(preprocess(wide, pre), np.asarray(want).transpose(2, 0, 1))
    assert box[1] <= 5 and box[3] >= 65  # never cut into the drawing


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

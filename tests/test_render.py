"""Contact sheets draw each image the way the model sees it: decoded by decode.open_image,
transparency composited onto white (preprocess.to_display), aspect ratio kept in the tile."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from simsearch.errors import ImageError
from simsearch.preprocess import to_display
from simsearch.query import Hit
from simsearch.render import contact_sheet

PAD, CAP, THUMB = 8, 30, 64  # contact_sheet's layout: tiles at x = PAD + col*(THUMB+PAD), y = PAD + row*(THUMB+CAP+PAD)
WHITE, RED = (255, 255, 255), (255, 0, 0)


def tile(sheet: np.ndarray, row: int, col: int) -> np.ndarray:
    y, x = PAD + row * (THUMB + CAP + PAD), PAD + col * (THUMB + PAD)
    return sheet[y : y + THUMB, x : x + THUMB]


def draw(tmp_path, rows) -> np.ndarray:
    out = contact_sheet(rows, tmp_path / "sheet.png", thumb=THUMB)
    with Image.open(out) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def transparent_with_red_square(size: int = 60, square: int = 20) -> Image.Image:
    a = np.zeros((size, size, 4), np.uint8)  # fully transparent black
    lo = (size - square) // 2
    a[lo : lo + square, lo : lo + square] = (255, 0, 0, 255)
    return Image.fromarray(a, "RGBA")


def assert_white_background_red_centre(t: np.ndarray) -> None:
    for y, x in ((1, 1), (1, THUMB - 2), (THUMB - 2, 1), (THUMB - 2, THUMB - 2), (THUMB // 2, 2)):
        assert tuple(t[y, x]) == WHITE, (y, x, t[y, x])
    assert tuple(t[THUMB // 2, THUMB // 2]) == RED


def test_transparent_png_is_drawn_on_white(tmp_path):
    src = tmp_path / "icon.png"
    transparent_with_red_square().save(src)
    hit = Hit(id=0, path="icon.png", score=0.5, rank=1, root=str(tmp_path))
    sheet = draw(tmp_path, [(src, "icon.png", [hit])])
    assert_white_background_red_centre(tile(sheet, 0, 0))  # the query, from its path
    assert_white_background_red_centre(tile(sheet, 0, 1))  # the neighbour, from the hit's file


def test_in_memory_queries_are_composited_too(tmp_path):
    rgba = transparent_with_red_square()
    arr = np.asarray(rgba)
    p = rgba.convert("P")  # palette + transparency index
    p.info["transparency"] = p.getpixel((0, 0))
    rows = [
        (rgba, "pil rgba", []),
        (arr, "uint8 HxWx4", []),
        (arr.astype(np.float64) / 255.0, "float HxWx4", []),
        (p, "palette", []),
    ]
    sheet = draw(tmp_path, rows)
    for r in range(len(rows)):
        assert_white_background_red_centre(tile(sheet, r, 0))


def test_arrays_are_scaled_like_queries(tmp_path):
    """Float 0..1 arrays used to be cast straight to uint8 (all black)."""
    gray = np.full((20, 20), 0.5)
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[...] = (0, 0, 255)
    sheet = draw(tmp_path, [(gray, "gray", []), (rgb, "rgb", [])])
    assert tuple(tile(sheet, 0, 0)[THUMB // 2, THUMB // 2]) == (128, 128, 128)
    assert tuple(tile(sheet, 1, 0)[THUMB // 2, THUMB // 2]) == (0, 0, 255)


def test_wide_image_keeps_its_aspect(tmp_path):
    src = tmp_path / "wide.png"
    Image.new("RGB", (200, 50), (0, 0, 255)).save(src)
    t = tile(draw(tmp_path, [(src, "wide.png", [])]), 0, 0)
    blue = np.all(t == (0, 0, 255), axis=2)
    ys, xs = np.nonzero(blue)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert w == THUMB and h == THUMB // 4
    assert blue.sum() == w * h  # one solid rectangle...
    assert np.all(t[~blue] == 255)  # ...letterboxed on white
    assert ys.min() == (THUMB - h) // 2  # centred


def test_unreadable_sources_get_a_placeholder(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    rows = [(tmp_path / "junk.png", "junk", []), (tmp_path / "missing.png", "missing", []), (None, "none", [])]
    sheet = draw(tmp_path, rows)
    for r in range(len(rows)):
        assert tuple(tile(sheet, r, 0)[1, 1]) == (230, 230, 230)


def test_to_display():
    rgba = transparent_with_red_square()
    out = to_display(rgba)
    assert out.mode == "RGB" and out.size == rgba.size
    assert out.getpixel((0, 0)) == WHITE and out.getpixel((30, 30)) == RED
    assert to_display(Image.new("I;16", (4, 4), 65535)).getpixel((0, 0)) == WHITE
    assert to_display(np.ones((3, 5))).size == (5, 3)
    with pytest.raises(ValueError):
        to_display(np.ones((5, 5, 7)))
    with pytest.raises(ImageError):
        to_display(Image.new("RGB", (0, 3)))


def test_table_and_json_mark_the_hits_the_pixel_check_found_copies():
    import json

    from simsearch.render import json_lines, table

    hits = [Hit(4, "a/copy.png", 0.91, 1, "/r", pixel=0.9731), Hit(2, "b/other.png", 0.95, 2, "/r")]
    out = table([("q.png", hits)]).splitlines()
    assert out[1].split() == ["rank", "score", "copy", "path"]
    assert out[2].split()[:3] == ["1", "0.9100", "0.973"] and out[3].split()[:2] == ["2", "0.9500"]
    assert "copy" not in table([("q.png", hits[1:])])  # no copies found: the usual three columns
    got = json.loads(json_lines([("q.png", hits)]))["hits"]
    assert [h["pixel"] for h in got] == [0.9731, None]

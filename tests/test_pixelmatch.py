"""pixelmatch.similarities (all pairs at once) against pixelmatch.similarity (one pair, the
reference): the same numbers on random and structured pairs, cropped copies, flat pictures and
pairs whose coordinate search ends on many different crops."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from threadpoolctl import threadpool_limits

from simsearch import pixelmatch, preprocess

TOL = 1e-5


def drawing(rng: np.random.Generator, size=(160, 120)) -> Image.Image:
    """Random shapes in random colours on a random light background."""
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(180, 256, 3)))
    d = ImageDraw.Draw(img)
    w, h = size
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            d.ellipse((x0, y0, x1, y1), fill=colour, outline="black", width=2)
        else:
            d.rectangle((x0, y0, x1, y1), fill=colour)
    d.line((0, int(rng.integers(0, h)), w, int(rng.integers(0, h))), fill="black", width=3)
    return img


def copy_of(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Cropped by 0–8% a side (each side its own), resized, re-saved as JPEG."""
    w, h = img.size
    c = rng.uniform(0, 0.08, 4)
    box = (round(c[0] * w), round(c[1] * h), w - round(c[2] * w), h - round(c[3] * h))
    out = img.crop(box).resize((int(rng.integers(60, 200)), int(rng.integers(60, 200))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=int(rng.integers(50, 95)))
    return Image.open(io.BytesIO(buf.getvalue()))


def chosen_crop(ga: np.ndarray, gb: np.ndarray) -> tuple[int, int, int]:
    """Which picture ``aligned`` cropped (0: A, 1: B) and the (top/bottom, left/right) maps of that
    crop, found by matching its result against every crop: a test-side view of the reference."""
    ta, tb = pixelmatch.aligned(ga, gb)
    maps = pixelmatch._crop_maps(pixelmatch.GRID, pixelmatch.SIDE, pixelmatch.CROPS)
    for which, (g, t) in enumerate(((ga, ta), (gb, tb))):
        for r in range(len(maps)):
            crops = pixelmatch._cols(maps, pixelmatch._rows(maps[r], g))
            hit = np.flatnonzero(np.abs(crops - t[None]).max(axis=(1, 2, 3)) < 1e-6)
            if len(hit) and (r, int(hit[0])) != (0, 0):
                return which, r, int(hit[0])
    return 0, 0, 0


@pytest.fixture(scope="module")
def grids() -> dict:
    rng = np.random.default_rng(7)
    out: dict = {}
    for i in range(14):
        img = drawing(rng)
        out[("drawing", i)] = pixelmatch.grid(img)
        for j in range(3):
            out[("copy", i, j)] = pixelmatch.grid(copy_of(img, rng))
    for i in range(6):
        out[("noise", i)] = rng.random((pixelmatch.GRID, pixelmatch.GRID, 3)).astype(np.float32)
    for v in (0, 37, 128, 200, 255):
        out[("flat", v)] = pixelmatch.grid(Image.new("RGB", (40, 30), (v, v, v)))
    out[("red",)] = pixelmatch.grid(Image.new("RGB", (40, 30), (200, 20, 20)))
    # one grid stored as bytes: similarities takes grid_bytes as well
    out[("bytes", 0)] = pixelmatch.grid_bytes(drawing(rng))
    return out


@pytest.fixture(scope="module")
def pairs(grids) -> list:
    rng = np.random.default_rng(8)
    keys = list(grids)
    out = []
    for i in range(14):  # each drawing with its copies, both ways round, and copies with each other
        out += [(("drawing", i), ("copy", i, j)) for j in range(3)]
        out += [(("copy", i, 0), ("drawing", i)), (("copy", i, 1), ("copy", i, 2))]
    for i in range(13):  # look-alikes that are not copies
        out.append((("drawing", i), ("copy", i + 1, 0)))
    flats = [k for k in keys if k[0] in ("flat", "red")]
    out += [(p, q) for p in flats for q in flats]  # flat against flat, itself included
    out += [(p, ("drawing", 0)) for p in flats] + [(("noise", 1), p) for p in flats]
    out += [(keys[i], keys[j]) for i, j in rng.integers(0, len(keys), (150, 2))]  # anything with anything
    out += [(("bytes", 0), ("drawing", 3)), (("drawing", 3), ("bytes", 0))]
    return out


def test_similarities_equal_the_one_pair_reference(grids, pairs):
    ref = pixelmatch.similarities_one_by_one(pairs, grids.get)
    fast = pixelmatch.similarities(pairs, grids.get)
    assert fast.dtype == np.float32 and fast.shape == (len(pairs),)
    worst = int(np.argmax(np.abs(fast - ref)))
    assert np.abs(fast - ref).max() < TOL, (pairs[worst], ref[worst], fast[worst])
    # the banded products add the same terms as the full ones, so at most float32 rounding apart
    assert np.abs(fast - ref).max() <= 1e-6, (pairs[worst], ref[worst], fast[worst])
    # … and at 48 px with 2.5% crop steps, this OpenBLAS gives the same floats (the same products, the same
    # means, the same correlation code); at 24 px with 1.25% steps it rounds a few last bits differently
    old = {"side": 48, "crops": (0.0, 0.025, 0.05, 0.075)}
    with threadpool_limits(limits=1, user_api="blas"):
        f = pixelmatch.as_float
        ref48 = np.array([pixelmatch.similarity(f(grids[a]), f(grids[b]), **old) for a, b in pairs], np.float32)
    fast48 = pixelmatch.similarities(pairs, grids.get, **old)
    assert np.array_equal(fast48, ref48), [(pairs[i], ref48[i], fast48[i]) for i in np.flatnonzero(fast48 != ref48)[:5]]
    # the pairs exercise what the batching must get right: either picture cropped, crops on both axes,
    # many different maps on each
    with threadpool_limits(limits=1, user_api="blas"):
        crops = [chosen_crop(pixelmatch.as_float(grids[a]), pixelmatch.as_float(grids[b])) for a, b in pairs[:70]]
    assert {w for w, _, _ in crops} == {0, 1}
    assert len({r for _, r, _ in crops}) >= 6 and len({c for _, _, c in crops}) >= 6, crops
    assert sum(r != 0 and c != 0 for _, r, c in crops) >= 10, crops


def test_flat_pictures_and_the_reference(grids):
    keys = [k for k in grids if k[0] == "flat"]
    got = pixelmatch.similarities([(p, q) for p in keys for q in keys], grids.get)
    want = [1 - abs(p[1] - q[1]) / 255 for p in keys for q in keys]
    np.testing.assert_allclose(got, want, atol=TOL)
    assert pixelmatch.similarities([(("flat", 128), ("drawing", 2))], grids.get)[0] == 0.0


def test_a_missing_grid_gives_nan_and_is_fetched_once(grids):
    calls: dict = {}

    def grid_of(key):
        calls[key] = calls.get(key, 0) + 1
        return None if key == "gone" else grids[key]

    pairs = [(("drawing", 0), "gone"), (("drawing", 0), ("copy", 0, 0)), ("gone", ("drawing", 1))]
    got = pixelmatch.similarities(pairs, grid_of)
    assert np.isnan(got[0]) and np.isnan(got[2]) and got[1] > 0.9
    assert set(calls.values()) == {1}
    assert np.isnan(pixelmatch.similarities([("gone", "gone")], grid_of)).all()
    assert len(pixelmatch.similarities([], grid_of)) == 0


def test_threads_blocks_and_order_do_not_change_a_bit(grids, pairs, monkeypatch):
    one = pixelmatch.similarities(pairs, grids.get, threads=1)
    two = pixelmatch.similarities(pairs, grids.get, threads=2)
    np.testing.assert_array_equal(one, two)
    monkeypatch.setattr(pixelmatch, "SOURCES_AT_ONCE", 3)
    monkeypatch.setattr(pixelmatch, "KEYS_AT_ONCE", 2)
    monkeypatch.setattr(pixelmatch, "DIRECTIONS_AT_ONCE", 1)
    small = pixelmatch.similarities(pairs[::-1], grids.get, threads=2)[::-1]
    np.testing.assert_array_equal(small, one)


def test_near_ties_go_to_the_reference_and_without_that_stay_close(grids, pairs, monkeypatch):
    ref = pixelmatch.similarities_one_by_one(pairs, grids.get)
    monkeypatch.setattr(pixelmatch, "TIE", 1.0)  # every pair a near tie: similarity itself
    np.testing.assert_array_equal(pixelmatch.similarities(pairs, grids.get), ref)
    monkeypatch.setattr(pixelmatch, "TIE", 0.0)  # none: the batched search decides even flat pictures
    assert np.abs(pixelmatch.similarities(pairs, grids.get) - ref).max() < TOL


@pytest.mark.parametrize("side,crops", [(24, (0.0, 0.05)), (30, (0.0, 0.03, 0.06)), (16, (0.0,))])
def test_other_sides_and_crops(grids, pairs, side, crops):
    sub = pairs[::3]
    with threadpool_limits(limits=1, user_api="blas"):
        ref = [
            pixelmatch.similarity(pixelmatch.as_float(grids[a]), pixelmatch.as_float(grids[b]), side, crops)
            for a, b in sub
        ]
    got = pixelmatch.similarities(sub, grids.get, side=side, crops=crops)
    assert np.abs(got - np.array(ref)).max() < TOL


def test_grid_bytes_is_grid_exactly(grids):
    rng = np.random.default_rng(3)
    img = drawing(rng, (333, 77))
    np.testing.assert_array_equal(pixelmatch.as_float(pixelmatch.grid_bytes(img)), pixelmatch.grid(img))


# ---------------------------------------------------------------- the content layer


def on_margin(rng: np.random.Generator, canvas=(400, 300), bg=(255, 255, 255)) -> Image.Image:
    """A small ``drawing`` placed off-centre on a large plain canvas: most of the picture is margin."""
    img = Image.new("RGB", canvas, bg)
    small = drawing(rng, (int(rng.integers(60, 120)), int(rng.integers(50, 100))))
    img.paste(small, (int(rng.integers(20, 200)), int(rng.integers(20, 150))))
    return img


def test_the_content_box_is_what_differs_from_a_plain_edge():
    img = Image.new("RGB", (200, 100), (10, 10, 10))  # Fashion-MNIST-like: a light shape on black
    ImageDraw.Draw(img).rectangle((40, 20, 119, 59), fill=(200, 180, 160))
    assert preprocess.content_box(img) == (40, 20, 120, 60)
    big = img.resize((2000, 1000), Image.Resampling.NEAREST)  # found on a small copy, scaled back
    x0, y0, x1, y1 = preprocess.content_box(big)
    assert abs(x0 - 400) <= 10 and abs(y0 - 200) <= 10 and abs(x1 - 1200) <= 10 and abs(y1 - 600) <= 10
    assert x0 <= 400 and y0 <= 200 and x1 >= 1200 and y1 >= 600  # never cuts into the content
    noise = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    assert preprocess.content_box(Image.fromarray(noise)) is None  # a photo's edge: no margin
    assert preprocess.content_box(Image.new("RGB", (50, 50), "white")) is None  # nothing on it
    full = Image.new("RGB", (200, 200), "white")
    ImageDraw.Draw(full).rectangle((1, 1, 198, 198), fill="red")  # margins of 0.5%: under 1% and one grid cell
    assert preprocess.content_box(full) is None
    assert preprocess.content_box(full, least=0.004) == (1, 1, 199, 199)
    assert pixelmatch.grids_bytes(full).shape == (pixelmatch.GRID, pixelmatch.GRID, 3)
    g = pixelmatch.grids_bytes(img)
    assert g.shape == (2, pixelmatch.GRID, pixelmatch.GRID, 3) and g.dtype == np.uint8
    np.testing.assert_array_equal(g[0], pixelmatch.grid_bytes(img))
    np.testing.assert_array_equal(g[1], pixelmatch.grid_bytes(img.crop((40, 20, 120, 60))))
    np.testing.assert_array_equal(pixelmatch.grids(img), pixelmatch.as_float(g))


def test_a_copy_cropped_into_its_margin_matches_by_both_layers():
    """A copy that lost 6.9% of its canvas on the left and 3.3% on top (off the crop search's 1.25%
    steps) and was resized and re-saved: its content box is the original's, so the contents match
    as the aligned wholes do; the similarity is the higher of the two, and another drawing on the same
    kind of canvas stays far below."""
    rng = np.random.default_rng(5)
    img = on_margin(rng)
    w, h = img.size
    cp = img.crop((round(0.069 * w), round(0.033 * h), w, h)).resize((263, 211), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    cp.save(buf, "JPEG", quality=80)
    ga, gb = pixelmatch.grids(img), pixelmatch.grids(Image.open(io.BytesIO(buf.getvalue())))
    assert ga.ndim == gb.ndim == 4
    whole = pixelmatch.similarity(ga[0], gb[0])
    content = pixelmatch.similarity(ga[1], gb[1])
    assert whole > 0.98 and content > 0.98
    assert pixelmatch.similarity(ga, gb) == max(whole, content)
    # a picture without a content layer is compared as a whole with the other's whole and with its content
    assert pixelmatch.similarity(ga, gb[0]) == max(whole, pixelmatch.similarity(ga[1], gb[0]))
    other = pixelmatch.grids(on_margin(rng))  # another drawing on the same kind of canvas
    assert pixelmatch.similarity(ga, other) < 0.9


@pytest.fixture(scope="module")
def layered() -> dict:
    """Pictures with a content layer (drawings on margins, their copies) and without (``grids``)."""
    rng = np.random.default_rng(11)
    out: dict = {}
    for i in range(6):
        img = on_margin(rng, bg=(255, 255, 255) if i % 2 else (30, 40, 50))
        out[("margin", i)] = pixelmatch.grids(img)
        out[("margin copy", i)] = pixelmatch.grids_bytes(copy_of(img, rng))
        out[("full", i)] = pixelmatch.grids(drawing(rng))
    return out


def test_similarities_with_content_layers_equal_the_reference(layered):
    keys = list(layered)
    assert sum(layered[k].ndim == 4 for k in keys) >= 10 and sum(layered[k].ndim == 3 for k in keys) >= 4
    pairs = [(p, q) for p in keys for q in keys]
    ref = pixelmatch.similarities_one_by_one(pairs, layered.get)
    got = pixelmatch.similarities(pairs, layered.get)
    assert np.abs(got - ref).max() <= 1e-6
    seen: list[int] = []
    pixelmatch.similarities(pairs, layered.get, progress=lambda done, total: seen.append(total - done))
    assert seen[-1] == 0  # ends at its total
    # with ``enough``, a pair at it by its whole pictures keeps that number; every decision is the same
    enough = float(np.median(ref))
    fast = pixelmatch.similarities(pairs, layered.get, enough=enough)
    np.testing.assert_array_equal(fast >= enough, ref >= enough)
    low = ref < enough
    assert np.abs(fast[low] - ref[low]).max() <= 1e-6
    whole = pixelmatch.similarities(pairs, lambda k: pixelmatch.layer(layered[k], 0))
    assert np.all(fast <= ref + 1e-6) and np.all(fast >= whole - 1e-6)

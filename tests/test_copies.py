"""Copies of indexed images: the copy generator, exact copies (score 1.0 whatever the path),
near-copies found first, the calibrated threshold, and ``eval --copies``."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw
from synth import FAST

import simsearch
from simsearch import copies, evaluate
from simsearch.constants import COPY_STRENGTHS
from simsearch.preprocess import to_display


def picture(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A distinct clip-art-like picture: a few coloured shapes on a transparent background."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 5))):
        x0, y0 = rng.uniform(0, 0.6, 2) * (w, h)
        x1, y1 = x0 + rng.uniform(0.2, 0.4) * w, y0 + rng.uniform(0.2, 0.4) * h
        colour = tuple(int(c) for c in rng.integers(0, 230, 3)) + (255,)
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x1, y1], fill=colour)
    return img


@pytest.fixture(scope="module")
def clipart(tmp_path_factory):
    """An index of 80 distinct generated pictures of several sizes and aspects, plus the folder."""
    tmp = tmp_path_factory.mktemp("clipart")
    root = tmp / "images"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(80):
        w, h = int(rng.integers(60, 160)), int(rng.integers(60, 160))
        picture(rng, w, h).save(root / f"pic_{i:03d}.png")
    opts = dict(FAST, max_epochs=6, time_budget=60)
    index = simsearch.Index.build(root, tmp / "idx", **opts)
    return index, root, tmp


def test_copies_are_deterministic_and_cover_every_edit():
    rng = np.random.default_rng(0)
    img = picture(rng, 120, 80)
    assert set(copies.STRENGTHS) == set(COPY_STRENGTHS)
    a = copies.make_copy(img, seed=5)
    b = copies.make_copy(img, seed=5)
    assert a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(copies.make_copy(img, seed=6)))
    for strength in COPY_STRENGTHS:
        for kind in copies.KINDS:
            out = copies.make_copy(img, seed=1, strength=strength, kinds=(kind,))
            assert out.mode == "RGB" and min(out.size) >= 1
    small = copies.make_copy(img, seed=1, kinds=("resize",))
    assert small.width < img.width  # resized down
    with pytest.raises(ValueError, match="unknown copy edit"):
        copies.make_copy(img, seed=1, kinds=("blurr",))


def test_copies_are_made_on_white():
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    assert copies.make_copy(img, seed=0, kinds=("resize",)).getpixel((0, 0)) == (255, 255, 255)


def test_a_copy_of_an_indexed_file_anywhere_is_rank_1_with_score_1(clipart, tmp_path):
    index, root, _ = clipart
    src = root / "pic_017.png"
    elsewhere = tmp_path / "downloads" / "renamed.png"
    elsewhere.parent.mkdir()
    shutil.copyfile(src, elsewhere)
    hits = index.query(elsewhere, k=3)
    assert hits[0].path == "pic_017.png" and hits[0].score == 1.0
    assert hits[1].score < 1.0


def test_same_pixels_in_other_bytes_is_rank_1_with_score_1(clipart, tmp_path):
    index, root, _ = clipart
    with Image.open(root / "pic_042.png") as im:
        im.load()
        other = tmp_path / "resaved.png"
        im.save(other, optimize=True, compress_level=1)  # different file bytes, same pixels
        assert other.read_bytes() != (root / "pic_042.png").read_bytes()
        for query in (other, im.copy(), np.asarray(im)):
            hits = index.query(query, k=2)
            assert hits[0].path == "pic_042.png" and hits[0].score == 1.0, query


def test_near_copies_find_their_original_first(clipart):
    index, root, _ = clipart
    found, margins = 0, []
    names = [f"pic_{i:03d}.png" for i in range(0, 80, 4)]
    for n, name in enumerate(names):
        with Image.open(root / name) as im:
            copy = copies.make_copy(im, seed=n, strength="light")
        hits = index.query(copy, k=2)
        found += hits[0].path == name
        margins.append(hits[0].score - hits[1].score)
    assert found >= 0.9 * len(names), f"{found}/{len(names)} light copies found their original first"
    assert np.median(margins) > 0, "a near-copy must score above the next image"


def test_eval_copies_reports_recall_and_the_thumbnail_baseline(clipart):
    index, _, _ = clipart
    res = evaluate.evaluate_copies(index, n=20, strength="light", seed=0)
    assert res["copies"] == 20 and 0 <= res["R@1"] <= res["R@5"] <= 1
    assert 0 <= res["thumbnail_R@1"] <= res["thumbnail_R@5"] <= 1
    assert res["R@1"] >= 0.8  # light copies of distinct pictures
    assert res["original_score_median"] is not None


def test_index_records_the_near_copy_calibration(clipart):
    index, _, _ = clipart
    cal = index.meta.post.copies
    assert cal["copies"] == 80  # every image of a small gallery is copied once
    assert cal["placement"] and cal["threshold"] is not None and -1 <= cal["threshold"] <= 1
    assert cal["copy_cosine_q05_25_50_75_95"][2] > cal["neighbour_cosine_q05_25_50_75_95"][2]


def test_calibrate_separates_copies_from_neighbours():
    from simsearch.postprocess import PostConfig, calibrate, fit

    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(300, 16)).astype(np.float32)
    post = fit(gallery, np.arange(300), PostConfig(diffusion=False))
    rows = np.arange(0, 300, 3)
    copies_raw = gallery[rows] + 0.05 * rng.normal(size=(len(rows), 16)).astype(np.float32)
    rec = calibrate(post, gallery, np.arange(300).astype(str), rows, copies_raw)
    assert rec["tpr"] == 1.0 and rec["fpr"] == 0.0
    assert rec["neighbour_cosine_q05_25_50_75_95"][-1] < post.copy_threshold < rec["copy_cosine_q05_25_50_75_95"][0]


def test_calibrate_turns_placement_off_when_copies_are_no_closer_than_neighbours():
    """Tiny images: a resize-and-JPEG copy changes them more than a look-alike differs."""
    from simsearch.postprocess import PostConfig, calibrate, fit

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 16))
    gallery = (np.repeat(centres, 30, axis=0) + 0.1 * rng.normal(size=(300, 16))).astype(np.float32)
    post = fit(gallery, np.arange(300), PostConfig(diffusion=False))
    rows = np.arange(0, 300, 3)
    far_copies = gallery[rows] + 1.5 * rng.normal(size=(len(rows), 16)).astype(np.float32)
    rec = calibrate(post, gallery, np.arange(300).astype(str), rows, far_copies)
    assert rec["placement"] is False and rec["threshold"] is None and post.copy_threshold is None


def test_placing_a_copy_at_its_original_ranks_the_original_first():
    """With diffusion, a query takes the diffusion coordinates of its nearest gallery image when that one
    is a copy by the calibrated threshold: the original then ranks first, score (cos + w²)/(1 + w²)."""
    from simsearch.postprocess import PostConfig, fit

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 32))
    gallery = (np.repeat(centres, 120, axis=0) + 0.6 * rng.normal(size=(2400, 32))).astype(np.float32)
    post = fit(gallery, np.arange(2400), PostConfig(min_gallery=1000))
    assert post.diffusion
    g = post.search_vectors(gallery, np.arange(2400))
    q_raw = gallery[[7]] + 0.02 * rng.normal(size=(1, 32)).astype(np.float32)
    q = post.search_vectors(q_raw)
    base_cos = post.base(q_raw) @ post.base(gallery).T
    has_coords = np.linalg.norm(g[:, 32:], axis=1) > 0
    assert has_coords.mean() > 0.9
    probe = (post.base_part(q) @ g.T)[0]
    assert np.allclose(probe[has_coords], base_cos[0, has_coords], atol=1e-5)  # the probe ranks by base cosine
    placed = post.with_coords(q, g[[7]])
    scores = (placed @ g.T)[0]
    assert int(np.argmax(scores)) == 7
    w2 = post.cfg.weight**2
    assert scores[7] == pytest.approx((base_cos[0, 7] + w2) / (1 + w2), abs=1e-5)


def test_jpeg_copy_bytes_differ_but_query_works(clipart):
    index, root, _ = clipart
    with Image.open(root / "pic_005.png") as im:
        buf = io.BytesIO()
        to_display(im).save(buf, "JPEG", quality=90)
    hits = index.query(Image.open(io.BytesIO(buf.getvalue())), k=1)
    assert hits[0].path == "pic_005.png"


def test_cli_eval_copies(clipart, tmp_path):
    import json

    from click.testing import CliRunner

    from simsearch.cli import cli

    index, root, tmp = clipart
    r = CliRunner().invoke(cli, ["eval", "--index", str(tmp / "idx"), "--copies", "6", "--strength", "light", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["copies"] == 6 and 0 <= res["R@1"] <= 1 and "thumbnail_R@1" in res
    r = CliRunner().invoke(cli, ["eval", "--index", str(tmp / "idx"), "--copies", "6", "--queries", str(root)])
    assert r.exit_code == 2 and "--copies" in r.output

"""Copies of indexed images: the copy generator, exact copies (score 1.0 whatever the path),
near-copies found first, the calibrated threshold, and ``eval --copies``."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image
from synth import FAST, picture, write_pictures

import simsearch
from simsearch import copies, evaluate
from simsearch.constants import COPY_STRENGTHS
from simsearch.preprocess import to_display


@pytest.fixture(scope="module")
def clipart(tmp_path_factory):
    """An index of 80 distinct generated pictures of several sizes and aspects, plus the folder."""
    tmp = tmp_path_factory.mktemp("clipart")
    root = tmp / "images"
    write_pictures(root, 80)
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


def test_the_same_picture_in_several_files_ranks_the_same_whatever_k(tmp_path):
    """Five files with one picture tie at score 1.0: they come first, in id order, and a larger k
    extends the ranking without reordering it (FAISS returns ties in an order that changes with k)."""
    root = tmp_path / "images"
    write_pictures(root, 24)
    for i in range(5):
        shutil.copyfile(root / "pic_007.png", root / f"same_{i}.png")
    index = simsearch.Index.build(root, tmp_path / "idx", **FAST)
    query = tmp_path / "query.png"
    shutil.copyfile(root / "pic_007.png", query)
    full = index.query(query, k=12, pixel_check=False)
    same = {e.id for e in index.entries() if e.path in {"pic_007.png", *(f"same_{i}.png" for i in range(5))}}
    assert [h.id for h in full[:6]] == sorted(same) and all(h.score == 1.0 for h in full[:6])
    checked = index.query(query, k=12)
    for k in range(1, 12):
        assert [h.id for h in index.query(query, k=k, pixel_check=False)] == [h.id for h in full[:k]], k
        assert [h.id for h in index.query(query, k=k)] == [h.id for h in checked[:k]], k


def test_a_query_searches_the_check_shortlist_only_when_the_check_is_on(clipart, monkeypatch):
    """With the check on, a query of k < SHORTLIST hits searches the shortlist and checks it; where the
    index's calibration turned the check off (threshold None), it searches k hits and checks nothing."""
    from simsearch import query as q
    from simsearch.finecheck import SHORTLIST

    index, root, _ = clipart
    searched = []
    real = q.search
    monkeypatch.setattr(
        q, "search", lambda snap, vecs, k, *a, **kw: searched.append(k) or real(snap, vecs, k, *a, **kw)
    )
    assert index.pixel_threshold is not None
    index.query(root / "pic_003.png", k=3, include_self=True)
    monkeypatch.setattr(simsearch.Index, "pixel_threshold", property(lambda self: None))
    monkeypatch.setattr(simsearch.Index, "pixel_check", lambda *a: pytest.fail("the check ran while off"))
    hits = index.query(root / "pic_003.png", k=3, include_self=True)
    assert searched == [SHORTLIST, 3] and len(hits) == 3 and hits[0].path == "pic_003.png"


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
    for k in ("R@1", "R@5"):  # the margin is over the same copies: the two recalls' difference, with its error
        assert res[f"{k}_margin"] == pytest.approx(res[k] - res[f"thumbnail_{k}"])
        assert 0 <= res[f"{k}_margin_stderr"] <= 0.5
    assert res["R@1"] >= 0.8  # light copies of distinct pictures
    assert res["original_score_median"] is not None


def test_index_records_the_near_copy_calibration(clipart):
    index, _, _ = clipart
    cal = index.meta.post.copies
    assert cal["copies"] == 80  # every image of a small gallery is copied once
    assert cal["placement"] and cal["threshold"] is not None and -1 <= cal["threshold"] <= 1
    px = cal["pixel"]  # the query pixel check's threshold, from the same copies
    assert px["pairs"][0] == 80 and px["threshold"] is not None and 0 < px["threshold"] <= 1
    assert index.pixel_threshold == px["threshold"] and index.info()["pixel_check"].startswith("on:")
    assert px["copy_pixel_q05_25_50_75_95"][2] > px["neighbour_pixel_q05_25_50_75_95"][2]
    assert cal["copy_cosine_q05_25_50_75_95"][2] > cal["neighbour_cosine_q05_25_50_75_95"][2]


def test_calibrate_pixels_finds_the_separating_similarity_or_turns_the_check_off():
    from simsearch.postprocess import calibrate_pixels

    rng = np.random.default_rng(0)
    copies_px, neighbours_px = rng.uniform(0.95, 1.0, 100), rng.uniform(0.3, 0.9, 100)
    rec = calibrate_pixels(copies_px, np.append(neighbours_px, np.nan))  # an unreadable neighbour: left out
    assert 0.9 <= rec["threshold"] <= 0.95 and rec["tpr"] == 1.0 and rec["fpr"] == 0.0 and rec["pairs"] == [100, 100]
    assert calibrate_pixels(neighbours_px, copies_px)["threshold"] is None  # copies no closer: check off
    # a weak test is no test: 70% of copies against 42% of neighbours (28 px Fashion-MNIST) stays off
    weak = calibrate_pixels(np.r_[np.full(70, 0.97), np.full(30, 0.90)], np.r_[np.full(42, 0.97), np.full(58, 0.9)])
    assert weak["threshold"] is None and weak["tpr"] == 0.7 and weak["fpr"] == 0.42 and weak["best_threshold"] > 0.9
    assert calibrate_pixels(np.array([np.nan]), neighbours_px)["threshold"] is None


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


# ------------------------------------------------------------------ the fine check (finecheck.py)


def test_the_pixel_check_lists_a_copy_first_wherever_the_codes_put_it(clipart):
    from dataclasses import replace

    index, root, _ = clipart
    with Image.open(root / "pic_020.png") as im:
        copy = copies.make_copy(im, seed=3, strength="default")
    hits = index.query(copy, k=10, pixel_check=False)
    assert all(h.pixel is None for h in hits)
    original = next(h for h in hits if h.path == "pic_020.png")
    others = [h for h in hits if h.path != "pic_020.png"]
    demoted = [replace(h, rank=r) for r, h in enumerate(others[:5] + [original] + others[5:], 1)]
    checked = index.pixel_check(copy, demoted)
    assert checked[0].path == "pic_020.png" and checked[0].pixel is not None and checked[0].pixel >= 0.9
    assert checked[0].score == original.score  # the score stays the search score
    assert [h.rank for h in checked] == list(range(1, len(checked) + 1))
    assert [h.path for h in checked[1:]] == [h.path for h in others]  # distinct pictures keep their order
    assert all(h.pixel is None for h in checked[1:])


def test_query_marks_copies_unless_told_not_to_and_never_checks_indexed_images(clipart, tmp_path):
    index, root, _ = clipart
    with Image.open(root / "pic_030.png") as im:
        copy = copies.make_copy(im, seed=1, strength="light")
    hits = index.query(copy, k=3)
    assert hits[0].path == "pic_030.png" and hits[0].pixel is not None
    assert all(h.pixel is None for h in index.query(copy, k=3, pixel_check=False))
    copy.save(tmp_path / "copy.jpg")
    assert index.query(tmp_path / "copy.jpg", k=3)[0].pixel is not None  # a file: checked from its bytes
    assert all(h.pixel is None for h in index.query(root / "pic_030.png", k=3))  # indexed: its stored vector
    # a candidate whose file is gone is simply not checked
    moved = tmp_path / "gone.png"
    shutil.copyfile(root / "pic_030.png", moved)
    (root / "pic_030.png").unlink()
    try:
        hits = index.query(copy, k=3)
        assert all(h.pixel is None for h in hits if h.path == "pic_030.png")
    finally:
        shutil.copyfile(moved, root / "pic_030.png")


def test_rerank_moves_the_copies_first_and_keeps_each_group_in_score_order():
    """The check says which hits are copies, not their order: a copy whose pixels match better does not
    pass one the model put higher (near-identical pictures all pass, and the model orders them better)."""
    from simsearch import finecheck, pixelmatch
    from simsearch.query import Hit

    rng = np.random.default_rng(0)
    q = rng.uniform(0, 1, (pixelmatch.GRID, pixelmatch.GRID, 3)).astype(np.float32)
    grids = {
        "same.png": np.clip(q + rng.normal(0, 0.05, q.shape), 0, 1).astype(np.float32),  # pixel 0.97
        "exact.png": q,  # pixel 1.0
        "other.png": rng.uniform(0, 1, q.shape).astype(np.float32),  # pixel ≈ 0
        "other2.png": rng.uniform(0, 1, q.shape).astype(np.float32),
    }
    hits = [Hit(1, "other.png", 0.99, 1), Hit(2, "same.png", 0.95, 2), Hit(3, "other2.png", 0.93, 3),
            Hit(4, "exact.png", 0.9, 4)]  # fmt: skip
    out = finecheck.rerank(hits, q, lambda p: grids[p.name], 0.9)
    assert [h.path for h in out] == ["same.png", "exact.png", "other.png", "other2.png"]
    assert [h.rank for h in out] == [1, 2, 3, 4] and [h.score for h in out] == [0.95, 0.9, 0.99, 0.93]
    assert out[1].pixel == 1.0 and 0.9 < out[0].pixel < 1.0 and out[2].pixel is None and out[3].pixel is None
    assert finecheck.rerank(hits[:1], q, lambda p: grids[p.name], 0.9) == hits[:1]  # nothing passes: unchanged
    assert finecheck.rerank(hits, q, lambda p: None, 0.9) == hits  # nothing readable: unchanged
    assert [h.path for h in finecheck.rerank(hits, q, lambda p: grids[p.name], 0.99)] == [
        "exact.png",  # only the exact picture reaches 0.99
        "other.png",
        "same.png",
        "other2.png",
    ]


def test_a_grey_query_is_checked_against_the_candidates_grey_levels():
    """A black-and-white copy of a colour picture has only grey levels to compare: its original passes the
    check on them. A colour query is compared in colour, as before (its grey version does not pass)."""
    import io

    from synth import picture

    from simsearch import finecheck, pixelmatch
    from simsearch.preprocess import to_display
    from simsearch.query import Hit

    rng = np.random.default_rng(3)
    orig = to_display(picture(rng, 120, 90))
    small = orig.resize((84, 63), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.convert("L").convert("RGB").save(buf, "JPEG", quality=75)
    grey_copy = pixelmatch.grids(Image.open(buf))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=75)
    colour_copy = pixelmatch.grids(Image.open(buf))
    grey_orig = pixelmatch.grids(orig.convert("L").convert("RGB"))
    grids = {
        "orig.png": pixelmatch.grids(orig),
        "grey.png": grey_orig,
        "other.png": pixelmatch.grids(picture(rng, 90, 90)),
    }
    assert pixelmatch.is_grey(grey_copy) and pixelmatch.is_grey(grey_orig)
    assert not pixelmatch.is_grey(colour_copy) and not pixelmatch.is_grey(grids["orig.png"])
    in_colour = pixelmatch.similarity(grey_copy, grids["orig.png"])
    in_grey = pixelmatch.similarity(pixelmatch.luma(grey_copy), pixelmatch.luma(grids["orig.png"]))
    assert in_colour < in_grey - 0.02  # what the check would see in colour, and in grey
    threshold = (in_colour + in_grey) / 2
    hits = [Hit(1, "other.png", 0.9, 1), Hit(2, "orig.png", 0.8, 2)]
    out = finecheck.rerank(hits, grey_copy, lambda p: grids[p.name], threshold)
    assert [h.path for h in out] == ["orig.png", "other.png"] and out[0].pixel == pytest.approx(in_grey, abs=1e-4)
    # a colour query is compared in colour: the grey version of its original stays below the same bar
    assert pixelmatch.similarity(colour_copy, grey_orig) < threshold
    hits = [Hit(1, "other.png", 0.9, 1), Hit(3, "grey.png", 0.8, 2)]
    assert finecheck.rerank(hits, colour_copy, lambda p: grids[p.name], threshold) == hits


def test_grid_cache_reads_a_file_again_when_it_changes_and_stays_bounded(tmp_path):
    import os

    from simsearch.finecheck import GridCache

    cache = GridCache(size=2)
    a = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(a)
    first = cache(a)
    assert first is not None and first.shape[-1] == 3
    Image.new("RGB", (40, 40), (30, 30, 200)).save(a)
    os.utime(a, ns=(1, 1))  # a new modification time: read again
    assert not np.array_equal(cache(a), first)
    assert cache(tmp_path / "missing.png") is None
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert cache(tmp_path / "broken.png") is None
    for i in range(3):
        Image.new("RGB", (20, 20), (i, i, i)).save(tmp_path / f"{i}.png")
        cache(tmp_path / f"{i}.png")
    assert len(cache._grids) == 2

"""simsearch dupes: batched pair search, drift-free grouping, calibration, keeper choice, output
formats, and that nothing is moved unless --move-to is given without --dry-run."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tree_digest
from PIL import Image

from simsearch import dupes, neighbours, pixelmatch
from simsearch.cli import cli


def run(*args, code=0):
    res = CliRunner().invoke(cli, [str(a) for a in args], obj={})
    assert res.exit_code == code, f"exit {res.exit_code}\n{res.stdout}\n{res.stderr}\n{res.exception!r}"
    return res


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------- pairs and groups (vectors only)


@pytest.mark.parametrize("exact", [True, False])
def test_range_pairs_finds_every_pair_above_the_threshold(exact):
    rng = np.random.default_rng(0)
    x = unit(rng.standard_normal((3000, 8)))
    x[100:140] = unit(x[5] + 0.01 * rng.standard_normal((40, 8)))  # one row with 40 partners: more than k
    a, b, s = neighbours.range_pairs(x, 0.9, k=4, exact=exact)
    sims = x @ x.T
    np.fill_diagonal(sims, -1)
    want = {(int(i), int(j)) for i, j in np.argwhere(np.triu(sims >= 0.9))}
    got = set(zip(a.tolist(), b.tolist()))
    if exact:
        assert got == want
    else:  # IVF: approximate, but these are tight pairs
        assert len(got & want) >= 0.97 * len(want) and got <= want
    assert (a < b).all() and (s >= 0.9 - 1e-6).all()
    assert list(s) == sorted(s, reverse=True)


def test_knn_leaves_each_row_out_of_its_own_neighbours():
    x = unit(np.random.default_rng(1).standard_normal((50, 4)))
    x[7] = x[3]  # an identical row: may come first, the row itself must not
    sims, rows = neighbours.knn(x, 3)
    assert (rows != np.arange(50)[:, None]).all()
    assert rows[3, 0] == 7 and rows[7, 0] == 3


def test_a_drifting_chain_is_split():
    # A≈B (0.95), B≈C (0.93), A≉C: one group {A, B} (the stronger pair) and C alone
    a, b, s = np.array([0, 1]), np.array([1, 2]), np.array([0.95, 0.93], np.float32)
    groups = dupes.group_pairs(3, a, b, s)
    assert [g[0] for g in groups] == [[0, 1]]
    # and when A≈C too, one group of three whose weakest pair is B-C
    groups = dupes.group_pairs(3, np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([0.95, 0.93, 0.94], np.float32))
    assert groups == [([0, 1, 2], (1, 2, pytest.approx(0.93)))]


def test_groups_are_the_same_whatever_the_order_of_the_pairs():
    rng = np.random.default_rng(2)
    n = 200
    a = rng.integers(0, n, 600)
    b = rng.integers(0, n, 600)
    keep = a != b
    a, b = a[keep], b[keep]
    s = rng.choice([0.91, 0.93, 0.95, 0.97], len(a)).astype(np.float32)  # many ties
    first = dupes.group_pairs(n, a, b, s)
    for seed in range(3):
        p = np.random.default_rng(seed).permutation(len(a))
        assert dupes.group_pairs(n, b[p], a[p], s[p]) == first
    pairs = {(min(x, y), max(x, y)) for x, y in zip(a, b)}
    for rows, _weakest in first:  # every pair inside a group is a pair: complete linkage
        assert all((p, q) in pairs for i, p in enumerate(rows) for q in rows[i + 1 :])


def test_exact_pairs():
    a, b = dupes.exact_pairs(["x", "y", "x", "x", "z"])
    assert sorted(zip(a.tolist(), b.tolist())) == [(0, 2), (0, 3), (2, 3)]


def test_youden_threshold_lies_between_copies_and_look_alikes():
    pos = np.linspace(0.95, 0.99, 50).astype(np.float32)
    neg = np.linspace(0.6, 0.9, 50).astype(np.float32)
    cal = dupes._youden(pos, neg)
    assert 0.9 < cal.threshold < 0.95 and cal.copy_recall == 1 and cal.look_alike_rate == 0 and cal.separable
    assert "calibrated on 50" in cal.why() and "WARNING" not in cal.why()
    mixed = dupes._youden(np.linspace(0.5, 0.9, 50).astype(np.float32), np.linspace(0.5, 0.9, 50).astype(np.float32))
    assert not mixed.separable and "WARNING" in mixed.why()


# ---------------------------------------------------------------- the pixel check


def drawing(rect=(0, 0, 255), circle_at=30) -> Image.Image:
    from PIL import ImageDraw

    img = Image.new("RGB", (160, 120), "white")
    d = ImageDraw.Draw(img)
    d.ellipse((circle_at, 20, circle_at + 50, 70), fill=(220, 30, 30), outline="black", width=3)
    d.rectangle((90, 50, 140, 105), fill=rect, outline="black", width=3)
    d.line((10, 110, 150, 8), fill="black", width=4)
    return img


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_pixel_similarity_tells_copies_from_variants():
    img = drawing()
    g = pixelmatch.grid(img)
    w, h = img.size
    copies = {
        "identical": img,
        "resized": jpeg(img.resize((96, 72), Image.Resampling.LANCZOS), 60),
        "cropped": jpeg(img.crop((6, 4, w - 7, h - 5)), 90),
    }
    variants = {
        "recoloured": drawing(rect=(30, 160, 30)),
        "moved detail": drawing(circle_at=5),
        "mirrored": drawing().transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    }
    got = {k: pixelmatch.similarity(g, pixelmatch.grid(v)) for k, v in {**copies, **variants}.items()}
    assert got["identical"] == pytest.approx(1.0, abs=1e-6)
    assert min(got[k] for k in copies) > 0.93, got
    assert max(got[k] for k in variants) < 0.85, got
    flat = pixelmatch.grid(Image.new("RGB", (50, 50), "white"))
    assert pixelmatch.similarity(flat, flat) == 1.0 and pixelmatch.similarity(flat, g) == 0.0


def test_flat_greys_compare_by_their_difference_whatever_the_rounding():
    """Flat grids of any two grey levels: 1 − their difference, both ways round (rounding noise in the
    cropped thumbnails once made some of them correlate ±1)."""
    levels = [0, 13, 37, 51, 100, 128, 200, 255]
    for p in levels:
        for q in levels:
            gp, gq = (np.full((pixelmatch.GRID, pixelmatch.GRID, 3), v / 255, np.float32) for v in (p, q))
            assert pixelmatch.similarity(gp, gq) == pytest.approx(1 - abs(p - q) / 255, abs=1e-6), (p, q)


# ---------------------------------------------------------------- on an index


@pytest.fixture
def planted(index_copy):
    """The writable index copy with an exact copy, a smaller re-saved copy and a larger copy planted."""
    root = index_copy.root
    shutil.copyfile(root / "disc" / "disc_000.png", root / "disc" / "disc_000_exact.png")
    img = Image.open(root / "square" / "square_003.png")
    img.resize((28, 28), Image.Resampling.LANCZOS).save(root / "square" / "square_003_small.png")
    img.resize((64, 64), Image.Resampling.LANCZOS).save(root / "stripes_big_square_003.png")
    index_copy.update()
    return index_copy


def test_dupes_finds_the_planted_copies_and_keeps_the_largest(planted):
    res = dupes.find(planted, threshold=0.97)
    groups = [{m.path for m in g.members} for g in res.groups]
    assert {"disc/disc_000.png", "disc/disc_000_exact.png"} in groups
    g = next(g for g in res.groups if "square/square_003.png" in {m.path for m in g.members})
    assert {m.path for m in g.members} >= {"square/square_003.png", "square/square_003_small.png"}
    assert g.keeper.path == "stripes_big_square_003.png"  # most pixels
    exact = next(g for g in res.groups if g.exact)
    assert exact.keeper.path == "disc/disc_000.png"  # same pixels and bytes: the older file (then the lower id)
    assert all(m.similarity == 1.0 for m in exact.others)


def grey_equal_recolour(img: Image.Image) -> Image.Image:
    """The same picture in colour, with exactly the grey levels of the original: a variant that a
    model reading grey pixels cannot tell from it."""
    v = np.asarray(img.convert("L"), np.float64)
    r = np.clip(2 * v, 0, 255)
    g = np.clip((v - 0.299 * r) / 0.587, 0, 255)
    b = np.clip((v - 0.299 * r - 0.587 * g) / 0.114, 0, 255)
    out = Image.fromarray(np.stack([r, g, b], 2).round().astype(np.uint8))
    assert np.array_equal(np.asarray(out.convert("L")), np.asarray(img.convert("L")))
    return out


def test_the_pixel_check_rejects_a_variant_the_model_cannot_see(planted):
    root = planted.root
    grey_equal_recolour(Image.open(root / "disc" / "disc_005.png")).save(root / "disc" / "disc_005_red.png")
    planted.update()
    pair = {"disc/disc_005.png", "disc/disc_005_red.png"}

    def grouped(res):
        return any(pair <= {m.path for m in g.members} for g in res.groups)

    unchecked = dupes.find(planted, threshold=0.97, verify=False)
    assert grouped(unchecked) and unchecked.calibration.pixel is None
    checked = dupes.find(planted, threshold=0.97)
    assert not grouped(checked) and checked.checked >= 1
    assert any(
        {"square/square_003.png", "square/square_003_small.png"} <= {m.path for m in g.members} for g in checked.groups
    )
    assert checked.calibration.pixel is not None and "pixels are checked" in checked.calibration.why()
    small = next(m for g in checked.groups for m in g.members if m.path == "square/square_003_small.png")
    assert small.pixel_similarity is None or small.pixel_similarity >= checked.calibration.pixel.threshold


def test_calibration_is_printed_with_its_reason_and_is_deterministic(planted):
    a = run("dupes", "--index", planted.path, "--json")
    b = run("dupes", "--index", planted.path, "--json")
    assert a.stdout == b.stdout
    doc = json.loads(a.stdout)
    assert doc["calibration"]["source"] == "calibrated" and doc["calibration"]["copies"] > 0
    assert a.stderr.startswith(f"threshold {doc['threshold']:.4f}, calibrated on")
    given = run("dupes", "--index", planted.path, "--threshold", "0.99", "-q")
    assert "threshold 0.9900 (given with --threshold)" in given.stderr


def test_output_formats(planted):
    res = run("dupes", "--index", planted.path, "--threshold", "0.97", "--csv")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert {r["role"] for r in rows} == {"keep", "duplicate"}
    assert {"group", "path", "similarity", "pixels", "bytes", "exact", "weakest_similarity"} <= set(rows[0])
    paths = run("dupes", "--index", planted.path, "--threshold", "0.97", "--paths-only", "-q").stdout.split()
    assert str(planted.root / "disc" / "disc_000_exact.png") in paths
    assert str(planted.root / "disc" / "disc_000.png") not in paths  # a keeper is never listed
    table = run("dupes", "--index", planted.path, "--threshold", "0.97").stdout
    assert "keep" in table and "group 1:" in table


def test_sheet_per_group(planted, tmp_path):
    run("dupes", "--index", planted.path, "--threshold", "0.97", "--sheet", tmp_path / "sheets", "-q")
    pngs = sorted((tmp_path / "sheets").glob("group-*.png"))
    assert pngs and Image.open(pngs[0]).size[0] > 100


def test_nothing_moves_without_move_to_and_dry_run_moves_nothing(planted, tmp_path):
    before = tree_digest(planted.root)
    for args in ([], ["--json"], ["--csv"], ["--paths-only"], ["--sheet", tmp_path / "s"]):
        run("dupes", "--index", planted.path, "--threshold", "0.97", *args)
    res = run("dupes", "--index", planted.path, "--threshold", "0.97", "--move-to", tmp_path / "moved", "--dry-run")
    assert "would move" in res.stderr and "disc_000_exact.png" in res.stderr
    assert tree_digest(planted.root) == before
    assert not (tmp_path / "moved").exists()


def test_move_to_moves_only_the_others(planted, tmp_path):
    res = dupes.find(planted, threshold=0.97)
    keepers = {g.keeper.path for g in res.groups}
    others = {m.path for g in res.groups for m in g.others}
    run("dupes", "--index", planted.path, "--threshold", "0.97", "--move-to", tmp_path / "moved")
    for p in keepers:
        assert (planted.root / p).exists()
    for p in others:
        assert not (planted.root / p).exists() and (tmp_path / "moved" / p).exists()


def test_bad_usage_and_user_errors(planted, tmp_path):
    run("dupes", "--index", planted.path, "--dry-run", code=2)
    run("dupes", "--index", planted.path, "--json", "--csv", code=2)
    run("dupes", "--index", planted.path, "--threshold", "2", code=2)
    before = tree_digest(planted.root)
    res = run("dupes", "--index", planted.path, "--threshold", "0.97", "--move-to", planted.root / "dups", code=1)
    assert "outside the indexed folder" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "moved" / "disc").mkdir(parents=True)
    (tmp_path / "moved" / "disc" / "disc_000_exact.png").write_bytes(b"x")
    res = run("dupes", "--index", planted.path, "--threshold", "0.97", "--move-to", tmp_path / "moved", code=1)
    assert "already exists; nothing was moved" in res.stderr
    assert tree_digest(planted.root) == before
    res = run("dupes", "--index", tmp_path / "nowhere", code=1)
    assert "no index here" in res.stderr


def _calibrate_on(monkeypatch, copy_cos, neighbour_cos, copy_pix, neighbour_pix):
    """``dupes.calibrate`` on given scores: the calibration copies and nearest neighbours replaced."""
    from simsearch import pixelmatch

    n = len(copy_cos)
    cp = dupes.CalibrationPairs(
        np.arange(n), np.asarray(copy_cos, np.float32), [(i, (i + 1) % n) for i in range(n)],
        np.asarray(neighbour_cos, np.float32), [(None, None)] * n,
    )  # fmt: skip
    monkeypatch.setattr(dupes, "calibration_pairs", lambda *a, **k: cp)
    pix = np.concatenate([copy_pix, neighbour_pix]).astype(np.float32)
    monkeypatch.setattr(pixelmatch, "similarities", lambda pairs, grid_of, **k: pix[: len(pairs)])

    class Index:
        root = Path(".")

        def entries(self):
            return []

    return dupes.calibrate(Index(), base=np.zeros((n, 2), np.float32))


def test_with_the_pixel_check_the_cosine_only_shortlists_and_pixels_decide(monkeypatch):
    rng = np.random.default_rng(0)
    copies = np.concatenate([rng.uniform(0.90, 1.0, 180), rng.uniform(0.70, 0.90, 20)])  # a tail: crops
    few_look_alikes = rng.uniform(0.30, 0.88, 200)  # about a quarter of images have a neighbour above 0.72
    cal = _calibrate_on(monkeypatch, copies, few_look_alikes, rng.uniform(0.9, 1.0, 200), rng.uniform(0, 1, 200))
    assert cal.threshold == pytest.approx(np.quantile(copies, 1 - dupes.COSINE_COPY_PASS), abs=1e-6)
    assert cal.copy_recall >= dupes.COSINE_COPY_PASS
    youden = dupes._youden(copies.astype(np.float32), few_look_alikes.astype(np.float32)).threshold
    assert cal.threshold < youden  # looser than Youden's cut
    # the pixel threshold: what 85% of the copies reach, whatever the neighbours do
    assert cal.pixel.copy_recall == pytest.approx(dupes.PIXEL_COPY_PASS, abs=0.01)
    assert "85% of copies pass" in cal.why()


def test_the_cosine_shortlist_stays_tight_where_most_images_have_a_look_alike(monkeypatch):
    """28 px Fashion-MNIST: copies are no closer than every image's nearest neighbour; a 98% cut there would
    give every image dozens of candidate partners, so Youden's cut stays."""
    rng = np.random.default_rng(1)
    copies, neighbours = rng.uniform(0.70, 1.0, 200), rng.uniform(0.85, 0.97, 200)
    cal = _calibrate_on(monkeypatch, copies, neighbours, rng.uniform(0.9, 1.0, 200), rng.uniform(0, 1, 200))
    assert cal.threshold == dupes._youden(copies.astype(np.float32), neighbours.astype(np.float32)).threshold

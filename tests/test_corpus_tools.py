"""simsearch outliers, map and reconstruct on small generated data, and the reconstruction
statistics that the index stores (format 3; the denoising error since format 4)."""

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
from synth import copy_checked_in_index

import simsearch
from simsearch import corpusmap, outliers, reconerror, store
from simsearch.cli import cli

DATA2 = Path(__file__).parent / "data" / "v2-index"


def run(*args, code=0):
    res = CliRunner().invoke(cli, [str(a) for a in args], obj={})
    assert res.exit_code == code, f"exit {res.exit_code}\n{res.stdout}\n{res.stderr}\n{res.exception!r}"
    return res


# ---------------------------------------------------------------- stored reconstruction statistics


def test_reconerror_stats():
    x = np.zeros((2, 1, 4, 4), np.uint8)
    x[1, 0, :, ::2] = 255  # stripes: busy
    y = x.copy()
    y[0] = 51  # 0.2 off everywhere
    s = reconerror.stats(x, y)
    assert s.shape == (2, 2) and s.dtype == np.float32
    assert s[0, 0] == pytest.approx(0.04, abs=1e-6) and s[1, 0] == 0
    assert s[0, 1] == 0 and s[1, 1] > 0.4
    # the denoising error: the mean over the copies of each copy's mse
    d = reconerror.denoise(x, [y, x, np.full_like(x, 255)])
    assert d.shape == (2,) and d.dtype == np.float32
    np.testing.assert_allclose(d, [(0.04 + 0 + 1) / 3, (0 + 0 + 0.5) / 3], atol=1e-6)
    assert reconerror.unknown(4).shape == (4, len(reconerror.COLUMNS)) == (4, 3)


def test_a_build_stores_statistics_equal_to_computing_them_from_the_files(shared_index):
    stats = shared_index.recon_stats()
    assert stats is not None and stats.shape == (len(shared_index), 3) and np.isfinite(stats).all()
    assert "recon.npy" in shared_index.meta.files and shared_index.meta.recon
    assert shared_index.meta.recon_columns == ["mse", "detail", "denoise_mse"]
    from simsearch.reconview import load_pixels

    ids = shared_index.ids()[:5].tolist()
    px, _ = load_pixels(shared_index, ids)
    again = reconerror.stats(px, shared_index.reconstruct(px))
    np.testing.assert_allclose(again, stats[:5, :2], rtol=1e-4, atol=1e-6)
    # outliers' own computation from the files (Index.corrupt + Index.reconstruct), all three columns
    fresh, unreadable = outliers.file_stats(shared_index, np.arange(5))
    assert unreadable == 0
    np.testing.assert_allclose(fresh, stats[:5], rtol=1e-4, atol=1e-6)
    assert (stats[:, 2] > stats[:, 0]).mean() > 0.5  # redrawing a corrupted copy is mostly harder


def test_a_corrupted_copy_depends_on_the_image_and_the_seed_not_on_the_batch(shared_index):
    from simsearch.reconview import load_pixels

    px, _ = load_pixels(shared_index, shared_index.ids()[:9].tolist())
    both = shared_index.corrupt(px, seed=1)
    assert not np.array_equal(both, px)
    np.testing.assert_array_equal(shared_index.corrupt(px[4:5], seed=1)[0], both[4])  # alone
    np.testing.assert_array_equal(shared_index.corrupt(px[::-1], seed=1)[::-1], both)  # another order
    assert not np.array_equal(shared_index.corrupt(px, seed=2), both)  # another seed: another copy


def test_the_denoising_error_does_not_depend_on_the_batch(shared_index):
    """The same image embedded alone, in batches of 7 or all at once gets the same statistics."""
    from simsearch import embed
    from simsearch.reconview import load_pixels
    from simsearch.settings import corruption_config

    rows = np.arange(20)
    px, _ = load_pixels(shared_index, shared_index.ids()[rows].tolist())
    model, views = shared_index.model, shared_index.views
    corruption = corruption_config(shared_index.meta.model.train)

    def stats_of(pixels, batch_size=None):
        return embed.embed(model, pixels, "cpu", batch_size, views=views, recon=True, corruption=corruption)[1]

    whole = stats_of(px)
    alone = np.concatenate([stats_of(px[i : i + 1]) for i in range(len(px))])
    sevens = stats_of(px, batch_size=7)
    shuffled = stats_of(px[::-1], batch_size=3)[::-1]
    for other in (alone, sevens, shuffled):
        np.testing.assert_allclose(other, whole, rtol=0, atol=1e-6)
    # and what the build stored for them (embedded in its own chunk and batch)
    np.testing.assert_allclose(whole, shared_index.recon_stats()[rows], rtol=0, atol=1e-6)


def test_an_image_added_alone_stores_what_its_twin_got_in_the_build(index_copy):
    shutil.copyfile(index_copy.root / "disc" / "disc_003.png", index_copy.root / "twin.png")
    index_copy.update()
    rows = {e.path: i for i, e in enumerate(index_copy.entries())}
    stats = index_copy.recon_stats()
    np.testing.assert_allclose(stats[rows["twin.png"]], stats[rows["disc/disc_003.png"]], rtol=0, atol=1e-6)


def test_an_update_embeds_only_new_images_and_keeps_stored_statistics(index_copy):
    before = index_copy.recon_stats()
    Image.open(index_copy.root / "disc" / "disc_001.png").rotate(90).save(index_copy.root / "new.png")
    index_copy.update()
    after = index_copy.recon_stats()
    assert len(after) == len(before) + 1 and np.isfinite(after).all()
    np.testing.assert_array_equal(after[:-1], before)  # the new file has the highest id: last row


def test_a_damaged_recon_file_is_a_one_line_error(index_copy):
    gen = store.current_generation(index_copy.path)
    np.save(gen / "recon.npy", np.zeros((3, 2), np.float32))
    res = run("outliers", "--index", index_copy.path, code=1)
    assert "recon.npy" in res.stderr and "rebuild" in res.stderr


# ---------------------------------------------------------------- outliers


def test_detail_adjustment_stops_busy_images_dominating():
    rng = np.random.default_rng(0)
    detail = np.exp(rng.uniform(-6, 0, 500))
    mse = 0.05 * detail**0.8 * np.exp(rng.normal(0, 0.1, 500))  # error grows with detail, nothing odd
    mse[7] *= 20  # one truly badly redrawn image, of average detail
    adj = outliers.detail_adjusted(mse, detail)
    assert int(np.argmax(adj)) == 7
    assert int(np.argmax(mse)) != 7 or True  # raw error would rank the busiest first
    z = outliers.robust_z(adj)
    assert z[7] > 10 and np.median(np.abs(z)) == pytest.approx(0.674, abs=0.15)


def test_latent_distance_ranks_an_unusual_code_first():
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((400, 16)) * np.linspace(3, 0.1, 16)  # very unequal spreads
    codes[9] = 0
    codes[9, -1] = 1.0  # small in norm, but 10 standard deviations along the narrowest direction
    d = outliers.latent_distance(codes)
    assert int(np.argmax(d)) == 9
    assert int(np.argmax(np.linalg.norm(codes, axis=1))) != 9  # the raw norm would not find it


def test_latent_distance_is_not_masked_by_a_cluster_of_unusual_codes():
    """40 unusual codes of 1,000, alike and 10 standard deviations out along the narrowest direction: they
    widen the plain covariance along it and hide among the ordinary codes' tails; the robust estimate
    (``CODE_KEEP``, ``CODE_STEPS``) leaves them out of the covariance, and they all rank first."""
    rng = np.random.default_rng(1)
    codes = rng.standard_normal((1000, 16)) * np.linspace(3, 0.1, 16)
    odd = np.arange(0, 1000, 25)
    codes[odd, -1] = 1.0 + rng.normal(0, 0.02, len(odd))
    top = lambda d: set(np.argsort(-d)[: len(odd)].tolist())  # noqa: E731
    plain = outliers.latent_distance(codes, keep=1.0)
    assert np.array_equal(plain, outliers.latent_distance(codes, steps=0))
    rank = np.argsort(np.argsort(-plain))
    assert len(top(plain) & set(odd.tolist())) < len(odd) and rank[odd].max() > 2 * len(odd)  # masked
    assert top(outliers.latent_distance(codes)) == set(odd.tolist())


def test_recon_score_adds_the_denoising_and_the_code_part(shared_index):
    res = outliers.scores(shared_index, "recon")
    assert res.parts is not None and res.parts.shape == (len(shared_index), 2)
    np.testing.assert_allclose(res.scores, res.parts.sum(1))
    again = outliers.scores(shared_index, "recon")  # corruptions are seeded: the same every run
    np.testing.assert_array_equal(res.scores, again.scores)


def test_outliers_find_the_planted_image(index_copy):
    # a white drawing of a different kind among grey discs, squares and stripes on black
    odd = np.full((32, 32), 255, np.uint8)
    odd[4:28, 14:18] = 0
    odd[14:18, 4:28] = 0
    Image.fromarray(odd).save(index_copy.root / "cross.png")
    before = {o.path: o.score for o in outliers.find(index_copy, len(index_copy), "knn").outliers}
    shutil.copyfile(index_copy.root / "disc" / "disc_003.png", index_copy.root / "twin.png")
    index_copy.update()
    res = outliers.find(index_copy, 5, "recon")
    assert [o.rank for o in res.outliers] == [1, 2, 3, 4, 5] and res.computed == 0  # all stored
    assert res.outliers[0].path == "cross.png" and res.outliers[0].percentile == 100 and res.outliers[0].z > 1.5
    # knn: an identical twin is one of an image's nearest neighbours, at distance 0: the pair scores
    # alike, lower than the original did alone, and in the lower half of the ranking
    knn = outliers.find(index_copy, len(index_copy), "knn")
    by_path = {o.path: o for o in knn.outliers}
    twin, original = by_path["twin.png"], by_path["disc/disc_003.png"]
    assert twin.score == pytest.approx(original.score, abs=1e-4)
    assert twin.score < before["disc/disc_003.png"] - 0.01 and twin.rank > len(index_copy) / 2
    assert [o.score for o in knn.outliers] == sorted((o.score for o in knn.outliers), reverse=True)


def test_stored_values_rank_as_computing_them_from_the_files(shared_index, monkeypatch):
    stored = outliers.find(shared_index, len(shared_index))
    assert stored.computed == 0 and stored.stats is not None and "computed now" not in stored.note()
    # the same index as if it stored nothing (a format-2 index): everything from the files
    monkeypatch.setattr(shared_index, "recon_stats", lambda: None)
    fresh = outliers.find(shared_index, len(shared_index))
    assert fresh.computed == len(shared_index) and "computed now" in fresh.note()
    assert fresh.stats is not None and fresh.scores is not None and stored.scores is not None
    np.testing.assert_allclose(fresh.stats, stored.stats, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fresh.scores, stored.scores, rtol=0, atol=1e-4)
    assert [o.id for o in fresh.outliers] == [o.id for o in stored.outliers]


def test_only_unknown_values_are_computed_from_the_files(shared_index, monkeypatch):
    full = shared_index.recon_stats()
    assert full is not None
    partial = full.copy()
    partial[[3, 17, 40], 2] = np.nan  # denoising errors not known (a format-3 index)
    partial[[8], :] = np.nan  # nothing known (a format-2 row)
    monkeypatch.setattr(shared_index, "recon_stats", lambda: partial.copy())
    asked = []
    real = outliers.file_stats
    monkeypatch.setattr(outliers, "file_stats", lambda idx, rows, *a: asked.append(list(rows)) or real(idx, rows, *a))
    res = outliers.scores(shared_index)
    assert asked == [[3, 8, 17, 40]] and res.computed == 4 and res.stats is not None
    np.testing.assert_allclose(res.stats, full, rtol=0, atol=1e-6)


def test_outliers_cli_formats_and_sheet(shared_index, tmp_path):
    before = tree_digest(shared_index.root)
    res = run("outliers", "--index", shared_index.path, "-n", "4", "--json")
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 4 and {"rank", "id", "path", "score", "z", "percentile", "mse", "detail", "denoise"} <= set(
        rows[0]
    )
    assert "detail" in res.stderr  # what the score means
    res = run("outliers", "--index", shared_index.path, "-n", "3", "--by", "knn", "--csv")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 3 and rows[0]["mse"] == "" and rows[0]["denoise"] == ""
    table = run("outliers", "--index", shared_index.path, "-n", "2", "--sheet", tmp_path / "o.png").stdout
    assert "rank" in table and Image.open(tmp_path / "o.png").size[0] > 100
    run("outliers", "--index", shared_index.path, "--json", "--csv", code=2)
    run("outliers", "--index", shared_index.path, "--by", "pixels", code=2)
    run("outliers", "--index", shared_index.path, "-n", "0", code=2)
    assert tree_digest(shared_index.root) == before


@pytest.fixture
def v2(tmp_path) -> Path:
    return copy_checked_in_index(DATA2, tmp_path)


def test_an_index_without_stored_statistics_gets_them_on_demand_and_says_so(v2):
    before = tree_digest(v2)
    index = simsearch.Index.open(v2)
    res = outliers.find(index, 3)
    assert res.computed == len(index) == 12 and len(res.outliers) == 3
    assert "computed now" in res.note()
    assert res.stats is not None and np.isfinite(res.stats).all()  # the clean error too, though none is stored
    cli_res = run("outliers", "--index", v2, "-n", "2")
    assert "computed now" in cli_res.stderr
    assert tree_digest(v2) == before  # reading never writes


# ---------------------------------------------------------------- map


def test_snap_to_grid_gives_every_point_its_own_cell():
    rng = np.random.default_rng(0)
    for m in (1, 5, 300, 2600):
        xy = rng.normal(size=(m, 2)) * [3, 1]
        xy[: m // 2] *= 0.01  # a dense clump
        cells, (cols, rows) = corpusmap.snap_to_grid(xy)
        assert len({tuple(c) for c in cells.tolist()}) == m
        assert (cells[:, 0] < cols).all() and (cells[:, 1] < rows).all() and (cells >= 0).all()


def test_pca_layout_keeps_neighbours_close():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 8)) + [5, 0, 0, 0, 0, 0, 0, 0]
    b = rng.normal(size=(40, 8)) - [5, 0, 0, 0, 0, 0, 0, 0]
    xy = corpusmap.project(np.vstack([a, b]), "pca")
    assert np.sign(xy[:40, 0]).min() == np.sign(xy[:40, 0]).max() != np.sign(xy[40:, 0]).max()
    np.testing.assert_array_equal(xy, corpusmap.project(np.vstack([a, b]), "pca"))


def test_map_cli_png_html_and_cache(shared_index, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = run(
        "map", "--index", shared_index.path, "--out", tmp_path / "m.png", "--html", tmp_path / "m.html", "--colour"
    )
    assert "60 of 60 images, pca" in res.stderr and "cache" not in res.stderr
    img = Image.open(tmp_path / "m.png")
    assert img.size[0] > 200
    page = (tmp_path / "m.html").read_text()
    assert "data:image/png;base64," in page and "file://" in page and "wheel" in page
    assert len(list((tmp_path / "cache" / "simsearch" / "maps").glob("*.npz"))) == 1
    again = run(
        "map",
        "--index",
        shared_index.path,
        "--out",
        tmp_path / "m2.png",
        "--server",
        "http://localhost:8000",
        "--html",
        tmp_path / "m2.html",
    )
    assert "from the cache" in again.stderr
    assert "http://localhost:8000/?id=" in (tmp_path / "m2.html").read_text()
    sampled = run(
        "map", "--index", shared_index.path, "--out", tmp_path / "s.png", "--sample", "10", "--method", "tsne"
    )
    assert "10 of 60 images, tsne" in sampled.stderr


def test_map_coordinates_follow_the_index_version(index_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = corpusmap.layout(index_copy)
    assert not first.cached and corpusmap.layout(index_copy).cached
    Image.open(index_copy.root / "disc" / "disc_001.png").rotate(90).save(index_copy.root / "new.png")
    index_copy.update()
    assert not corpusmap.layout(index_copy).cached  # a new generation: computed again


# ---------------------------------------------------------------- reconstruct


def test_reconstruct_cli_writes_one_png_per_image_and_a_summary(shared_index, shared_corpus, tmp_path):
    imgs = [shared_corpus / "disc" / "disc_000.png", shared_corpus / "stripes" / "stripes_001.png"]
    res = run("reconstruct", "--index", shared_index.path, *imgs, "--out", tmp_path / "r")
    assert len(res.stdout.splitlines()) == 2 and "reconstruction error" in res.stdout
    pngs = sorted(p.name for p in (tmp_path / "r").glob("*.png"))
    assert pngs == ["001-disc_000.png", "002-stripes_001.png", "reconstructions.png"]
    # the shared index's model is a denoising one: four images per strip
    w = Image.open(tmp_path / "r" / "001-disc_000.png").size[0]
    assert w > 4 * 160
    run("reconstruct", "--index", shared_index.path, "--indexed", "0", "--out", tmp_path / "r2")
    assert "occluding box" in shared_index.corruption_edits()  # the sheet's caption names the model's edits


def test_reconstruct_bad_input_is_one_line_naming_the_file(shared_index, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    res = run("reconstruct", "--index", shared_index.path, bad, "--out", tmp_path / "r", code=1)
    assert str(bad) in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run("reconstruct", "--index", shared_index.path, tmp_path / "missing.png", "--out", tmp_path / "r", code=1)
    assert "missing.png" in res.stderr
    run("reconstruct", "--index", shared_index.path, "--out", tmp_path / "r", code=2)  # no images

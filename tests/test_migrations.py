"""Format migrations: a real format-1 index written by simsearch 0.1 (tests/data/v1-index, made by
tests/data/make_v1_index.py at the 0.1 release), a real format-2 index (tests/data/v2-index,
make_v2_index.py at d0f1176) and a real format-3 index (tests/data/v3-index, make_v3_index.py at
8f78e18) open, migrate and answer as they did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from synth import copy_checked_in_index

import simsearch
from simsearch import meta as meta_mod
from simsearch import migrations, store
from simsearch.errors import IndexFormatError

DATA = Path(__file__).parent / "data" / "v1-index"
DATA2 = Path(__file__).parent / "data" / "v2-index"
DATA3 = Path(__file__).parent / "data" / "v3-index"
ALL = ["m001_fill_v1", "m002_recon_unknown", "m003_denoise_unknown"]


@pytest.fixture
def v1(tmp_path) -> Path:
    """A writable copy of the 0.1 index (tests never change the checked-in one)."""
    shutil.copytree(DATA / "index", tmp_path / "index")
    return tmp_path / "index"


def raw_meta(index_dir: Path) -> dict:
    return json.loads((store.current_generation(index_dir) / "meta.json").read_text())


def test_the_fixture_is_format_1():
    assert raw_meta(DATA / "index")["format_version"] == 1
    assert raw_meta(DATA2 / "index")["format_version"] == 2
    assert raw_meta(DATA3 / "index")["format_version"] == 3
    assert meta_mod.FORMAT_VERSION == 4


def test_v1_index_opens_migrated_and_answers_as_0_1_did(v1):
    expected = json.loads((DATA / "expected.json").read_text())["queries"]
    index = simsearch.Index.open(v1)
    assert index.meta.format_version == meta_mod.FORMAT_VERSION
    assert index.meta.migrations == ALL
    assert index.meta.recon is False and index.recon_stats() is None
    assert index.meta.embedding.views == [] and index.meta.post.copies is None
    ids = {e.path: e.id for e in index.entries()}
    for query, hits in expected.items():
        # 0.1 was asked with the indexed file's own path, which leaves the file itself out: the
        # same question today is "neighbours of this id"
        got = index.neighbors(ids[query], k=len(hits))
        assert [h.id for h in got] == [h["id"] for h in hits]
        assert [h.path for h in got] == [h["path"] for h in hits]
        np.testing.assert_allclose([h.score for h in got], [h["score"] for h in hits], rtol=0, atol=1e-6)
        # and by pixels, from a file at another path (the corpus was checked in beside the index)
        by_image = index.query(DATA / "corpus" / query, k=len(hits) + 1)
        assert by_image[0].id == ids[query] and by_image[0].score == 1.0  # identical content comes first
        assert [h.id for h in by_image[1:]] == [h["id"] for h in hits]


def test_reading_does_not_write_and_the_next_write_stores_the_current_format(v1):
    before = raw_meta(v1)
    simsearch.Index.open(v1).query(DATA / "corpus" / "disc" / "disc_000.png", k=3)
    assert raw_meta(v1) == before  # a reader never writes
    n = simsearch.Index.open(v1).remove(["square/square_000.png"])
    assert n == 1
    after = raw_meta(v1)
    assert after["format_version"] == 4 and after["migrations"] == ALL
    again = simsearch.Index.open(v1)  # the current format reads with no migration left to apply
    assert len(again) == 11 and again.meta.migrations == ALL
    # a removal embeds nothing: still no reconstruction statistics (outliers computes them on demand)
    assert after["recon"] is False and again.recon_stats() is None


def test_verify_passes_on_the_migrated_index(v1):
    from simsearch.verify import verify

    summary, problems = verify(v1, check_files=False)
    assert [p for p in problems if p.severity != "warning"] == []
    assert summary["images"] == 12


def test_migrations_apply_in_order_and_are_recorded(tmp_path):
    def m_a(meta, gen):
        return {**meta, "format_version": 1, "seen": ["a"]}

    def m_b(meta, gen):
        return {**meta, "format_version": 2, "seen": meta["seen"] + ["b"]}

    def m_c(meta, gen):
        return {**meta, "format_version": 3, "seen": meta["seen"] + ["c"]}

    def m_d(meta, gen):
        return {**meta, "format_version": 4, "seen": meta["seen"] + ["d"]}

    out = migrations.migrate({"format_version": 0}, tmp_path, steps=[(1, m_b), (3, m_d), (2, m_c), (0, m_a)])
    assert out["seen"] == ["a", "b", "c", "d"] and out["migrations"] == ["m_a", "m_b", "m_c", "m_d"]


def test_too_old_newer_and_unversioned_formats_are_refused(tmp_path):
    with pytest.raises(IndexFormatError, match="too old to migrate"):
        migrations.migrate({"format_version": 0}, tmp_path)
    with pytest.raises(IndexFormatError, match="newer than this simsearch supports"):
        migrations.migrate({"format_version": meta_mod.FORMAT_VERSION + 1}, tmp_path)
    with pytest.raises(IndexFormatError, match="not a simsearch index"):
        migrations.migrate({}, tmp_path)


def test_a_pre_release_index_without_post_processing_asks_for_a_rebuild(v1):
    gen = store.current_generation(v1)
    meta = raw_meta(v1)
    del meta["post"]
    (gen / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match="rebuild"):
        store.read(v1)


def test_a_v1_index_without_next_id_gets_one_above_every_id(v1):
    gen = store.current_generation(v1)
    meta = raw_meta(v1)
    del meta["next_id"]
    out = migrations.m001_fill_v1(meta, gen)
    assert out["next_id"] == 12


# ---------------------------------------------------------------- format 2 → 3


@pytest.fixture
def v2(tmp_path) -> Path:
    """A writable copy of the format-2 index and its corpus, the index pointed at the copied corpus."""
    return copy_checked_in_index(DATA2, tmp_path)


def test_v2_index_opens_migrated_and_answers_as_before(v2):
    expected = json.loads((DATA2 / "expected.json").read_text())["queries"]
    index = simsearch.Index.open(v2)
    assert index.meta.format_version == 4 and index.meta.migrations == ALL[1:]
    assert index.meta.recon is False and index.recon_stats() is None
    ids = {e.path: e.id for e in index.entries()}
    for query, hits in expected.items():
        got = index.query(v2.parent / "corpus" / query, k=len(hits) + 1)
        assert got[0].id == ids[query] and got[0].score == 1.0
        assert [h.id for h in got[1:]] == [h["id"] for h in hits]
        np.testing.assert_allclose([h.score for h in got[1:]], [h["score"] for h in hits], rtol=0, atol=1e-6)


def test_v2_index_update_stores_recon_for_new_images_only(v2):
    from PIL import Image

    index = simsearch.Index.open(v2)
    before = raw_meta(v2)
    new = v2.parent / "corpus" / "disc" / "disc_new.png"
    Image.open(v2.parent / "corpus" / "square" / "square_000.png").transpose(Image.Transpose.ROTATE_90).save(new)
    report = index.add([new])
    assert report.added == 1
    after = raw_meta(v2)
    assert before["format_version"] == 2 and after["format_version"] == 4 and after["recon"] is True
    assert "recon.npy" in after["files"]
    stats = index.recon_stats()
    row = {e.path: i for i, e in enumerate(index.entries())}["disc/disc_new.png"]
    assert np.isfinite(stats[row]).all() and stats[row, 0] > 0
    assert np.isnan(np.delete(stats, row, axis=0)).all()  # the old rows: not recomputed, marked unknown

    from simsearch.verify import verify

    _summary, problems = verify(v2, check_files=False)
    assert [p for p in problems if p.severity != "warning"] == []


# ---------------------------------------------------------------- format 3 → 4


@pytest.fixture
def v3(tmp_path) -> Path:
    """A writable copy of the format-3 index and its corpus, the index pointed at the copied corpus."""
    return copy_checked_in_index(DATA3, tmp_path)


def _v3_expected() -> dict:
    return json.loads((DATA3 / "expected.json").read_text())


def test_v3_index_opens_migrated_and_answers_as_before(v3):
    expected = _v3_expected()
    before = raw_meta(v3)
    index = simsearch.Index.open(v3)
    assert index.meta.format_version == 4 and index.meta.migrations == ["m003_denoise_unknown"]
    assert index.meta.recon is True and index.meta.recon_columns == ["mse", "detail"]  # what the file holds
    ids = {e.path: e.id for e in index.entries()}
    for query, hits in expected["queries"].items():
        got = index.query(v3.parent / "corpus" / query, k=len(hits) + 1)
        assert got[0].id == ids[query] and got[0].score == 1.0
        assert [h.id for h in got[1:]] == [h["id"] for h in hits]
        np.testing.assert_allclose([h.score for h in got[1:]], [h["score"] for h in hits], rtol=0, atol=1e-6)
    # the stored clean error and detail read back as written; the denoising error is not known
    stats = index.recon_stats()
    assert stats is not None and stats.shape == (12, 3)
    want = np.array([expected["recon"][e.path] for e in index.entries()], np.float32)
    np.testing.assert_array_equal(stats[:, :2], want)
    assert np.isnan(stats[:, 2]).all()
    assert "not known for 12 images" in index.info()["recon_stats"]
    assert raw_meta(v3) == before  # a reader never writes


def test_an_index_fitted_before_the_pixel_check_answers_without_it(v3):
    from PIL import Image

    index = simsearch.Index.open(v3)
    assert index.pixel_threshold is None and index.info()["pixel_check"].startswith("off: not calibrated")
    first = index.entries()[0].path
    with Image.open(v3.parent / "corpus" / first) as im:
        smaller = im.resize((im.width - 2, im.height - 2))
    hits = index.query(smaller, k=5)
    assert hits and all(h.pixel is None for h in hits)
    assert [h.id for h in hits] == [h.id for h in index.query(smaller, k=5, pixel_check=False)]


def test_the_command_info_gives_an_index_fitted_before_the_pixel_check_calibrates_it_without_training(v3):
    import shlex

    from click.testing import CliRunner

    from simsearch.cli import cli

    before = simsearch.Index.open(v3)
    note = before.info()["pixel_check"]
    command = shlex.split(note.split("`")[1])
    assert command[:2] == ["simsearch", "index"] and "--model" in command
    res = CliRunner().invoke(cli, command[1:], obj={})
    assert res.exit_code == 0, res.stderr
    assert "trained" not in res.stderr and "added 12" in res.stderr
    after = simsearch.Index.open(v3)
    assert after.meta.model.sha256 == before.meta.model.sha256 and after.views == before.views
    assert after.preprocess == before.preprocess
    assert "pixel" in after.meta.post.copies and "not calibrated" not in after.info()["pixel_check"]
    assert sorted(e.path for e in after.entries()) == sorted(e.path for e in before.entries())


def test_outliers_on_a_v3_index_compute_the_denoising_error_from_the_files(v3):
    from conftest import tree_digest

    from simsearch import outliers

    before = tree_digest(v3.parent)
    index = simsearch.Index.open(v3)
    res = outliers.find(index, 3)
    assert res.computed == 12 and len(res.outliers) == 3 and "computed now" in res.note()
    assert res.stats is not None and np.isfinite(res.stats).all()
    want = np.array([_v3_expected()["recon"][e.path] for e in index.entries()], np.float32)
    np.testing.assert_array_equal(res.stats[:, :2], want)  # the stored values are used, not recomputed
    fresh, _ = outliers.file_stats(index)
    np.testing.assert_array_equal(res.stats[:, 2], fresh[:, 2])
    assert tree_digest(v3.parent) == before  # reading never writes


def test_v3_index_update_stores_the_denoising_error_for_the_images_it_embeds(v3):
    from PIL import Image

    from simsearch import outliers

    index = simsearch.Index.open(v3)
    new = v3.parent / "corpus" / "disc" / "disc_new.png"
    Image.open(v3.parent / "corpus" / "square" / "square_000.png").transpose(Image.Transpose.ROTATE_90).save(new)
    assert index.add([new]).added == 1
    after = raw_meta(v3)
    assert after["format_version"] == 4 and after["migrations"] == ["m003_denoise_unknown"]
    assert after["recon"] is True and after["recon_columns"] == ["mse", "detail", "denoise_mse"]
    on_disk = np.load(store.current_generation(v3) / "recon.npy")
    assert on_disk.shape == (13, 3) and on_disk.dtype == np.float32
    stats = index.recon_stats()
    row = {e.path: i for i, e in enumerate(index.entries())}["disc/disc_new.png"]
    assert np.isfinite(stats[row]).all() and stats[row, 2] > 0
    old = np.delete(stats, row, axis=0)
    want = np.array([_v3_expected()["recon"][e.path] for e in index.entries() if e.path != "disc/disc_new.png"])
    np.testing.assert_array_equal(old[:, :2], want.astype(np.float32))  # kept as stored
    assert np.isnan(old[:, 2]).all()  # not recomputed: still unknown
    # outliers computes only the 12 unknown ones, and the new image's stored value equals computing it
    res = outliers.scores(index)
    assert res.computed == 12 and res.stats is not None
    fresh, _ = outliers.file_stats(index, np.array([row]))
    np.testing.assert_allclose(stats[row], fresh[0], rtol=0, atol=1e-6)

    from simsearch.verify import verify

    _summary, problems = verify(v3, check_files=False)
    assert [p for p in problems if p.severity != "warning"] == []


def test_v3_index_re_embedded_stores_every_denoising_error(v3):
    from simsearch import outliers

    index = simsearch.Index.open(v3)
    index.update(tta=False)  # other test-time views: every image is embedded again
    stats = index.recon_stats()
    assert stats is not None and stats.shape == (12, 3) and np.isfinite(stats).all()
    assert outliers.scores(index).computed == 0

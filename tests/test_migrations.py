"""Format migrations: a real format-1 index written by simsearch 0.1 (tests/data/v1-index, made by
tests/data/make_v1_index.py at the 0.1 release) and a real format-2 index (tests/data/v2-index,
make_v2_index.py at d0f1176) open, migrate and answer as they did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import simsearch
from simsearch import meta as meta_mod
from simsearch import migrations, store
from simsearch.errors import IndexFormatError

DATA = Path(__file__).parent / "data" / "v1-index"
DATA2 = Path(__file__).parent / "data" / "v2-index"


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
    assert meta_mod.FORMAT_VERSION == 3


def test_v1_index_opens_migrated_and_answers_as_0_1_did(v1):
    expected = json.loads((DATA / "expected.json").read_text())["queries"]
    index = simsearch.Index.open(v1)
    assert index.meta.format_version == meta_mod.FORMAT_VERSION
    assert index.meta.migrations == ["m001_fill_v1", "m002_recon_unknown"]
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
    assert after["format_version"] == 3 and after["migrations"] == ["m001_fill_v1", "m002_recon_unknown"]
    again = simsearch.Index.open(v1)  # the current format reads with no migration left to apply
    assert len(again) == 11 and again.meta.migrations == ["m001_fill_v1", "m002_recon_unknown"]
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

    out = migrations.migrate({"format_version": 0}, tmp_path, steps=[(1, m_b), (2, m_c), (0, m_a)])
    assert out["seen"] == ["a", "b", "c"] and out["migrations"] == ["m_a", "m_b", "m_c"]


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
    shutil.copytree(DATA2 / "corpus", tmp_path / "corpus")
    shutil.copytree(DATA2 / "index", tmp_path / "index")
    gen = store.current_generation(tmp_path / "index")
    meta = json.loads((gen / "meta.json").read_text())
    meta["corpus_root"] = str((tmp_path / "corpus").resolve())
    (gen / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return tmp_path / "index"


def test_v2_index_opens_migrated_and_answers_as_before(v2):
    expected = json.loads((DATA2 / "expected.json").read_text())["queries"]
    index = simsearch.Index.open(v2)
    assert index.meta.format_version == 3 and index.meta.migrations == ["m002_recon_unknown"]
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
    assert before["format_version"] == 2 and after["format_version"] == 3 and after["recon"] is True
    assert "recon.npy" in after["files"]
    stats = index.recon_stats()
    row = {e.path: i for i, e in enumerate(index.entries())}["disc/disc_new.png"]
    assert np.isfinite(stats[row]).all() and stats[row, 0] > 0
    assert np.isnan(np.delete(stats, row, axis=0)).all()  # the old rows: not recomputed, marked unknown

    from simsearch.verify import verify

    _summary, problems = verify(v2, check_files=False)
    assert [p for p in problems if p.severity != "warning"] == []

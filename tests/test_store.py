"""The on-disk index: round trips, exact search, format checks, corruption, locking."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import numpy as np
import pytest
from synth import make_snapshot

from simsearch import store
from simsearch.errors import IndexFormatError, IndexLockedError, IndexNotFoundError


def test_round_trip(tmp_path):
    snap = make_snapshot()
    store.write(tmp_path, snap)
    back = store.read(tmp_path)
    assert np.array_equal(back.ids, snap.ids)
    assert np.array_equal(back.vectors, snap.vectors)
    assert back.entries == snap.entries
    assert back.skipped == snap.skipped
    assert back.meta.format_version == store.FORMAT_VERSION
    assert (back.meta.counts.vectors, back.meta.counts.skipped) == (200, 1)
    assert back.meta.post.sha256 and store.post_path(tmp_path, back.meta.post.sha256).exists()
    assert back.faiss_index.ntotal == 200


def test_faiss_equals_numpy_brute_force(tmp_path):
    snap = make_snapshot(n=500, d=32, seed=1)
    store.write(tmp_path, snap)
    back = store.read(tmp_path)
    q = back.post.search_vectors(np.random.default_rng(2).normal(size=(20, 32)))
    scores, ids = back.faiss_index.search(q, 10)
    exact = q @ back.search_vectors().T
    order = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    assert np.array_equal(ids, back.ids[order])
    assert np.allclose(scores, np.take_along_axis(exact, order, 1), atol=1e-5)


def test_non_utf8_paths_survive(tmp_path):
    snap = make_snapshot(n=3)
    snap.entries[0].path = os.fsdecode(b"caf\xe9 photo.png")
    store.write(tmp_path, snap)
    assert store.read(tmp_path).entries[0].path == snap.entries[0].path


def test_generations_and_garbage_collection(tmp_path):
    for seed in range(4):
        store.write(tmp_path, make_snapshot(seed=seed))
    gens = sorted(p.name for p in tmp_path.glob("gen-*"))
    assert gens == ["gen-000003", "gen-000004"]
    assert (tmp_path / "CURRENT").read_text().strip() == "gen-000004"
    assert not list(tmp_path.glob(".tmp-*"))


def test_missing_index(tmp_path):
    with pytest.raises(IndexNotFoundError, match="no index here"):
        store.read(tmp_path / "nothing")


def test_newer_format_is_refused(tmp_path):
    store.write(tmp_path, make_snapshot())
    gen = store.current_generation(tmp_path)
    meta = json.loads((gen / "meta.json").read_text())
    meta["format_version"] = store.FORMAT_VERSION + 1
    (gen / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match="newer than this simsearch supports"):
        store.read(tmp_path)


@pytest.mark.parametrize("name", ["index.faiss", "vectors.npy", "ids.npy", "manifest.sqlite", "meta.json"])
def test_truncated_files_give_a_clear_error(tmp_path, name):
    store.write(tmp_path, make_snapshot())
    p = store.current_generation(tmp_path) / name
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError) as e:
        store.read(tmp_path)
    msg = str(e.value)
    assert name in msg and "--rebuild" in msg and "\n" not in msg


def test_failed_write_leaves_previous_generation(tmp_path, monkeypatch):
    first = make_snapshot(seed=0)
    store.write(tmp_path, first)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store, "_write_manifest", boom)
    with pytest.raises(OSError):
        store.write(tmp_path, make_snapshot(seed=1))
    monkeypatch.undo()
    back = store.read(tmp_path)
    assert np.array_equal(back.vectors, first.vectors)
    assert not list(tmp_path.glob(".tmp-*"))


def test_atomic_write_bytes_replaces_whole_file(tmp_path):
    p = tmp_path / "f.bin"
    store.atomic_write_bytes(p, b"a" * 10)
    store.atomic_write_bytes(p, b"b" * 3)
    assert p.read_bytes() == b"bbb"
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]


def _hold_lock(path, ready, release):
    with store.write_lock(path):
        ready.set()
        release.wait(10)


def test_second_writer_is_refused_or_waits(tmp_path):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    p.start()
    try:
        assert ready.wait(10)
        with pytest.raises(IndexLockedError, match="being written by pid"):
            with store.write_lock(tmp_path):
                pass
        with pytest.raises(IndexLockedError):
            with store.write_lock(tmp_path, wait=True, timeout=0.3):
                pass
    finally:
        release.set()
        p.join(10)
    with store.write_lock(tmp_path, wait=True, timeout=5):
        pass

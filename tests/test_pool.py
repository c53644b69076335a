"""Unit tests for simsearch.pool: decode_files (order, file info, workers, teardown, crashes)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synth import noise, write

from simsearch import pool
from simsearch.decode import load
from simsearch.pool import decode_files
from simsearch.preprocess import Preprocess

# ---------------------------------------------------------------- decode_files


def make_corpus(tmp_path: Path, n: int = 12) -> list[Path]:
    paths = []
    for i in range(n):
        if i % 4 == 3:
            p = tmp_path / f"{i:02d}.png"
            p.write_bytes(b"garbage" * i)
        else:
            fmt = ["PNG", "JPEG", "WEBP"][i % 3]
            p = write(tmp_path / f"{i:02d}.{fmt.lower()}", noise(20 + i, 30, i), fmt)
        paths.append(p)
    return paths


def test_decode_files_in_process_order_and_info(tmp_path):
    paths = make_corpus(tmp_path)
    pre = Preprocess(16, 3)
    out = list(decode_files(paths, pre, workers=1))
    assert [r[0] for r in out] == list(range(len(paths)))
    for (i, arr, reason, info), p in zip(out, paths):
        data = p.read_bytes()
        assert info["size"] == len(data)
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
        assert info["mtime_ns"] == os.stat(p).st_mtime_ns
        if i % 4 == 3:
            assert arr is None and reason == "not a recognised image format"
        else:
            assert reason is None
            assert np.array_equal(arr, load(p, pre))


def test_decode_files_workers_agree(tmp_path):
    paths = make_corpus(tmp_path, 14)
    pre = Preprocess(16, 1)
    one = list(decode_files(paths, pre, workers=1))
    two = list(decode_files(paths, pre, workers=2, chunksize=3))
    assert len(one) == len(two) == 14
    for a, b in zip(one, two):
        assert a[0] == b[0] and a[2] == b[2] and a[3] == b[3]
        assert (a[1] is None) == (b[1] is None)
        if a[1] is not None:
            assert np.array_equal(a[1], b[1])


def test_decode_files_empty_and_bad_arguments(tmp_path):
    assert list(decode_files([], Preprocess(8, 3))) == []
    with pytest.raises(ValueError):
        list(decode_files([tmp_path / "x.png"], Preprocess(8, 3), workers=-1))
    with pytest.raises(ValueError):
        list(decode_files([tmp_path / "x.png"], Preprocess(8, 3), chunksize=0))


def test_decode_files_default_workers(tmp_path):
    paths = make_corpus(tmp_path, 5)
    out = list(decode_files(paths, Preprocess(8, 3)))
    assert [r[0] for r in out] == list(range(5))


def _children_gone(ours: set) -> bool:
    """True when none of the processes in ``ours`` is still alive."""
    for p in ours:
        p.join(timeout=10)
    return not any(p.is_alive() for p in ours)


@pytest.mark.skipif(sys.platform != "linux", reason="pool bookkeeping checked on Linux")
def test_decode_files_close_terminates_pool(tmp_path):
    paths = make_corpus(tmp_path, 40)
    before = set(multiprocessing.active_children())
    gen = decode_files(paths, Preprocess(8, 3), workers=2, chunksize=1)
    first = next(gen)
    assert first[0] == 0
    ours = set(multiprocessing.active_children()) - before
    assert ours  # the pool's workers
    gen.close()
    assert _children_gone(ours)


@pytest.mark.skipif(sys.platform != "linux", reason="pool bookkeeping checked on Linux")
def test_decode_files_keyboard_interrupt_terminates_pool(tmp_path):
    paths = make_corpus(tmp_path, 40)
    before = set(multiprocessing.active_children())
    gen = decode_files(paths, Preprocess(8, 3), workers=2, chunksize=1)
    next(gen)
    ours = set(multiprocessing.active_children()) - before
    assert ours
    with pytest.raises(KeyboardInterrupt):
        gen.throw(KeyboardInterrupt)
    assert _children_gone(ours)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods() or sys.platform != "linux",
    reason="needs fork so the monkeypatch reaches the workers",
)
def test_decode_files_survives_worker_crash(tmp_path, monkeypatch):
    paths = make_corpus(tmp_path, 10)
    crash = write(tmp_path / "crash.png", Image.new("L", (8, 8)))
    paths.insert(5, crash)
    real = pool._load_bytes

    def crashing(data, pre, name):
        if "crash" in str(name):
            os._exit(3)  # simulate a segfaulting decoder
        return real(data, pre, name)

    monkeypatch.setattr(pool, "_load_bytes", crashing)
    pre = Preprocess(8, 3)
    before = set(multiprocessing.active_children())
    out = list(decode_files(paths, pre, workers=2, chunksize=2))
    assert _children_gone(set(multiprocessing.active_children()) - before)
    assert [r[0] for r in out] == list(range(len(paths)))
    assert out[5][1] is None and "crashed" in out[5][2]
    monkeypatch.setattr(pool, "_load_bytes", real)
    for i, arr, reason, _ in out:
        if i != 5:
            expected = next(iter(decode_files([paths[i]], pre, workers=1)))
            assert reason == expected[2]
            assert (arr is None) == (expected[1] is None)
            if arr is not None:
                assert np.array_equal(arr, expected[1])


# ---------------------------------------------------------------- decode_grids


def test_decode_grids_are_load_grids_in_order_in_any_worker_count(tmp_path, monkeypatch):
    from simsearch import pixelmatch

    paths = make_corpus(tmp_path, 14) + [tmp_path / "missing.png"]
    crash = write(tmp_path / "crash.png", Image.new("L", (8, 8)))
    paths.insert(6, crash)
    want = [pixelmatch.load_grid(p, as_bytes=True) for p in paths]
    real = pixelmatch.grids_bytes

    def crashing(img):
        if img.size == (8, 8):
            os._exit(3)  # a segfaulting decoder: only that file is lost
        return real(img)

    monkeypatch.setattr(pixelmatch, "grids_bytes", crashing)
    for workers in (2, 1):  # crashing in the workers, then in this process with the real decoder
        if workers == 1:
            monkeypatch.setattr(pixelmatch, "grids_bytes", real)
        out = list(pool.decode_grids(paths, workers=workers, chunksize=3))
        assert [r[0] for r in out] == list(range(len(paths)))
        for (i, g, reason, info), w in zip(out, want):
            assert info == {}
            if i == 6 and workers == 2:
                assert g is None and "crashed" in reason
            elif w is None:
                assert g is None and reason
            else:
                assert reason is None and g.dtype == np.uint8 and np.array_equal(g, w)
    assert sum(w is None for w in want) == 4  # the three garbage files and the missing one
    got = pixelmatch.load_grids(paths * 5, workers=2)  # over 64 files: the pool
    assert all((g is None) == (w is None) and (g is None or np.array_equal(g, w)) for g, w in zip(got, want * 5))

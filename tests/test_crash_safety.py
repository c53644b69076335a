"""SIGKILL at exact points of `simsearch index`: the previous index keeps answering
exactly as before, and the next run completes to the same result as an
uninterrupted one (resuming training from its checkpoint)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synth import make_image, write_corpus

from simsearch import store

# deterministic, short, no time budget: an interrupted + resumed run must equal an uninterrupted one
ARGS = ["--epochs", "3", "--time-budget", "0", "--width", "8", "--depth", "0", "--batch-size", "16", "--workers", "1"]


def index_cmd(corpus: Path, idx: Path, crash: str | None = None, extra=()) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SIMSEARCH_CRASH_AT", None)
    if crash:
        env["SIMSEARCH_CRASH_AT"] = crash
    return subprocess.run(
        [sys.executable, "-m", "simsearch", "index", str(corpus), "--index", str(idx), *ARGS, *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def state(idx: Path):
    snap = store.read(idx)
    q = snap.search_vectors()[:10]
    scores, ids = snap.faiss_index.search(q, 5)
    return [e.path for e in snap.entries], snap.ids.copy(), np.asarray(snap.vectors).copy(), ids, scores


def assert_same(a, b, atol=1e-4):
    assert a[0] == b[0]
    assert np.array_equal(a[1], b[1])
    assert np.allclose(a[2], b[2], atol=atol)
    assert np.array_equal(a[3], b[3])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """v1: an uninterrupted build; v2: an uninterrupted update after +5 files, 1 modified."""
    base = tmp_path_factory.mktemp("ref")
    corpus = base / "images"
    write_corpus(corpus, per_class=12)
    v1 = base / "v1"
    assert index_cmd(corpus, v1).returncode == 0
    v1_state = state(v1)
    corpus2 = base / "images2"
    shutil.copytree(corpus, corpus2, copy_function=shutil.copy2)
    change(corpus2)
    return corpus, v1, v1_state, corpus2


def change(corpus: Path) -> None:
    rng = np.random.default_rng(5)
    for i in range(5):
        make_image("stripes", rng).save(corpus / "stripes" / f"added_{i}.png")
    make_image("disc", rng).save(corpus / "square" / "square_001.png")


def test_kill_during_first_training_then_resume(reference, tmp_path):
    corpus, _v1, v1_state, _ = reference
    idx = tmp_path / "idx"
    r = index_cmd(corpus, idx, crash="train-epoch:2")
    assert r.returncode == -signal.SIGKILL
    assert not store.exists(idx)  # nothing half-written is visible
    assert (idx / "work" / "train.ckpt").exists()  # but the training so far is kept
    r = index_cmd(corpus, idx)
    assert r.returncode == 0, r.stderr
    assert_same(state(idx), v1_state)


@pytest.mark.parametrize(
    "point",
    [
        pytest.param("embed-batch", marks=pytest.mark.slow),
        pytest.param("write-vectors", marks=pytest.mark.slow),
        "write-manifest",
        pytest.param("write-index", marks=pytest.mark.slow),
        pytest.param("write-renamed", marks=pytest.mark.slow),
    ],
)
def test_kill_during_update(reference, tmp_path, point):
    corpus, v1, v1_state, _ = reference
    work = tmp_path / "images"
    shutil.copytree(corpus, work, copy_function=shutil.copy2)
    idx = tmp_path / "idx"
    assert index_cmd(work, idx).returncode == 0  # v1 of this folder
    before = state(idx)
    assert_same(before, v1_state)
    change(work)
    uninterrupted = tmp_path / "uninterrupted"
    shutil.copytree(idx, uninterrupted)
    assert index_cmd(work, uninterrupted).returncode == 0
    expected = state(uninterrupted)

    r = index_cmd(work, idx, crash=point)
    assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr)
    assert_same(state(idx), before, atol=0)  # the previous index answers exactly as before
    r = index_cmd(work, idx)
    assert r.returncode == 0, r.stderr
    assert "added 5 / updated 1 / removed 0" in r.stderr
    assert_same(state(idx), expected)
    assert not list(idx.glob(".tmp-*"))


@pytest.mark.slow
def test_kill_during_retrain_keeps_old_index(reference, tmp_path):
    corpus, v1, v1_state, _ = reference
    idx = tmp_path / "idx"
    shutil.copytree(v1, idx)
    r = index_cmd(corpus, idx, crash="train-epoch:1", extra=["--retrain", "--seed", "1"])
    assert r.returncode == -signal.SIGKILL
    assert_same(state(idx), v1_state, atol=0)
    r = index_cmd(corpus, idx, extra=["--retrain", "--seed", "1"])
    assert r.returncode == 0 and "resumed" not in r.stdout

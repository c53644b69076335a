"""`simsearch verify`, format migration, and readers during writes."""

from __future__ import annotations

import json
import threading

import numpy as np
from click.testing import CliRunner
from synth import make_image

from simsearch import store
from simsearch.cli import cli

# test_verify_clean_index reads the session's shared index; the others corrupt, migrate, update or
# lock an index, so they take a private copy of it and of its corpus (conftest.index_copy).


def verify(idx, *extra):
    return CliRunner().invoke(cli, ["verify", "--index", str(idx), "--json", *extra], obj={})


def test_verify_clean_index(shared_index):
    res = verify(shared_index.path)
    d = json.loads(res.stdout)
    assert res.exit_code == 0 and d["ok"] and d["images"] == 60 and d["problems"] == []


def test_verify_finds_corruption(index_copy):
    index = index_copy
    p = store.current_generation(index.path) / "vectors.npy"
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF  # flip bits in the last vector: same size, different content
    p.write_bytes(bytes(data))
    res = verify(index.path)
    d = json.loads(res.stdout)
    assert res.exit_code == 1 and not d["ok"]
    assert any("vectors.npy" in x["where"] and "sha256" in x["what"] for x in d["problems"])


def test_verify_finds_missing_model_and_drifted_files(index_copy):
    index, corpus = index_copy, index_copy.root
    (corpus / "disc" / "disc_000.png").unlink()
    res = verify(index.path)
    d = json.loads(res.stdout)
    assert res.exit_code == 0 and d["files_missing"] == 1  # a warning, not damage
    store.model_path(index.path, index.meta.model.sha256).unlink()
    res = verify(index.path)
    assert res.exit_code == 1 and "model file missing" in res.stdout


def test_readers_during_writes_see_complete_versions(index_copy):
    index, corpus = index_copy, index_copy.root
    rng = np.random.default_rng(0)
    extra = []
    for i in range(4):
        p = corpus / "disc" / f"w{i}.png"
        make_image("disc", rng).save(p)
        extra.append(p)
    seen, errors, stop = set(), [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                snap = store.read(index.path)
                # a complete version: manifest, vectors and FAISS agree
                assert snap.faiss_index.ntotal == len(snap.entries) == len(snap.vectors)
                _, ids = snap.faiss_index.search(snap.search_vectors()[:3], 3)
                assert set(ids.ravel()) <= set(snap.ids.tolist())
                seen.add(len(snap))
            except Exception as e:  # noqa: BLE001 — any failure is a test failure
                errors.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for p in extra:
            index.add([p])
            index.remove([p])
            index.add([p])
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:3]
    assert seen <= set(range(60, 65)) and len(seen) >= 2
    assert len(index) == 64


def test_second_writer_cli_message(index_copy):
    index, corpus = index_copy, index_copy.root
    with store.write_lock(index.path):
        res = CliRunner().invoke(cli, ["index", str(corpus), "--index", str(index.path)], obj={})
    assert res.exit_code == 1 and "being written by" in res.stderr and "--wait" in res.stderr

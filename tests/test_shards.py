"""simsearch.shards: a sharded IVF index (one quantizer, shards filled in parallel, a delta shard and
tombstones, compaction), checked against exact search and against the index it stands for: the
merged index, and a full rebuild of the same vectors."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from synth import FAST_CLI, make_image, make_snapshot, write_corpus

from simsearch import ann, shards, store
from simsearch.errors import IndexFormatError
from simsearch.meta import FaissRecord

D, N, K = 16, 6000, 10


def unit(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    """``n`` unit vectors from one fixed mixture of 20 clusters (the same for every call)."""
    centres = np.random.default_rng(123).normal(size=(20, d))
    x = (centres[rng.integers(0, 20, n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_ids(xq: np.ndarray, xb: np.ndarray, ids: np.ndarray, k: int = K) -> np.ndarray:
    return ids[np.argsort(-(xq @ xb.T), axis=1, kind="stable")[:, :k]]


def searched(index, xq: np.ndarray, nprobe: int, k: int = K) -> np.ndarray:
    if isinstance(index, shards.ShardedIndex):
        index.set_params({"nprobe": nprobe})
        return index.search(xq, k)[1]
    p = faiss.SearchParametersIVF()
    p.nprobe = nprobe
    return index.search(xq, k, params=p)[1]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    xb = unit(rng, N)
    ids = rng.permutation(10 * N)[:N].astype(np.int64)  # stable ids: neither contiguous nor ordered
    return xb, ids, unit(rng, 200)


def test_train_rows_are_a_uniform_sample_not_the_first_rows():
    rows = shards.train_rows(100_000, nlist=64, size=5000, seed=1)
    assert len(rows) == 5000 and np.all(np.diff(rows) > 0)
    assert rows.max() > 90_000 and rows.min() < 10_000  # spread over the whole range
    assert abs(np.median(rows) - 50_000) < 5_000
    assert len(shards.train_rows(100_000, nlist=1024, size=5000)) == 39 * 1024  # k-means' floor per cell
    assert np.array_equal(shards.train_rows(300, nlist=4), np.arange(300))


@pytest.mark.parametrize("factory", ["IVF32,Flat", "IVF32,SQ8"])
def test_sharded_search_returns_the_ids_of_the_merged_index(data, factory):
    xb, ids, xq = data
    index = shards.build(xb, ids, factory, shards=3, workers=2, pool="thread")
    assert len(index.main) == 3 and all(s.ntotal for s in index.main) and index.ntotal == N
    assert np.array_equal(np.sort(index.live_ids()), np.sort(ids))
    merged = shards.merge([faiss.clone_index(s) for s in index.main])
    assert merged.ntotal == N
    for nprobe in (1, 4, 32):  # every shard probes the same cells: the same candidates as the merged index
        assert np.array_equal(searched(index, xq, nprobe), searched(merged, xq, nprobe))
    if factory.endswith("Flat"):  # all cells, exact codes: exact search
        assert np.array_equal(searched(index, xq, 32), exact_ids(xq, xb, ids))


def test_thread_and_serial_fills_make_the_same_shards(data):
    xb, ids, xq = data
    trained = shards.train(xb[shards.train_rows(N, 32)], "IVF32,SQ8")
    parts = [(xb[r], ids[r]) for r in shards.split_rows(N, 4)]
    a = shards.merge(shards.fill_parallel(trained, parts, workers=2, pool="thread"))
    b = shards.merge(shards.fill_parallel(trained, parts, pool="serial"))
    assert np.array_equal(searched(a, xq, 8), searched(b, xq, 8))
    with pytest.raises(ValueError, match="unknown pool"):
        shards.fill_parallel(trained, parts, workers=2, pool="fork")


def _changes(data):
    """An update of ``data``: 300 ids removed, 200 replaced (same id, new vector), 400 new ones;
    → (update arguments, and the final (vectors, ids))."""
    xb, ids, _ = data
    rng = np.random.default_rng(5)
    removed, replaced = ids[:300], ids[300:500]
    new_ids = np.arange(10 * N, 10 * N + 400, dtype=np.int64)
    add_ids = np.concatenate([replaced, new_ids])
    add_vecs = unit(rng, len(add_ids))
    final_ids = np.concatenate([ids[500:], add_ids])
    final_vecs = np.concatenate([xb[500:], add_vecs])
    return (add_vecs, add_ids, np.concatenate([removed, replaced])), (final_vecs, final_ids)


@pytest.mark.parametrize("factory", ["IVF32,Flat", "IVF32,SQ8"])
def test_delta_plus_tombstones_equals_a_full_rebuild(data, factory):
    xb, ids, xq = data
    base = shards.build(xb, ids, factory, shards=2, pool="serial")
    (add_vecs, add_ids, remove), (final_vecs, final_ids) = _changes(data)
    updated = shards.update(base, add_vecs, add_ids, remove)
    assert updated.ntotal == len(final_ids) and updated.delta.ntotal == len(add_ids)
    assert len(updated.tombstones) == len(remove)
    assert all(a is b for a, b in zip(updated.main, base.main))  # the main shards are untouched
    assert base.ntotal == N and base.delta.ntotal == 0  # and so is the index it came from
    assert np.array_equal(np.sort(updated.live_ids()), np.sort(final_ids))  # ids stable
    # the same quantizer filled with the final vectors: the same ids at any nprobe
    same_q = shards.fill(updated.trained, (final_vecs, final_ids))
    for nprobe in (2, 32):
        got = searched(updated, xq, nprobe)
        assert np.array_equal(got, searched(same_q, xq, nprobe))
        assert not np.isin(got, remove[:300]).any()  # removed ids never come back
    # a rebuild from scratch (its own quantizer, trained again), searched exhaustively
    rebuilt = shards.build(final_vecs, final_ids, factory, shards=3, pool="serial")
    exact = exact_ids(xq, final_vecs, final_ids)
    if factory.endswith("Flat"):
        assert np.array_equal(searched(updated, xq, 32), exact)
        assert np.array_equal(searched(rebuilt, xq, 32), exact)
    else:  # SQ8 codes trained on another sample differ slightly: the same recall against exact search
        r_updated, r_rebuilt = (
            ann.recall(searched(updated, xq, 32), exact),
            ann.recall(searched(rebuilt, xq, 32), exact),
        )
        print(r_updated, r_rebuilt)
        assert r_updated >= 0.9 and abs(r_updated - r_rebuilt) <= 0.02


def test_a_replaced_id_found_in_the_delta_is_not_masked_by_its_tombstone(data):
    xb, ids, _ = data
    base = shards.build(xb, ids, "IVF32,Flat", shards=2, pool="serial")
    target = int(ids[42])
    moved = -xb[42:43]  # its new vector: the opposite direction
    updated = shards.update(base, moved, np.array([target]), np.array([target]))
    updated.set_params({"nprobe": 32})
    assert updated.search(moved, 1)[1][0, 0] == target
    again = shards.update(updated, xb[42:43], np.array([target]), np.array([target]))  # replaced twice
    assert again.delta.ntotal == 1 and len(again.tombstones) == 1 and again.ntotal == N
    with pytest.raises(ValueError, match="already in the index"):
        shards.update(again, xb[:1], ids[1:2], np.zeros(0, np.int64))


def test_compaction_equals_a_rebuild_and_keeps_the_ids(data):
    xb, ids, xq = data
    base = shards.build(xb, ids, "IVF32,SQ8", shards=3, pool="serial")
    (add_vecs, add_ids, remove), (final_vecs, final_ids) = _changes(data)
    updated = shards.update(base, add_vecs, add_ids, remove)
    assert shards.needs_compaction(updated, fraction=0.1) and not shards.needs_compaction(base)
    compacted = shards.compact(updated)
    assert compacted.delta.ntotal == 0 and len(compacted.tombstones) == 0 and len(compacted.main) == 3
    assert compacted.ntotal == len(final_ids) == sum(s.ntotal for s in compacted.main)
    assert np.array_equal(np.sort(compacted.live_ids()), np.sort(final_ids))
    same_q = shards.fill(updated.trained, (final_vecs, final_ids))
    resharded = shards.compact(updated, shards=2)
    assert len(resharded.main) == 2 and resharded.ntotal == len(final_ids)
    for nprobe in (2, 8, 32):
        want = searched(same_q, xq, nprobe)
        assert np.array_equal(searched(compacted, xq, nprobe), want)
        assert np.array_equal(searched(updated, xq, nprobe), want)
        assert np.array_equal(searched(resharded, xq, nprobe), want)
    assert updated.delta.ntotal == len(add_ids)  # compaction worked on copies


def test_persisted_and_reopened(data, tmp_path):
    xb, ids, xq = data
    base = shards.build(xb, ids, "IVF32,SQ8", shards=2, pool="serial")
    (add_vecs, add_ids, remove), _ = _changes(data)
    updated = shards.update(base, add_vecs, add_ids, remove)
    g1, g2 = tmp_path / "g1", tmp_path / "g2"
    g1.mkdir(), g2.mkdir()
    names = shards.write(updated, g1)
    assert sorted(names) == sorted(p.name for p in g1.iterdir())
    back = shards.read(g1)
    assert back.ntotal == updated.ntotal and np.array_equal(back.tombstones, updated.tombstones)
    assert np.array_equal(searched(back, xq, 4), searched(updated, xq, 4))
    # a later update writes only its delta: the unchanged main shards are linked, not copied
    later = shards.update(back, xb[:0], ids[:0], ids[600:610])
    shards.write(later, g2)
    assert (g2 / "main-000.faiss").stat().st_ino == (g1 / "main-000.faiss").stat().st_ino
    compacted = shards.compact(later, writable=shards.reopen_writable(later))
    assert compacted.ntotal == updated.ntotal - 10
    assert np.array_equal(searched(compacted, xq, 4), searched(later, xq, 4))
    layout = json.loads((g1 / shards.LAYOUT).read_text())
    layout["main"][0]["vectors"] += 1
    (g1 / shards.LAYOUT).write_text(json.dumps(layout))
    with pytest.raises(ValueError, match="main-000.faiss: holds"):
        shards.read(g1)


def test_store_writes_reads_and_checks_a_sharded_generation(tmp_path):
    snap = make_snapshot(n=3000, d=16, seed=3)
    snap.meta = snap.meta.with_(faiss=FaissRecord(**ann.choose("sharded", 3000, 16)))
    gen = store.write(tmp_path, snap)
    assert (gen / "shards.json").exists() and not (gen / "index.faiss").exists()
    back = store.read(tmp_path)
    rec = back.meta.faiss
    assert rec.type == "sharded" and rec.factory == "IVF76,SQ8" and rec.recall_at_10 >= 0.95
    assert "main-000.faiss" in back.meta.files and rec.params["nprobe"] >= 1
    assert isinstance(back.faiss_index, shards.ShardedIndex) and back.faiss_index.nprobe == rec.params["nprobe"]
    v = back.search_vectors()
    got = ann.search(back.faiss_index, v[:100], 11)[1]
    truth = exact_ids(v[:100], v, back.ids, 11)
    assert ann.recall(ann.drop_self(got, back.ids[:100], 10), ann.drop_self(truth, back.ids[:100], 10)) >= 0.9
    from simsearch.verify import verify

    problems = [p for p in verify(tmp_path)[1] if p.severity == "error" and "models" not in p.where]
    assert not problems  # (this snapshot has no model file: only that is reported)
    (gen / "main-000.faiss").write_bytes(b"junk")
    with pytest.raises(IndexFormatError, match=r"main-000.faiss: unreadable FAISS index.*rebuild"):
        store.read(tmp_path)


# ---------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_local():
    import os
    from pathlib import Path

    import simsearch

    ray = pytest.importorskip("ray")
    # the workers import this test module (its part functions) and the simsearch the driver imported
    path = [str(Path(__file__).parent), str(Path(simsearch.__file__).parent.parent), os.environ.get("PYTHONPATH", "")]
    if ray.is_initialized():  # test_ray.py's session instance: this module needs workers that see its path
        ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=80 * 1024**2,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in path if p)}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def _generated_part(seed: int, start: int, stop: int):
    """A part that makes its own vectors where it runs (as a Ray task reading its files would)."""
    rng = np.random.default_rng(seed)
    x = unit(rng, stop - start)
    return [(x, np.arange(start, stop, dtype=np.int64))]


@pytest.mark.slow
def test_ray_tasks_fill_the_same_shards(ray_local, data):
    from functools import partial

    xb, _, xq = data
    trained = shards.train(xb, "IVF32,SQ8")
    parts = [partial(_generated_part, s, 1000 * s, 1000 * s + 1000) for s in range(4)]
    assert shards.ray_running()
    by_ray = shards.fill_parallel(trained, parts)  # auto: Ray is connected
    serial = shards.fill_parallel(trained, parts, pool="serial")
    assert [s.ntotal for s in by_ray] == [1000] * 4
    a, b = shards.ShardedIndex(trained, by_ray, shards.empty_like(trained)), shards.merge(serial)
    assert np.array_equal(searched(a, xq, 8), searched(b, xq, 8))


# ---------------------------------------------------------------- through the CLI and simsearch.Index


def test_sharded_index_through_the_cli_and_index(tmp_path):
    from click.testing import CliRunner

    import simsearch
    from simsearch.cli import cli

    def run(*args):
        res = CliRunner().invoke(cli, [str(a) for a in args], obj={})
        assert res.exit_code == 0, f"{res.stdout}\n{res.stderr}\n{res.exception!r}"
        return res

    root, idx = tmp_path / "images", tmp_path / "idx"
    write_corpus(root, per_class=30)
    run("index", root, "--index", idx, "--index-type", "sharded", "--shards", "2", *FAST_CLI)
    index = simsearch.Index.open(idx)
    fi = index._snap.faiss_index
    assert index.meta.faiss.type == "sharded" and isinstance(fi, shards.ShardedIndex) and len(fi.main) == 2
    assert index.meta.faiss.recall_at_10 >= 0.95
    ids_before = {e.path: e.id for e in index.entries()}

    def agrees_with_exact(index):
        """The exact ranking, up to swaps of neighbours whose exact scores are closer than the SQ8
        codes can tell apart: each component is stored to 1/255 of its range, so a score moves by at
        most Σ|q_i|·range_i/255 (0.91949 and 0.91934 came back swapped for one model, 0.6308 and
        0.6253 for another)."""
        v, all_ids = index.vectors(), index.ids()
        step = (v.max(0) - v.min(0)) / 255
        for row in (0, 17, len(all_ids) - 1):
            exact = dict(zip(all_ids.tolist(), (v @ v[row]).tolist()))
            got = [h.id for h in index.neighbors(int(all_ids[row]), k=5)]
            order = np.argsort(-(v @ v[row]), kind="stable")
            want = [int(i) for i in all_ids[order] if i != all_ids[row]][:5]
            assert len(set(got)) == 5 and int(all_ids[row]) not in got
            tol = float(np.abs(v[row]) @ step)
            assert tol < 0.05  # the bound is tight enough to mean something
            assert np.allclose([exact[i] for i in got], [exact[i] for i in want], atol=tol), (got, want, tol)

    index._snap.faiss_index.set_params({"nprobe": index._snap.faiss_index.nlist})
    agrees_with_exact(index)
    res = run("query", root / "disc" / "disc_003.png", "--index", idx, "-k", "3", "--json")
    assert len(res.stdout.strip().splitlines()) >= 1

    # an update: one added, one removed, one changed → delta + tombstones, main shards linked
    rng = np.random.default_rng(4)
    make_image("disc", rng).save(root / "disc" / "late.png")
    (root / "square" / "square_000.png").unlink()
    make_image("stripes", rng).save(root / "disc" / "disc_001.png")
    gen1 = index._snap.gen_dir
    run("index", root, "--index", idx)
    index = simsearch.Index.open(idx)
    fi = index._snap.faiss_index
    assert len(index) == 90 and fi.ntotal == 90
    # 3 changes in 90: the delta and tombstones (2 + 2) stay under the compaction threshold
    assert fi.delta.ntotal == 2 and len(fi.tombstones) == 2
    gen2 = index._snap.gen_dir
    assert (gen2 / "main-000.faiss").stat().st_ino == (gen1 / "main-000.faiss").stat().st_ino
    after = {e.path: e.id for e in index.entries()}
    assert all(after[p] == i for p, i in ids_before.items() if p in after)  # ids stable
    assert after["disc/disc_001.png"] == ids_before["disc/disc_001.png"]
    fi.set_params({"nprobe": fi.nlist})
    agrees_with_exact(index)

    # more changes: past 10% of the main shards, compaction folds them in
    for i in range(12):
        make_image("square", rng).save(root / "square" / f"more_{i}.png")
    run("index", root, "--index", idx)
    index = simsearch.Index.open(idx)
    fi = index._snap.faiss_index
    assert fi.delta.ntotal == 0 and len(fi.tombstones) == 0 and len(fi.main) == 2 and fi.ntotal == 102
    assert index.meta.faiss.recall_at_10 >= 0.95
    fi.set_params({"nprobe": fi.nlist})
    agrees_with_exact(index)
    run("verify", "--index", idx)


@pytest.mark.parametrize("index_type", ["sharded", "ivf"])
def test_index_remove_tombstones_or_drops_ids_without_rebuilding(tmp_path, index_type):
    """``Index.remove`` updates the FAISS index as ``simsearch index`` does: a sharded index gets
    tombstones (main shards linked, not rewritten), an IVF index drops the ids from a copy of itself
    (the trained quantizer is kept); both answer like exact search over the kept images."""
    from click.testing import CliRunner

    import simsearch
    from simsearch.cli import cli

    root, idx = tmp_path / "images", tmp_path / "idx"
    write_corpus(root, per_class=30)
    extra = ["--shards", "2"] if index_type == "sharded" else []
    res = CliRunner().invoke(
        cli, ["index", str(root), "--index", str(idx), "--index-type", index_type, *extra, *FAST_CLI], obj={}
    )
    assert res.exit_code == 0, f"{res.stdout}\n{res.stderr}\n{res.exception!r}"
    index = simsearch.Index.open(idx)
    gen1 = index._snap.gen_dir
    if index_type == "ivf":
        whole = faiss.read_index(str(gen1 / "index.faiss"))  # kept: the IVF view below points into it
        before = faiss.extract_index_ivf(whole)
        centroids = before.quantizer.reconstruct_n(0, before.nlist)
    gone = ["disc/disc_000.png", "square/square_003.png", "stripes/stripes_007.png"]
    gone_ids = {e.id for e in index.entries() if e.path in gone}
    assert index.remove(gone) == 3 and len(index) == 87
    fi = index._snap.faiss_index
    assert fi.ntotal == 87
    if index_type == "sharded":
        assert isinstance(fi, shards.ShardedIndex) and set(fi.tombstones.tolist()) == gone_ids
        assert fi.delta.ntotal == 0
        gen2 = index._snap.gen_dir
        assert (gen2 / "main-000.faiss").stat().st_ino == (gen1 / "main-000.faiss").stat().st_ino
        fi.set_params({"nprobe": fi.nlist})
    else:
        whole = faiss.read_index(str(index._snap.gen_dir / "index.faiss"))
        after = faiss.extract_index_ivf(whole)
        np.testing.assert_array_equal(after.quantizer.reconstruct_n(0, after.nlist), centroids)  # not retrained
        ann.apply_params(fi, {"nprobe": after.nlist})
    v, ids = index.vectors(), index.ids()
    assert not gone_ids & set(ids.tolist())
    for row in (0, 40, len(ids) - 1):
        got = [h.id for h in index.neighbors(int(ids[row]), k=5)]
        order = np.argsort(-(v @ v[row]), kind="stable")
        assert got == [int(i) for i in ids[order] if i != ids[row]][:5]
    assert index.meta.faiss.recall_at_10 is not None and index.meta.faiss.recall_at_10 >= 0.95


def test_auto_switches_a_growing_index_to_sharded_and_back_with_hysteresis(tmp_path, monkeypatch):
    """``--index-type auto`` (the default) turns an index sharded once it reaches
    ``AUTO_SHARDED_MIN`` images (thresholds scaled down here) and keeps it sharded until it falls
    below half of that."""
    import simsearch

    monkeypatch.setattr(ann, "AUTO_FLAT_MAX", 10)
    monkeypatch.setattr(ann, "AUTO_SHARDED_MIN", 80)
    root, idx = tmp_path / "images", tmp_path / "idx"
    write_corpus(root, per_class=20)  # 60 images: ivf
    from click.testing import CliRunner

    from simsearch.cli import cli

    def index_now() -> simsearch.Index:
        res = CliRunner().invoke(cli, ["index", str(root), "--index", str(idx), *FAST_CLI], obj={})
        assert res.exit_code == 0, f"{res.stdout}\n{res.stderr}\n{res.exception!r}"
        return simsearch.Index.open(idx)

    assert index_now().meta.faiss.type == "ivf"
    rng = np.random.default_rng(9)
    for i in range(25):  # 85 images: sharded
        make_image("disc", rng).save(root / "disc" / f"grown_{i}.png")
    index = index_now()
    assert index.meta.faiss.type == "sharded" and index.meta.faiss.requested == "auto"
    assert index.meta.faiss.recall_at_10 >= 0.95
    for i in range(25):  # back to 60: still at least half of 80, stays sharded (a delta + tombstones)
        (root / "disc" / f"grown_{i}.png").unlink()
    assert index_now().meta.faiss.type == "sharded"
    for p in [*sorted((root / "square").glob("*.png")), *sorted((root / "stripes").glob("*.png"))[:5]]:
        p.unlink()  # 35: below half, ivf again
    index = index_now()
    assert index.meta.faiss.type == "ivf" and len(index) == 35


def test_scale_benchmark_smoke_run(tmp_path):
    """A tiny run of scripts/bench/scale_shards.py prints its table (the real figures are in its report)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "bench" / "scale_shards.py"
    args = ["--sizes", "20000", "--queries", "100", "--nlist", "32", "--train-sample", "4000", "--chunk", "5000"]
    args += ["--clusters", "200", "--workers", "2", "--tmp", str(tmp_path), "--ignore-quiet"]
    res = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if line.startswith("| 20,000 "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "IVF32,SQ8" and cells[2] == "2"
    sharded, merged = (float(v) for v in cells[11].split(" / "))
    assert sharded == merged and 0.5 <= sharded <= 1  # served as shards or merged: the same results

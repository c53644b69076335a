"""simsearch.ann: which FAISS index, how it is built and tuned, and its recall against exact search.

The checks against exact search follow faiss's contrib tests: each index type on random unit
vectors, its results compared with brute-force (numpy) inner-product search.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from synth import make_snapshot

from simsearch import ann, store
from simsearch.constants import INDEX_TYPES
from simsearch.meta import FaissRecord


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq", "sharded"])
def test_index_types_build_tune_and_round_trip(tmp_path, kind):
    snap = make_snapshot(n=3000, d=16, seed=3)
    snap.meta = snap.meta.with_(faiss=FaissRecord(**ann.choose(kind, 3000, 16)))
    store.write(tmp_path, snap)
    back = store.read(tmp_path)
    spec = back.meta.faiss
    assert spec.type == kind and 0 <= spec.recall_at_10 <= 1
    if kind in ("flat", "ivf", "hnsw", "sharded"):
        assert spec.recall_at_10 >= 0.95  # tuned until it reaches the target
    q = back.search_vectors()[:50]
    _, got = back.faiss_index.search(q, 10)
    exact = back.ids[np.argsort(-(q @ back.search_vectors().T), axis=1, kind="stable")[:, :10]]
    measured = ann.recall(got, exact)
    assert measured >= (0.9 if kind != "ivfpq" else 0.3)


def test_auto_index_type_is_exact_for_small_corpora_ivf_above_and_sharded_for_millions():
    assert ann.choose("auto", ann.AUTO_FLAT_MAX - 1, 256)["type"] == "flat"
    big = ann.choose("auto", 70_000, 256)
    assert big["type"] == "ivf" and big["factory"] == "IVF1024,Flat"
    huge = ann.choose("auto", ann.AUTO_SHARDED_MIN, 256)
    assert huge["type"] == "sharded" and huge["factory"].endswith(",SQ8")
    assert ann.choose("auto", ann.AUTO_SHARDED_MIN - 1, 256)["type"] == "ivf"
    # hysteresis: a sharded index shrinking a little stays sharded; an IVF one growing to just under stays IVF
    assert ann.auto_type(ann.AUTO_SHARDED_MIN - 1, current="sharded") == "sharded"
    assert ann.auto_type(ann.AUTO_SHARDED_MIN // 2, current="sharded") == "sharded"
    assert ann.auto_type(ann.AUTO_SHARDED_MIN // 2 - 1, current="sharded") == "ivf"
    assert ann.auto_type(ann.AUTO_SHARDED_MIN - 1, current="ivf") == "ivf"
    assert ann.auto_type(ann.AUTO_FLAT_MAX - 1, current="sharded") == "flat"


# ------------------------------------------------------------------ against exact search

D, NB, NQ, K = 16, 3000, 2000, 10


def unit_vectors(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_knn(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product search: (scores, row numbers in ``xb``), best first."""
    scores = xq @ xb.T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


def intersection(got: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per query: the fraction of the true top-k found in the returned top-k (faiss's knn_intersection_measure,
    per row; written out here rather than taken from ann.recall, which is under test)."""
    return np.array([len(np.intersect1d(g, t)) / t.shape[0] for g, t in zip(got, truth)])


@pytest.fixture(scope="module")
def vectors():
    """NB indexed unit vectors with non-contiguous ids, and NQ new unit queries, in dimension D."""
    rng = np.random.default_rng(1234)
    xb = unit_vectors(rng, NB)
    ids = np.arange(NB, dtype=np.int64) * 7 + 11
    xq = unit_vectors(rng, NQ)
    return xb, ids, xq


@pytest.mark.parametrize(
    "kind",
    [kind for kind in INDEX_TYPES],
)
def test_every_index_type_against_exact_search(vectors, kind):
    xb, ids, xq = vectors
    spec = ann.choose(kind, NB, D)
    index = ann.build(xb, ids, spec)
    spec = ann.tune(index, xb, ids, spec)
    assert spec["type"] == (kind if kind != "auto" else "flat") and index.ntotal == NB

    ref_scores, ref_rows = exact_knn(xq, xb, K)
    scores, got = ann.search(index, xq, K)
    assert np.isin(got, ids).all()  # every query gets K neighbours, all of them indexed ids
    if spec["type"] == "flat":
        # exact search: the same neighbours in the same order, with the same scores (to float32 rounding)
        assert spec["recall_at_10"] == 1.0
        np.testing.assert_array_equal(got, ids[ref_rows])
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)
        return
    per_query = intersection(got, ids[ref_rows])
    # The tuner's figure is a mean over its sample of spec["recall_sample"] queries, this one over NQ new
    # queries: allow three standard errors of the difference of the two means, no more.
    assert spec["recall_sample"] > 0
    error = per_query.std() * np.sqrt(1 / spec["recall_sample"] + 1 / NQ)
    measured = per_query.mean()
    assert measured >= spec["recall_at_10"] - 3 * error, (
        f"{spec['factory']} {spec['params']}: recall@{K} of new queries {measured:.4f} "
        f"is below the {spec['recall_at_10']:.4f} the tuner recorded (± {error:.4f})"
    )


def test_ivf_tuning_reaches_the_target_when_searching_every_list_would():
    rng = np.random.default_rng(0)
    xb = unit_vectors(rng, 500, d=32)  # in 16 dimensions 8 of 12 lists happen to be enough
    ids = np.arange(500, dtype=np.int64)
    spec = ann.choose("ivf", 500, 32)
    index = ann.build(xb, ids, spec)
    nlist = index.nlist
    ann.apply_params(index, {"nprobe": nlist})  # every list: exact search
    _, rows = exact_knn(xb, xb, K)
    _, got = index.search(xb, K)
    assert intersection(got, ids[rows]).mean() == 1.0  # so the target is reachable
    spec = ann.tune(index, xb, ids, spec)
    assert spec["recall_at_10"] >= ann.TARGET_RECALL, (spec["factory"], spec["params"], spec["recall_at_10"])


# ------------------------------------------------------------------ the shared helpers


def test_ivf_cells_power_of_two_near_4_sqrt_n_and_39_points_per_cell():
    assert ann.ivf_cells(70_000) == 1024
    assert ann.ivf_cells(20_000) == 512
    assert ann.ivf_cells(1000) == 1000 // 39  # capped: k-means wants ≥ 39 points per cell
    assert ann.ivf_cells(0) == ann.ivf_cells(10) == 1
    assert ann.ivf_cells(10**10) == 65536


def test_drop_self_leaves_each_query_out_of_its_own_list():
    lists = np.array([[7, 3, 5, 1], [3, 7, 5, 1], [4, 2, -1, -1]])
    got = ann.drop_self(lists, np.array([7, 7, 9]), 2)
    assert got.tolist() == [[3, 5], [3, 5], [4, 2]]
    assert ann.drop_self(np.array([[1, -1]]), np.array([1]), 2).tolist() == [[-1, -1]]


def _ivf(n=2000, d=8, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64) * 2 + 1
    spec = ann.choose("ivf", n, d)
    return x, ids, ann.build(x, ids, spec)


def test_sweep_keeps_the_first_value_reaching_the_target_and_applies_it():
    x, ids, index = _ivf()
    q, self_ids, truth = ann.ground_truth(x, ids, 10, 200)
    assert q.shape == (200, 8) and truth.shape == (200, 10)
    assert not (truth == self_ids[:, None]).any()  # no query is its own neighbour
    v, r, seconds = ann.sweep(index, "nprobe", [1, 2, 4, 8, 16, 32], q, self_ids, truth, 0.9)
    assert r >= 0.9 and seconds > 0 and index.nprobe == v
    if v > 1:  # the cheaper setting before it fell short
        ann.apply_params(index, {"nprobe": v // 2})
        _, got = index.search(q, 11)
        assert ann.recall(ann.drop_self(got, self_ids, 10), truth) < 0.9
    # an unreachable target: the last value is kept (or, with min_gain, the one where gains stopped)
    assert ann.sweep(index, "nprobe", [1, 2], q, self_ids, truth, 1.01)[0] == 2 == index.nprobe
    assert ann.sweep(index, "nprobe", [], q, self_ids, truth, 0.9) is None


def test_postprocess_uses_only_public_names_of_ann():
    src = Path(ann.__file__).with_name("postprocess.py").read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and node.module == "ann":
            assert not [a.name for a in node.names if a.name.startswith("_")]


@pytest.mark.parametrize("factory", ["IVF64,Flat", "IVF64,PQ8x8"])
def test_add_reserved_gives_the_index_add_with_ids_gives(factory):
    """``ann.build`` fills an IVF index with its lists allocated once at their final size
    (``add_reserved``); the index is the same entry for entry as FAISS's own ``add_with_ids``."""
    import faiss

    rng = np.random.default_rng(5)
    x = rng.standard_normal((5000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(len(x), dtype=np.int64) * 3 + 11
    trained = faiss.index_factory(32, factory, faiss.METRIC_INNER_PRODUCT)
    trained.train(x)
    plain, reserved = faiss.clone_index(trained), faiss.clone_index(trained)
    plain.add_with_ids(x, ids)
    ann.add_reserved(reserved, x, ids)
    assert reserved.ntotal == plain.ntotal == len(x)
    a, b = faiss.extract_index_ivf(plain).invlists, faiss.extract_index_ivf(reserved).invlists
    for cell in range(64):
        n = a.list_size(cell)
        assert b.list_size(cell) == n
        assert np.array_equal(faiss.rev_swig_ptr(a.get_ids(cell), n), faiss.rev_swig_ptr(b.get_ids(cell), n))
        size = n * a.code_size
        assert np.array_equal(faiss.rev_swig_ptr(a.get_codes(cell), size), faiss.rev_swig_ptr(b.get_codes(cell), size))
    # a second add (an index that already holds vectors) is FAISS's own
    more = x[:100] * -1
    ann.add_reserved(reserved, more, ids[:100] + 1)
    plain.add_with_ids(more, ids[:100] + 1)
    for index in (plain, reserved):
        faiss.extract_index_ivf(index).nprobe = 8
    assert np.array_equal(plain.search(x[:50], 10)[1], reserved.search(x[:50], 10)[1])

"""FAISS index construction: which index type, its parameters, and its measured recall.

All indexes use inner product over centred, L2-normalised vectors (= cosine)
and carry the stable ids. Types:

- ``flat``   exact search ("IDMap2,Flat"); the default for small corpora.
- ``ivf``    inverted lists over k-means cells ("IVF{nlist},Flat"); ``nprobe`` is tuned at
             build time until recall@10 against exact search reaches the target. Supports
             incremental add/remove without retraining. ``auto`` picks it for large corpora.
- ``hnsw``   graph index ("IDMap2,HNSW32"); ``efSearch`` tuned the same way. Rebuilt on change.
- ``ivfpq``  inverted lists + product quantisation ("IVF{nlist},PQ{m}x8"): 16× smaller,
             lower recall (measured and reported, not hidden).
- ``sharded`` one IVF quantizer ("IVF{nlist},SQ8"), main shards filled in parallel and searched
             with a merged top-k, a delta shard and tombstones for updates (``shards.py``);
             ``nprobe`` tuned as for ``ivf``.

``auto`` = flat below ``AUTO_FLAT_MAX`` vectors, sharded from ``AUTO_SHARDED_MIN`` (an index that is
already sharded stays so down to half of it), else ivf.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .constants import AUTO_FLAT_MAX, AUTO_SHARDED_MIN
from .constants import INDEX_TYPES as TYPES

TARGET_RECALL = 0.95
RECALL_SAMPLE = 500


def choose(kind: str, n: int, d: int, current: str | None = None) -> dict:
    """Index spec {type, factory} for ``n`` vectors of dimension ``d``. ``current``: the type of the
    index being updated, if any (``auto`` keeps a sharded one sharded down to half the threshold)."""
    if kind not in TYPES:
        raise ValueError(f"unknown index type {kind!r} (choose from {', '.join(TYPES)})")
    if kind == "auto":
        kind = auto_type(n, current)
    if kind == "flat":
        return {"type": "flat", "factory": "IDMap2,Flat"}
    if kind == "hnsw":
        return {"type": "hnsw", "factory": "IDMap2,HNSW32"}
    nlist = ivf_cells(n)
    if kind == "sharded":
        from . import shards

        return {"type": "sharded", "factory": shards.factory(n, d, nlist)}
    if kind == "ivf":
        return {"type": "ivf", "factory": f"IVF{nlist},Flat"}
    m = next(m for m in (d // 4, d // 8, d // 2, d) if m >= 1 and d % m == 0)
    return {"type": "ivfpq", "factory": f"IVF{nlist},PQ{m}x8"}


def auto_type(n: int, current: str | None = None) -> str:
    """What ``auto`` means for ``n`` vectors (``current``: the type of the index being updated)."""
    if n < AUTO_FLAT_MAX:
        return "flat"
    if n >= AUTO_SHARDED_MIN or (current == "sharded" and n >= AUTO_SHARDED_MIN // 2):
        return "sharded"
    return "ivf"


def ivf_cells(n: int) -> int:
    """Number of inverted lists (k-means cells) for ``n`` vectors: the power of two nearest
    4·√n, in 16..65536, but no more than n / 39 (k-means wants ≥ 39 points per cell)."""
    nlist = int(min(65536, max(16, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))))
    return min(nlist, max(1, n // 39))


def build(vectors: np.ndarray, ids: np.ndarray, spec: dict, seed: int = 0):
    """Train (if needed) and fill a FAISS index; search parameters from ``spec['params']`` are applied.
    A ``sharded`` spec builds a ``shards.ShardedIndex`` (``spec['shards']`` main shards, default by size)."""
    import faiss

    if spec["type"] == "sharded":
        from . import shards

        sharded = shards.build(vectors, ids, spec["factory"], shards=spec.get("shards"), seed=seed)
        apply_params(sharded, spec.get("params", {}))
        return sharded
    d = vectors.shape[1]
    index = faiss.index_factory(d, spec["factory"], faiss.METRIC_INNER_PRODUCT)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = x if len(x) <= 256 * 1024 else x[np.sort(rng.choice(len(x), 256 * 1024, replace=False))]
        index.train(sample)
    if spec["type"] == "hnsw":
        # stub gap: index_factory and downcast_index are typed as the base Index (here: IndexIDMap2, IndexHNSW)
        faiss.downcast_index(index.index).hnsw.efConstruction = 64  # type: ignore[attr-defined]
    if len(x) and spec["type"] in ("ivf", "ivfpq"):
        add_reserved(index, x, np.ascontiguousarray(ids, dtype=np.int64))
    elif len(x):
        index.add_with_ids(x, np.ascontiguousarray(ids, dtype=np.int64))
    apply_params(index, spec.get("params", {}))
    return index


def add_reserved(index, x: np.ndarray, ids: np.ndarray) -> None:
    """``index.add_with_ids(x, ids)`` for an empty IVF index, with each inverted list allocated once at
    its final size: FAISS appends entries one at a time and a list's storage grows by doubling, so the
    lists of a whole gallery held ≈ 1.5× their bytes (measured on IVF-Flat, 300k and 600k 256-d vectors).
    The vectors are assigned to their cells first (as ``add_with_ids`` does), the lists reserved, then
    filled with that assignment: the same index, entry for entry."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists) if ivf.invlists is not None else None
    if ivf.ntotal or not isinstance(lists, faiss.ArrayInvertedLists):
        index.add_with_ids(x, ids)
        return
    _, assign = ivf.quantizer.search(x, 1)
    assign = np.ascontiguousarray(assign.ravel(), dtype=np.int64)
    counts = np.bincount(assign[assign >= 0], minlength=ivf.nlist)
    for cell in np.flatnonzero(counts).tolist():
        lists.resize(cell, int(counts[cell]))  # allocates exactly this many entries …
        lists.resize(cell, 0)  # … and keeps the capacity, empty
    ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(assign))


def search(index, q: np.ndarray, k: int):
    """FAISS search; a handful of queries runs on one thread (OpenMP start-up and, on a busy
    machine, waiting for a second core cost more than they save)."""
    import faiss

    if len(q) >= 32:
        return index.search(q, k)
    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(q, k)
    finally:
        faiss.omp_set_num_threads(n)


def apply_params(index, params: dict) -> None:
    if hasattr(index, "set_params"):  # shards.ShardedIndex
        index.set_params(params)
        return
    import faiss

    ps = faiss.ParameterSpace()
    for k, v in params.items():
        ps.set_index_parameter(index, k, v)


def tune(index, vectors: np.ndarray, ids: np.ndarray, spec: dict, target: float = TARGET_RECALL, seed: int = 0) -> dict:
    """Pick the cheapest search parameter reaching ``target`` recall@10 against exact search on a
    sample of the vectors; → spec with ``params``, ``recall_at_10`` and ``recall_sample``."""
    spec = dict(spec)
    k = min(10, len(vectors) - 1)
    spec.pop("shards", None)  # (not a record field)
    if k < 1 or spec["type"] == "flat":
        spec.update(params={}, recall_at_10=1.0, recall_sample=0)
        return spec
    if spec["type"] == "hnsw":
        return _tune_hnsw(index, vectors, ids, spec, k, target, seed)
    q, self_ids, truth = ground_truth(vectors, ids, k, RECALL_SAMPLE, seed)
    nlist = _nlist(index)
    values = [v for v in NPROBES if v < nlist] + [nlist]  # up to every list: exact search
    best = sweep(index, "nprobe", values, q, self_ids, truth, target, min_gain=0.002)
    assert best is not None  # values is never empty: it ends with nlist
    v, r, _ = best
    spec.update(params={"nprobe": v}, recall_at_10=round(float(r), 4), recall_sample=len(q))
    return spec


EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024)  # the efSearch values an HNSW sweep tries


def _tune_hnsw(index, vectors: np.ndarray, ids: np.ndarray, spec: dict, k: int, target: float, seed: int) -> dict:
    """HNSW's greedy search finds an indexed vector's neighbourhood more easily than a new
    query's, so its recall is measured on a graph built without the sample (held-out queries,
    truth among the rest); the efSearch chosen there is applied to ``index``. Small corpora
    (under two samples) are measured on ``index`` itself, queries left out of their own lists."""
    n = len(vectors)
    if n < 2 * RECALL_SAMPLE:
        q, self_ids, truth = ground_truth(vectors, ids, k, RECALL_SAMPLE, seed)
        probe_index = index
    else:
        held = np.zeros(n, bool)
        held[np.random.default_rng(seed).choice(n, RECALL_SAMPLE, replace=False)] = True
        rest_v, rest_ids = vectors[~held], np.asarray(ids)[~held]
        q, self_ids = np.ascontiguousarray(vectors[held], dtype=np.float32), np.asarray(ids)[held]
        import faiss

        rest = np.ascontiguousarray(rest_v, dtype=np.float32)
        truth = rest_ids[faiss.knn(q, rest, k, metric=faiss.METRIC_INNER_PRODUCT)[1]]
        probe_index = build(rest_v, rest_ids, spec)
    best = sweep(probe_index, "efSearch", EF_SEARCH, q, self_ids, truth, target, min_gain=0.002)
    assert best is not None  # EF_SEARCH is not empty
    v, r, _ = best
    apply_params(index, {"efSearch": v})
    spec.update(params={"efSearch": v}, recall_at_10=round(float(r), 4), recall_sample=len(q))
    return spec


def ground_truth(vectors: np.ndarray, ids: np.ndarray, k: int, sample: int, seed: int = 0):
    """Queries for measuring recall: ``sample`` of the ``vectors`` (at random, in their order);
    → (queries, their ids, their exact top-``k`` ids by inner product). Each query is an indexed
    vector: it is left out of its own list (:func:`drop_self`), so recall is that of a new query
    (a query finding itself would flatter the index)."""
    import faiss

    n = len(vectors)
    rows = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    q = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    # brute force over the vectors where they lie (an IndexFlatIP would hold a second copy of them)
    _, truth = faiss.knn(q, np.ascontiguousarray(vectors, dtype=np.float32), k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    ids = np.asarray(ids)
    return q, ids[rows], drop_self(np.where(truth >= 0, ids[np.clip(truth, 0, n - 1)], -1), ids[rows], k)


NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # the nprobe values a sweep tries


def sweep(
    index,
    name: str,
    values,
    queries: np.ndarray,
    self_ids: np.ndarray,
    truth: np.ndarray,
    target: float,
    min_gain: float | None = None,
) -> tuple | None:
    """Try search parameter ``name`` at each of ``values`` (cheapest first) until recall@k
    against ``truth`` (k = its width) reaches ``target``; → (value, recall, seconds per query)
    of the setting kept, which is left applied to ``index`` (None when ``values`` is empty).

    Each query is an indexed vector, id ``self_ids[i]``: it is left out of its own list, as
    :func:`drop_self` leaves it out of ``truth``. ``min_gain``: stop as soon as a step gains
    less than this below the target (e.g. PQ's quantisation error caps recall) and keep the
    cheaper setting; without it, the last value is kept when none reaches the target."""
    k = truth.shape[1]
    best = None
    for v in values:
        apply_params(index, {name: v})
        t = time.perf_counter()
        _, got = index.search(queries, k + 1)
        dt = (time.perf_counter() - t) / len(queries)
        r = recall(drop_self(got, self_ids, k), truth)
        if min_gain is not None and best is not None and r < best[1] + min_gain and best[1] < target:
            break  # no longer improving: keep the cheaper setting
        best = (v, r, dt)
        if r >= target:
            break
    if best is not None:
        apply_params(index, {name: best[0]})
    return best


def index_ids(index) -> np.ndarray:
    """The ids an index holds (IDMap, IVF or sharded), unordered."""
    import faiss

    if hasattr(index, "live_ids"):  # shards.ShardedIndex
        return index.live_ids()
    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    inv = ivf.invlists
    assert inv is not None  # an IVF index always owns inverted lists
    parts = [faiss.rev_swig_ptr(inv.get_ids(i), inv.list_size(i)).copy() for i in range(ivf.nlist) if inv.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _nlist(index) -> int:
    import faiss

    if hasattr(index, "set_params"):  # shards.ShardedIndex
        return int(index.nlist)
    try:
        return faiss.extract_index_ivf(index).nlist
    except RuntimeError:
        return 1 << 30


def drop_self(lists: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` ids of each row of ``lists`` other than that row's own id ``self_ids[i]``
    (a query that is an indexed vector finds itself; -1 pads a short row)."""
    out = np.full((len(lists), k), -1, dtype=np.int64)
    for i, (row, me) in enumerate(zip(lists, self_ids)):
        kept = row[row != me][:k]
        out[i, : len(kept)] = kept
    return out


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k ids found in the returned top-k."""
    hits = [len(set(g[g >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, (t >= 0).sum()) for g, t in zip(got, truth)]
    return float(np.mean(hits)) if hits else 1.0

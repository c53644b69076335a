"""Row 6: ANN on synthetic clustered vectors: FAISS as simsearch builds and tunes it, against numpy brute
force and scikit-learn."""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .common import Timing, faster, fmt, have_threadpoolctl, log, ms, row, single_thread, timeit
from .context import Ctx


def make_vectors(n: int, n_queries: int, d: int, n_clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised float32 vectors from a realistic-ish embedding distribution, and held-out queries.

    ``n_clusters`` Gaussian clusters grouped under √n_clusters super-clusters (classes → sub-classes);
    each cluster is elongated along its own random 12-d subspace (low intrinsic dimension, so the nearest
    neighbours are the genuinely closest points of the same cluster) plus weak isotropic noise; log-normal
    cluster sizes. Queries are fresh draws from the same clusters.
    """
    rng = np.random.default_rng(seed)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    r, iso = 12, 0.06
    n_super = max(4, round(math.sqrt(n_clusters)))
    supers = unit(rng.standard_normal((n_super, d)))
    centres = unit(supers[rng.integers(0, n_super, n_clusters)] + 0.7 * unit(rng.standard_normal((n_clusters, d))))
    weights = rng.lognormal(0.0, 1.0, n_clusters)
    weights /= weights.sum()
    spreads = rng.uniform(0.2, 0.4, n_clusters) / np.sqrt(np.sum(1.0 / np.arange(1, r + 1)))
    axes = np.sqrt(1.0 / np.arange(1, r + 1))  # decaying variance along the cluster's subspace

    bases = unit(rng.standard_normal((n_clusters, r, d))) * axes[None, :, None]

    def draw(m: int) -> np.ndarray:
        labels = rng.choice(n_clusters, m, p=weights)
        out = np.empty((m, d), np.float32)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=n_clusters)
        start = 0
        for c in np.flatnonzero(counts):
            rows_ = order[start : start + counts[c]]
            start += counts[c]
            z = rng.standard_normal((len(rows_), r)) * spreads[c]
            out[rows_] = centres[c] + z @ bases[c] + rng.standard_normal((len(rows_), d)) * (iso / math.sqrt(d))
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    return draw(n), draw(n_queries)


def numpy_search(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k by dot product (= cosine on normalised vectors), chunked to ≤ 128 MB of scores."""
    n = len(x)
    out = np.empty((len(q), k), np.int64)
    step = max(1, int(128e6 // (4 * n)))
    for s in range(0, len(q), step):
        scores = q[s : s + step] @ x.T
        top = np.argpartition(scores, n - k, axis=1)[:, n - k :]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[s : s + step] = np.take_along_axis(top, order, axis=1)
    return out


def faiss_effective_params(index) -> str:
    import faiss

    try:
        return f"nprobe={faiss.extract_index_ivf(index).nprobe}"
    except RuntimeError:
        pass
    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    if hasattr(inner, "hnsw"):
        return f"efSearch={inner.hnsw.efSearch}"
    return "exact"


def ball_tree_child(x_path: str, q_path: str, k: int, n_single: int, out_path: str) -> None:
    """In a separate (spawned) process so that a slow ball tree can be stopped at the time limit.

    scikit-learn's public ``BallTree`` with the leaf size and metric of ``NearestNeighbors(algorithm="ball_tree",
    metric="euclidean")``, which wraps this same tree; used directly because its ``get_arrays()`` gives the
    tree's memory (the estimator keeps the tree in a private attribute)."""
    from sklearn.neighbors import BallTree

    x, q = np.load(x_path, mmap_mode="r"), np.load(q_path)
    t0 = time.perf_counter()
    tree = BallTree(x, leaf_size=30, metric="euclidean")
    build = time.perf_counter() - t0
    ids, times = [], []
    for i in range(n_single):
        t0 = time.perf_counter()
        got = tree.query(q[i : i + 1], k=k, return_distance=False)
        times.append(time.perf_counter() - t0)
        ids.append(got[0].tolist())
    mem = sum(a.nbytes for a in tree.get_arrays() if isinstance(a, np.ndarray))
    Path(out_path).write_text(json.dumps({"build": build, "times": times, "ids": ids, "bytes": int(mem)}))


def row_ann(ctx: Ctx) -> list[dict]:
    import faiss

    from simsearch import ann
    from simsearch.render import human_bytes

    a = ctx.a
    n, nq, d, k = a.n_vectors, a.n_queries, 128, 10
    n_clusters = a.clusters or min(2000, max(8, n // 500))
    log(f"row 6: generating {n:,} + {nq} vectors ({n_clusters} clusters)")
    x, q = make_vectors(n, nq, d, n_clusters, seed=0)
    threads = faiss.omp_get_max_threads()
    data_note = f"{n:,} × {d}-d, {n_clusters} clusters, {nq} held-out queries"
    rows: list[dict] = []
    truth: np.ndarray | None = None
    ref_single: float | None = None  # numpy brute force, one query

    def add(
        name: str,
        build_s: float,
        nbytes: int | None,
        single: Timing,
        batch: Timing | None,
        got: np.ndarray,
        q_rows: int,
        extra: str = "",
    ) -> None:
        nonlocal ref_single
        rec = ann.recall(got, truth[:q_rows])
        if ref_single is None:
            ref_single = single.median
        per_query = f"batch of {nq}: {fmt(batch.median / nq * 1e3)} ms/query ({threads} threads)" if batch else ""
        parts = [
            f"build {fmt(build_s)} s",
            f"size {human_bytes(nbytes)}" if nbytes is not None else "size n/a",
            f"p99 {ms(single.p99)} (n={single.n}, 1 thread)",
            per_query or "no batch run",
            f"recall@10 {rec:.3f}" + ("" if q_rows == nq else f" on {q_rows} queries"),
        ]
        rows.append(
            row(
                "6",
                name,
                single.median * 1e3,
                "ms p50 / query",
                "numpy brute force" if rows else "",
                faster(single.median, ref_single) if rows else None,
                "; ".join(parts) + (f"; {extra}" if extra else ""),
            )
        )

    def measure(search: Callable[[np.ndarray], np.ndarray], n_single: int, batch_reps: int):
        search(q[:1])  # warm-up
        with single_thread():
            single = timeit(lambda i: search(q[i % nq : i % nq + 1]), n_single)
        got = []
        batch = timeit(lambda i: got.append(search(q)), batch_reps)
        return single, batch, got[0]

    # exact references first: numpy brute force (ratio base) and FAISS flat (the ground truth)
    log(f"row 6: numpy brute force ({a.slow_single} single queries, {a.reps} batch reps)")
    exact = numpy_search(x, q, k)
    truth = exact
    single, batch, got = measure(lambda qq: numpy_search(x, qq, k), a.slow_single, a.reps)
    unlimited = "" if have_threadpoolctl() else "; BLAS threads NOT limited for single queries (no threadpoolctl)"
    add("numpy brute force (dot product + argpartition)", 0.0, x.nbytes, single, batch, got, nq, data_note + unlimited)

    for kind in ("flat", "ivf", "hnsw", "ivfpq"):
        if kind not in a.ann_types:
            why = " (the --quick default: PQ training takes minutes)" if kind == "ivfpq" and a.quick else ""
            rows.append(
                row(
                    "6",
                    f"simsearch {kind}",
                    None,
                    "ms p50 / query",
                    notes=f"skipped: not in --ann-types {','.join(sorted(a.ann_types))}{why}",
                )
            )
            continue
        spec = ann.choose(kind, n, d)
        is_auto = ann.choose("auto", n, d)["factory"] == spec["factory"]
        log(f"row 6: {kind} {spec['factory']}: build + tune")
        t0 = time.perf_counter()
        index = ann.build(x, np.arange(n, dtype=np.int64), spec)
        spec = ann.tune(index, x, np.arange(n, dtype=np.int64), spec)
        build_s = time.perf_counter() - t0
        nbytes = len(faiss.serialize_index(index))
        n_single = a.slow_single if kind == "flat" else a.single
        log(f"row 6: {kind}: {n_single} single queries, {a.reps} batch reps")
        single, batch, got = measure(lambda qq, index=index: index.search(qq, k)[1], n_single, a.reps)
        if kind == "flat":
            truth = got  # FAISS exact search is the reference for recall
            agree = ann.recall(exact, truth)
            m = min(200, nq, n)
            scores = index.search(q[:m], k)[0]
            rand = float(np.mean(np.sum(x[:m] * q[:m], axis=1)))
            extra = (
                f"ground truth; numpy agrees {agree:.4f}; cos top-1 {scores[:, 0].mean():.2f}, "
                f"top-10 {scores[:, -1].mean():.2f}, random pair {rand:.2f}"
            )
        else:
            extra = (
                f"tuned {spec.get('params')} → recall@10 {spec.get('recall_at_10')} on "
                f"{spec.get('recall_sample')} indexed vectors; in effect: {faiss_effective_params(index)}"
            )
        label = "FAISS flat, exact" if kind == "flat" else f"simsearch {kind}"
        auto = ", = auto" if is_auto else ""
        add(f"{label} ({spec['factory']}{auto})", build_s, nbytes, single, batch, got, nq, extra)
        del index
        gc.collect()

    try:
        from sklearn.neighbors import NearestNeighbors
    except ImportError:
        rows.append(
            row(
                "6",
                "scikit-learn NearestNeighbors",
                None,
                "",
                notes="skipped: scikit-learn not installed (pip install scikit-learn)",
            )
        )
        return rows
    log(f"row 6: scikit-learn brute cosine ({a.slow_single} single queries, {a.reps} batch reps)")
    t0 = time.perf_counter()
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine").fit(x)
    build_s = time.perf_counter() - t0
    single, batch, got = measure(lambda qq, nn=nn: nn.kneighbors(qq, return_distance=False), a.slow_single, a.reps)
    add(
        "scikit-learn NearestNeighbors(brute, cosine)",
        build_s,
        None,
        single,
        batch,
        got,
        nq,
        "holds a reference to the array",
    )
    del nn
    rows.append(ball_tree(ctx, x, q, k, add))
    return [r for r in rows if r is not None]


def ball_tree(ctx: Ctx, x: np.ndarray, q: np.ndarray, k: int, add) -> dict | None:
    """sklearn ball tree (euclidean on the normalised vectors = same ranking as cosine), time-limited."""
    import multiprocessing

    a = ctx.a
    n_single = a.slow_single
    name = "scikit-learn BallTree (euclidean, leaf size 30: what NearestNeighbors(ball_tree) builds)"
    x_path, q_path, out_path = ctx.tmp / "x.npy", ctx.tmp / "q.npy", ctx.tmp / "ball_tree.json"
    np.save(x_path, x)
    np.save(q_path, q)
    limit = a.ball_tree_timeout
    log(f"row 6: scikit-learn ball tree in a child process ({n_single} single queries, limit {limit:g} s)")
    proc = multiprocessing.get_context("spawn").Process(
        target=ball_tree_child, args=(str(x_path), str(q_path), k, n_single, str(out_path))
    )
    proc.start()
    proc.join(limit)
    if proc.is_alive():
        proc.terminate()
        proc.join(10)
        return row(
            "6",
            name,
            None,
            "ms p50 / query",
            notes=f"skipped: build + {n_single} queries did not finish within {limit:g} s (--ball-tree-timeout)",
        )
    if proc.exitcode != 0 or not out_path.exists():
        return row("6", name, None, "", notes=f"failed: child exited with {proc.exitcode}")
    res = json.loads(out_path.read_text())
    ts = np.asarray(res["times"])
    single = Timing(float(np.median(ts)), float(np.percentile(ts, 99)), len(ts))
    for p in (x_path, q_path):
        p.unlink(missing_ok=True)
    add(
        name,
        res["build"],
        res["bytes"],
        single,
        None,
        np.asarray(res["ids"]),
        n_single,
        "single queries only (separate process, 1 thread)",
    )
    return None

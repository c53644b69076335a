#!/usr/bin/env python3
"""Sharded-index scale benchmark (issue #12, part 5): build and query ``simsearch.shards`` at 1M and
10M vectors, against exact search.

The vectors are SYNTHETIC, not image embeddings: 128-d, a seeded Gaussian mixture of
``--clusters`` (10,000) equally likely clusters whose unit centres are grouped under 100
super-clusters (centre = super-cluster direction + 0.7 × a random unit direction, normalised);
each point is its centre plus a Gaussian displacement of norm ≈ ``--spread`` (1.0) in one of
1000 random 16-d subspaces plus isotropic noise of norm ≈ ``--noise`` (0.05), then L2-normalised
(cosine = inner product). A low intrinsic dimension per cluster is what real embeddings look like;
a fully isotropic mixture would be harder (and SQ8's error would cost more recall there). At 200k
vectors this needs nprobe ≈ 16 of 1024 cells for recall@10 ≥ 0.95 with exact codes.
Vectors are generated in chunks of ``--chunk`` rows, each chunk from its own seeded
generator (``[seed, chunk number]``), so any worker can make any chunk and nothing holds more
than one chunk at a time; the queries are fresh draws (not indexed).

Per size, in a subprocess of its own (so peak RSS is that size's):

1. pass 1 over the chunks: the uniform training sample (``shards.train_rows``) and the exact
   top-10 of every query (ground truth, a running merge chunk by chunk);
2. train the quantizer on the sample; fill the shards in parallel (``shards.fill_parallel``; each
   part regenerates its own chunks, as a worker reading its own files would), served as shards;
3. nprobe tuned on the first half of the queries (cheapest reaching recall@10 ≥ ``--target``),
   recall@10 reported on the other half (held out); latency of single queries (one thread, as
   ``ann.search`` runs them) and of one batch of all queries;
4. merge the shards into one index (``merge_from``) and measure the same again;
5. memory: bytes of the written index files, and peak RSS of the process.

Nothing asserts on a timing. Do not run it while /tmp/QUIET exists (someone is timing). On the
2-core development machine (shared, load ≈ 8) 1M took ~4 min and 10M ~14 min (7 of them
for the exact ground truth), peak RSS 3.5 GiB at 10M.

    python scripts/bench/scale_shards.py                          # 1M and 10M, SQ8
    python scripts/bench/scale_shards.py --sizes 200000 --codecs Flat,SQ8,PQ32   # codec comparison
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

D, SUB_DIM = 128, 16
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- synthetic vectors


BASES = 1000  # distinct subspaces (cluster c uses basis c mod BASES): bounded memory for many clusters
SUPER = 100  # super-clusters: the cluster centres are grouped (classes → sub-classes)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@functools.lru_cache(maxsize=4)
def mixture(clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(centres (C, D) unit, bases (BASES, SUB_DIM, D) with N(0, 1/D) entries): the fixed mixture.
    Each centre is its super-cluster's direction plus 0.7 × a random unit direction, normalised."""
    rng = np.random.default_rng([seed, 1 << 30])
    supers = unit(rng.standard_normal((SUPER, D)))
    centres = unit(supers[rng.integers(0, SUPER, clusters)] + 0.7 * unit(rng.standard_normal((clusters, D))))
    bases = rng.standard_normal((min(clusters, BASES), SUB_DIM, D)) / math.sqrt(D)
    return centres.astype(np.float32), bases.astype(np.float32)


def draw(rng: np.random.Generator, m: int, clusters: int, spread: float, noise: float, seed: int) -> np.ndarray:
    centres, bases = mixture(clusters, seed)
    labels = rng.integers(0, clusters, m)
    z = rng.standard_normal((m, SUB_DIM), dtype=np.float32) * np.float32(spread / math.sqrt(SUB_DIM))
    x = centres[labels] + rng.standard_normal((m, D), dtype=np.float32) * np.float32(noise / math.sqrt(D))
    basis = labels % len(bases)
    order = np.argsort(basis, kind="stable")
    bounds = np.searchsorted(basis[order], np.arange(len(bases) + 1))
    for b in range(len(bases)):  # each cluster's displacement in its own subspace
        rows = order[bounds[b] : bounds[b + 1]]
        if len(rows):
            x[rows] += z[rows] @ bases[b]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def chunk(i: int, n: int, size: int, clusters: int, spread: float, noise: float, seed: int):
    """Chunk ``i`` of ``n`` vectors: (vectors, ids = global row numbers)."""
    start, stop = i * size, min(n, (i + 1) * size)
    x = draw(np.random.default_rng([seed, i]), stop - start, clusters, spread, noise, seed)
    return x, np.arange(start, stop, dtype=np.int64)


def chunks(first: int, last: int, **kw):
    """A part for ``shards.fill_parallel``: chunks ``first`` .. ``last - 1``, generated where it runs."""
    for i in range(first, last):
        yield chunk(i, **kw)


def queries(m: int, clusters: int, spread: float, noise: float, seed: int) -> np.ndarray:
    return draw(np.random.default_rng([seed, 1 << 31]), m, clusters, spread, noise, seed)


# ---------------------------------------------------------------- measuring


def topk_merge(best_s, best_i, s, i, k):
    s, i = np.concatenate([best_s, s], 1), np.concatenate([best_i, i], 1)
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return np.take_along_axis(s, part, 1), np.take_along_axis(i, part, 1)


def recall_at(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(g.tolist()) & set(t.tolist())) / len(t) for g, t in zip(got, truth)]))


def search(index, q, k, nprobe):
    import faiss

    from simsearch import shards

    if isinstance(index, shards.ShardedIndex):
        index.set_params({"nprobe": nprobe})
        return index.search(q, k)
    p = faiss.SearchParametersIVF()
    p.nprobe = nprobe
    return index.search(q, k, params=p)


def latency(index, q, nprobe, singles: int = 200) -> dict:
    """Single queries on one thread (p50/p99 ms) and one batch of all ``q`` (ms per batch, per query)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        search(index, q[:5], 10, nprobe)  # warm up
        times = []
        for j in range(min(singles, len(q))):
            t = time.perf_counter()
            search(index, q[j : j + 1], 10, nprobe)
            times.append(time.perf_counter() - t)
    finally:
        faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    search(index, q, 10, nprobe)
    batch = time.perf_counter() - t
    return {
        "single_p50_ms": round(1e3 * float(np.percentile(times, 50)), 3),
        "single_p99_ms": round(1e3 * float(np.percentile(times, 99)), 3),
        "batch_ms": round(1e3 * batch, 1),
        "batch_per_query_ms": round(1e3 * batch / len(q), 3),
        "batch_size": len(q),
    }


def tune(index, q_tune, truth_tune, target: float, nlist: int) -> tuple[int, list]:
    """Cheapest nprobe reaching ``target`` on the tuning queries; → (nprobe, the sweep)."""
    sweep = []
    for nprobe in [v for v in NPROBES if v < nlist] + [nlist]:
        _, got = search(index, q_tune, 10, nprobe)
        sweep.append((nprobe, round(recall_at(got, truth_tune), 4)))
        if sweep[-1][1] >= target:
            break
    return sweep[-1][0], sweep


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- one size


def one(args) -> dict:
    import faiss

    from simsearch import ann, shards

    n, gen = args.n, dict(clusters=args.clusters, spread=args.spread, noise=args.noise, seed=args.seed)
    nlist = args.nlist or min(ann.ivf_cells(n), 4096)
    factory = shards.factory(n, D, nlist, args.codec)
    n_chunks = -(-n // args.chunk)
    n_shards = args.shards or max(args.workers, shards.shard_count(n))
    out = {"n": n, "d": D, "factory": factory, "shards": n_shards, "workers": args.workers, "pool": args.pool}
    out["cpus"] = os.cpu_count()

    # 1. one pass: uniform training sample and exact ground truth
    q = queries(args.queries, **gen)
    k = 10
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    rows = shards.train_rows(n, nlist, args.train_sample, seed=args.seed)
    sample = np.empty((len(rows), D), np.float32)
    t0, t_gen = time.perf_counter(), 0.0
    for i in range(n_chunks):
        tg = time.perf_counter()
        x, ids = chunk(i, n=n, size=args.chunk, **gen)
        t_gen += time.perf_counter() - tg
        lo, hi = np.searchsorted(rows, [ids[0], ids[-1] + 1])
        sample[lo:hi] = x[rows[lo:hi] - ids[0]]
        s, rows_k = faiss.knn(q, x, k, faiss.METRIC_INNER_PRODUCT)  # exact, this chunk
        best_s, best_i = topk_merge(best_s, best_i, s, ids[rows_k], k)
        if i % 10 == 9:
            log(f"  pass 1: {ids[-1] + 1:,} of {n:,}")
    truth = np.take_along_axis(best_i, np.argsort(-best_s, axis=1), 1)
    out["generate_s"] = round(t_gen, 1)
    out["ground_truth_s"] = round(time.perf_counter() - t0 - t_gen, 1)
    log(f"pass 1: generated in {t_gen:.0f}s, ground truth in {out['ground_truth_s']:.0f}s")

    # 2. train, fill
    t = time.perf_counter()
    trained = shards.train(sample, factory, seed=args.seed)
    out["train_s"] = round(time.perf_counter() - t, 1)
    out["train_sample"] = len(sample)
    del sample
    log(f"trained {factory} on {len(rows):,} sampled vectors in {out['train_s']}s")
    bounds = np.linspace(0, n_chunks, n_shards + 1).round().astype(int)
    parts = [functools.partial(chunks, int(a), int(b), n=n, size=args.chunk, **gen) for a, b in zip(bounds, bounds[1:])]
    t = time.perf_counter()
    main = shards.fill_parallel(trained, parts, workers=args.workers, pool=args.pool)
    out["fill_s"] = round(time.perf_counter() - t, 1)
    # the fill regenerated the vectors: that much of its time is generation, not adding (spread over the workers)
    add_s = max(out["fill_s"] - t_gen / max(1, min(args.workers, n_shards)), 1e-9)
    out["add_vectors_per_s"] = round(n / add_s)
    out["add_vectors_per_s_per_core"] = round(n / add_s / max(1, min(args.workers, n_shards, os.cpu_count() or 1)))
    log(f"filled {n_shards} shards in {out['fill_s']}s")
    index = shards.ShardedIndex(trained, main, shards.empty_like(trained))
    assert index.ntotal == n

    # 3. served as shards
    half = len(q) // 2
    nprobe, sweep = tune(index, q[:half], truth[:half], args.target, nlist)
    out["nprobe"], out["sweep"] = nprobe, sweep
    _, got = search(index, q[half:], 10, nprobe)
    out["recall_at_10_sharded"] = round(recall_at(got, truth[half:]), 4)
    out["recall_queries"] = len(q) - half
    out["latency_sharded"] = latency(index, q[half:], nprobe)
    log(f"sharded: nprobe {nprobe}, recall@10 {out['recall_at_10_sharded']}, {out['latency_sharded']}")

    # 5. memory (on disk = in RAM to within the FAISS headers)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        names = shards.write(index, Path(tmp))
        out["index_bytes"] = sum((Path(tmp) / f).stat().st_size for f in names)
    out["bytes_per_vector"] = round(out["index_bytes"] / n, 1)
    out["rss_after_build"] = rss()

    # 4. merged
    t = time.perf_counter()
    merged = shards.merge(main)
    out["merge_s"] = round(time.perf_counter() - t, 1)
    _, got = search(merged, q[half:], 10, nprobe)
    out["recall_at_10_merged"] = round(recall_at(got, truth[half:]), 4)
    out["latency_merged"] = latency(merged, q[half:], nprobe)
    log(f"merged in {out['merge_s']}s: recall@10 {out['recall_at_10_merged']}, {out['latency_merged']}")
    out["peak_rss"] = peak_rss()
    out["faiss"] = faiss.__version__
    return out


# ---------------------------------------------------------------- report


def gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def table(results: list[dict], args) -> str:
    lines = [
        f"Sharded index on synthetic 128-d vectors ({args.clusters}-cluster Gaussian mixture under {SUPER} "
        f"super-clusters, 16-d subspaces "
        f"spread {args.spread}, noise {args.noise}, seed {args.seed}); {args.queries} fresh queries, nprobe tuned "
        f"on half to recall@10 ≥ {args.target}, recall reported on the other half against exact search; "
        f"{results[0]['cpus'] if results else '?'} CPUs, faiss {results[0].get('faiss', '?') if results else '?'}.",
        "",
        "| N | factory | shards | train | fill (workers) | merge | vec/s/core added | index size | B/vector "
        "| peak RSS | nprobe | recall@10 sharded / merged | single query p50 / p99 (sharded) | same (merged) "
        "| batch ms/query (sharded / merged) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ls, lm = r["latency_sharded"], r["latency_merged"]
        lines.append(
            f"| {r['n']:,} | {r['factory']} | {r['shards']} | {r['train_s']} s on {r['train_sample']:,} "
            f"| {r['fill_s']} s ({r['workers']} {r['pool']}) | {r['merge_s']} s | {r['add_vectors_per_s_per_core']:,} "
            f"| {gib(r['index_bytes'])} | {r['bytes_per_vector']} | {gib(r['peak_rss'])} | {r['nprobe']} "
            f"| {r['recall_at_10_sharded']} / {r['recall_at_10_merged']} "
            f"| {ls['single_p50_ms']} / {ls['single_p99_ms']} ms | {lm['single_p50_ms']} / {lm['single_p99_ms']} ms "
            f"| {ls['batch_per_query_ms']} / {lm['batch_per_query_ms']} |"
        )
    lines.append("")
    for r in results:
        lines.append(
            f"- N={r['n']:,}: nprobe sweep (recall@10 on the tuning half) {r['sweep']}; generating the vectors took "
            f"{r['generate_s']} s (single thread; the fill regenerates them, its time includes that), "
            f"exact ground truth {r['ground_truth_s']} s"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000", help="comma-separated vector counts")
    ap.add_argument("--codecs", default="SQ8", help="comma-separated FAISS codecs (SQ8, Flat, PQ32 …)")
    ap.add_argument("--queries", type=int, default=1000, help="fresh queries: half tune nprobe, half measure")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--nlist", type=int, default=0, help="IVF cells (default: ann.ivf_cells(N), at most 4096)")
    ap.add_argument("--shards", type=int, default=0, help="main shards (default: one per 1M, at least --workers)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--pool", default="thread", choices=["thread", "serial", "ray"])
    ap.add_argument("--train-sample", type=int, default=256 * 1024)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--clusters", type=int, default=10_000)
    ap.add_argument("--spread", type=float, default=1.0)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="where the index is written to measure its size")
    ap.add_argument("--out", help="also write the table here (and the raw results as .json beside it)")
    ap.add_argument("--ignore-quiet", action="store_true", help="run even if /tmp/QUIET exists (tiny smoke runs)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one size in this process
    ap.add_argument("--codec", default="SQ8", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        args.n = args.one
        if args.pool == "ray":
            import ray

            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        print(json.dumps(one(args)))
        return 0
    if os.path.exists("/tmp/QUIET") and not args.ignore_quiet:
        print("/tmp/QUIET exists: someone is timing a benchmark; run this later", file=sys.stderr)
        return 1
    results = []
    given = list(argv if argv is not None else sys.argv[1:])
    passthrough = []  # the options, less --out (and its value)
    while given:
        a = given.pop(0)
        if a == "--out":
            given.pop(0)
        elif not a.startswith("--out="):
            passthrough.append(a)
    for codec in args.codecs.split(","):
        for n in [int(s) for s in args.sizes.split(",")]:
            log(f"N={n:,} {codec}")
            cmd = [sys.executable, __file__, *passthrough, "--one", str(n), "--codec", codec]
            res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if res.returncode != 0:
                print(f"N={n} {codec}: failed (exit {res.returncode})", file=sys.stderr)
                return 1
            results.append(json.loads(res.stdout.strip().splitlines()[-1]))
    report = table(results, args)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

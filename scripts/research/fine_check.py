#!/usr/bin/env python3
"""The fine check's settings (``simsearch.finecheck``), on DEVELOPMENT data only: how many first hits
are compared with a near-copy query by pixels (``SHORTLIST``) and the pixel similarity at which a hit
counts as a copy (each index calibrates its own: ``Index.pixel_threshold``; fixed values beside it).

It scores an index that ``scripts/bench_neardup.py --half dev --index DIR`` built (the half's files are
linked beside it in ``DIR-corpus``) with the same copies the bench makes (same seed), querying through
``simsearch.Index.query_batch`` (the first 20 hits by score) and re-ranking them with
``finecheck.rerank`` at each setting (the product's own code; ``SHORTLIST`` is set for the run).
R@1 / R@5: the original (or a file with the same decoded picture) first / in the top 5; R@20 without
the check bounds what any re-ranking of 20 hits can recover.

    python scripts/bench_neardup.py --half dev --epochs 15 --budget 0 --copies 300 --index /tmp/nd-dev
    python scripts/research/fine_check.py --index /tmp/nd-dev
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import simsearch
from simsearch import finecheck

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # scripts/: the bench's copies and identities
import bench_neardup  # noqa: E402


def recall(index, queries, groups, k: int, check: bool) -> tuple[float, float, float]:
    """(R@1, R@5, R@k) of ``queries`` [(original's path, copy)] through ``Index.query_batch``."""
    hits = []
    for s in range(0, len(queries), 256):
        hits += index.query_batch([img for _, img in queries[s : s + 256]], k=k, pixel_check=check)
    return scores(queries, hits, groups)


def scores(queries, hits, groups) -> tuple[float, float, float]:
    same = [[groups[h.path] == groups[rel] for h in hs] for (rel, _), hs in zip(queries, hits)]
    return (
        float(np.mean([bool(m) and m[0] for m in same])),
        float(np.mean([any(m[:5]) for m in same])),
        float(np.mean([any(m) for m in same])),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True, help="an index bench_neardup.py --half dev --index kept")
    ap.add_argument("--copies", type=int, default=300)
    ap.add_argument("--strengths", default="light,default,strong")
    ap.add_argument("--seed", type=int, default=1, help="the bench's copy seed (its default)")
    ap.add_argument("--shortlists", default="5,10,20")
    ap.add_argument("--thresholds", default="0.8,0.9,0.95")
    a = ap.parse_args(argv)
    root = a.index.with_name(a.index.name + "-corpus")
    index = simsearch.Index.open(a.index)
    if index.root.resolve() != root.resolve():
        print(f"error: {a.index} indexes {index.root}, not {root} (build it with bench_neardup.py --index)")
        return 1
    rels = index.paths()
    groups = bench_neardup.identity_groups(root, rels)
    strengths = [s for s in a.strengths.split(",") if s]
    queries = {s: bench_neardup.make_queries(root, rels, a.copies, s, a.seed) for s in strengths}
    print(f"command: python scripts/research/fine_check.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(
        f"{a.index}: {len(rels)} images; {a.copies} copies per strength; the index's calibrated threshold: "
        f"{'none' if index.pixel_threshold is None else f'{index.pixel_threshold:.4f}'}\n"
    )
    print("| shortlist | pixel threshold | " + " | ".join(f"{s} R@1 | {s} R@5" for s in strengths) + " |")
    print("|---|---|" + "---:|---:|" * len(strengths))
    unchecked = {s: [] for s in strengths}  # each copy's first 20 hits by score alone
    for s in strengths:
        for i in range(0, len(queries[s]), 256):
            unchecked[s] += index.query_batch([img for _, img in queries[s][i : i + 256]], k=20, pixel_check=False)
    row = {s: scores(queries[s], unchecked[s], groups) for s in strengths}
    print("| — (no check) | — | " + " | ".join(f"{row[s][0]:.3f} | {row[s][1]:.3f}" for s in strengths) + " |")
    grids = {s: [finecheck.query_grids(img) for _, img in queries[s]] for s in strengths}
    cache = finecheck.GridCache(size=100_000)  # every candidate read once for the whole sweep
    thresholds = [float(x) for x in a.thresholds.split(",")]
    if index.pixel_threshold is not None:
        thresholds.append(index.pixel_threshold)
    saved = finecheck.SHORTLIST
    try:
        for n in [int(x) for x in a.shortlists.split(",")]:
            finecheck.SHORTLIST = n
            for thr in thresholds:
                cells = []
                for s in strengths:
                    ranked = [finecheck.rerank(h, g, cache, thr) for h, g in zip(unchecked[s], grids[s])]
                    cells.append(scores(queries[s], [h[:5] for h in ranked], groups)[:2])
                cal = " (the index's)" if thr == index.pixel_threshold and thr not in thresholds[:-1] else ""
                print(f"| {n} | {thr:.4f}{cal} | " + " | ".join(f"{r1:.3f} | {r5:.3f}" for r1, r5 in cells) + " |")
    finally:
        finecheck.SHORTLIST = saved
    print(
        "\nwithout the check, R@20 (the most a check of 20 hits can reach): "
        + ", ".join(f"{s} {row[s][2]:.3f}" for s in strengths)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

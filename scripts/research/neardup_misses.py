#!/usr/bin/env python3
"""Why a near-copy query misses its original, on DEVELOPMENT data: each miss of ``bench_neardup`` at one
strength, sorted into what kind of miss it is.

It scores an index that ``scripts/bench_neardup.py --half dev --index DIR`` built (the half's files are
linked beside it in ``DIR-corpus``) with the same copies the bench makes (same seed), through
``simsearch.Index.query_batch`` with the pixel check as the product runs it, and compares pictures with
``simsearch.pixelmatch.similarity`` (the check's own measure). A miss is:

- ``variant``: the first hit is another file whose pixels match the original's as well as a copy's do
  (at the index's pixel threshold or more): a near-identical distinct picture of the corpus, such as the
  same icon in two sizes or two star polygons that differ by a hairline. No ranking of these two can be
  told right from wrong by their pixels.
- ``flat``: the original is a flat picture (one colour, e.g. a fully transparent file flattened on white),
  tied with every other flat picture.
- ``shortlist``: the original is among the first ``finecheck.SHORTLIST`` hits, but not first.
- ``model``: the original is not among them: the model's codes did not put it close enough.

The stars of openclipart-png (``shapes/stars/``) are counted apart: hundreds of star polygons that differ
in their number of points or step, the largest family of near-identical pictures in the corpus.

    python scripts/bench_neardup.py --half dev --epochs 15 --budget 0 --copies 300 --index /tmp/nd-dev
    python scripts/research/neardup_misses.py --index /tmp/nd-dev --strength default
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

import simsearch
from simsearch import finecheck, pixelmatch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # scripts/: the bench's copies and identities
import bench_neardup  # noqa: E402

STARS = "shapes/stars/"


def kind_of_miss(root: Path, groups: dict[str, str], rel: str, hits, threshold: float | None) -> str:
    """One of variant / flat / shortlist / model for a query whose first hit is not its original ``rel``."""
    first = pixelmatch.load_grid(root / hits[0].path)
    orig = pixelmatch.load_grid(root / rel)
    if orig is not None and float(np.ptp(pixelmatch.layer(orig, 0))) == 0.0:
        return "flat"
    if first is not None and orig is not None and threshold is not None:
        if pixelmatch.similarity(orig, first) >= threshold:
            return "variant"
    ranks = [i for i, h in enumerate(hits[: finecheck.SHORTLIST]) if groups[h.path] == groups[rel]]
    return "shortlist" if ranks else "model"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True, help="an index bench_neardup.py --index built (dev half)")
    ap.add_argument("--half", choices=("dev", "test"), default="dev")
    ap.add_argument("--strength", default="default")
    ap.add_argument("--copies", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", type=Path, default=bench_neardup.DEFAULT_CORPUS)
    ap.add_argument("--list", action="store_true", help="also print each miss")
    a = ap.parse_args()
    root = a.index.with_name(a.index.name + "-corpus")
    if not root.is_dir():
        print(f"error: {root} not found: build the index with bench_neardup.py --index {a.index}", file=sys.stderr)
        return 1
    index = simsearch.Index.open(a.index)
    rels = index.paths()  # as the bench: the gallery is what the index holds
    groups = bench_neardup.identity_groups(root, rels)
    queries = bench_neardup.make_queries(root, rels, a.copies, a.strength, a.seed)
    threshold = index.pixel_threshold
    hits = []
    for s in range(0, len(queries), 256):
        hits += index.query_batch([img for _, img in queries[s : s + 256]], k=finecheck.SHORTLIST)
    counts: collections.Counter = collections.Counter()
    for (rel, _), h in zip(queries, hits):
        if h and groups[h[0].path] == groups[rel]:
            continue
        kind = kind_of_miss(root, groups, rel, h, threshold)
        family = "stars" if rel.startswith(STARS) else "other"
        counts[(family, kind)] += 1
        if a.list:
            print(f"{kind:9s} {rel}  first: {h[0].path} ({h[0].score:.3f})")
    n = len(queries)
    misses = sum(counts.values())
    check = "off" if threshold is None else f"at {threshold:.4f}"
    n_stars = sum(rel.startswith(STARS) for rel, _ in queries)
    print(
        f"{a.half} half, {a.strength} strength, {n} copies ({n_stars} of stars), pixel check {check}: "
        f"R@1 {1 - misses / n:.3f}"
    )
    print("\n| miss | stars | other pictures | all | R@1 lost |\n|---|---:|---:|---:|---:|")
    for kind in ("variant", "flat", "shortlist", "model"):
        s, o = counts[("stars", kind)], counts[("other", kind)]
        print(f"| {kind} | {s} | {o} | {s + o} | {(s + o) / n:.3f} |")
    s, o = (
        sum(v for (f, _), v in counts.items() if f == "stars"),
        sum(v for (f, _), v in counts.items() if f == "other"),
    )
    print(f"| all | {s} | {o} | {misses} | {misses / n:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which pixel statistic, and which cosine cut before it, should ``simsearch dupes`` use?
(DEVELOPMENT data only: the set ``scripts/bench_dupes.py --half dev`` generated and indexed.)

For an index built by ``bench_dupes.py --half dev --work WORK`` this script

1. takes the candidate pairs at a loose cosine (``--loose``: the cosine that this share of the
   calibration copies reach with their original; ``neighbours.range_pairs``),
2. aligns each pair as the pixel check does (``pixelmatch.aligned``) and measures several
   statistics on the aligned thumbnails (``pixelmatch.SIDE``: 48 px when this was run, 24 since):
   the Pearson correlation the check uses, and
   local differences (the largest per-pixel colour difference after a k×k box blur, as 1 − it),
3. calibrates each statistic as ``dupes`` does (``dupes.calibration_pairs``: the index's own
   images, a resized / re-compressed / cropped copy of each, their nearest distinct neighbours;
   Youden's J, ``postprocess.youden_threshold``) and
4. prints precision and recall of the pairs (truth: the planted copies; files with the same bytes
   are always pairs) for each cosine cut × statistic (or two statistics, both required).

    python scripts/bench_dupes.py --half dev --epochs 4 --budget 1200 --no-imagededup --work /tmp/dupes-dev
    python scripts/research/dupes_pixel.py --work /tmp/dupes-dev
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import simsearch
from simsearch import dupes, neighbours, pixelmatch
from simsearch.postprocess import youden_threshold

BLURS = (1, 3, 5, 7)


def box_blur(d: np.ndarray, k: int) -> np.ndarray:
    """Mean over each k×k window (valid part only) of a 2-D array."""
    if k == 1:
        return d
    c = np.pad(d, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def stats(ga: np.ndarray, gb: np.ndarray) -> dict[str, float]:
    """Statistics of one pair, from its aligned thumbnails (higher = more alike)."""
    ta, tb = pixelmatch.aligned(ga, gb)
    out = {"corr": pixelmatch.similarity(ga, gb)}
    d = np.abs(ta - tb).max(axis=2)
    for k in BLURS:
        b = box_blur(d, k)
        out[f"max{k}"] = 1.0 - float(b.max())
        out[f"p99_{k}"] = 1.0 - float(np.quantile(b, 0.99))
    return out


def measure(pairs, grid_of) -> dict[str, np.ndarray]:
    rows: dict[str, list[float]] = {}
    for a, b in pairs:
        ga, gb = grid_of(a), grid_of(b)
        if ga is None or gb is None:
            s = {k: np.nan for k in rows} if rows else None
        else:
            s = stats(pixelmatch.as_float(ga), pixelmatch.as_float(gb))
        if s is None:
            continue
        for k, v in s.items():
            rows.setdefault(k, []).append(v)
    return {k: np.asarray(v, np.float64) for k, v in rows.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="bench_dupes.py's --work (set/, set.json, index/)")
    ap.add_argument("--loose", default="youden,0.95,0.98,0.99", help="cosine cuts: youden or a copy pass rate")
    a = ap.parse_args(argv)
    info = json.loads((a.work / "set.json").read_text())
    index = simsearch.Index.open(a.work / "index")
    entries = index.entries()
    base = index.base_vectors()
    row_of = {Path(e.path).name: i for i, e in enumerate(entries)}
    truth = {frozenset((row_of[x], row_of[y])): kind for x, y, kind in info["truth"] if x in row_of and y in row_of}
    kinds = sorted(set(truth.values()))

    t0 = time.perf_counter()
    cp = dupes.calibration_pairs(index, base=base)
    pos_keys, neg_keys = cp.pixel_pairs()
    grid_of = cp.grid_of(index)
    cal_pos = measure(pos_keys, grid_of)
    neg_ok = [k for k in neg_keys if grid_of(k[1]) is not None]
    cal_neg = measure(neg_ok, grid_of)
    print(f"calibration: {len(pos_keys)} copies, {len(neg_ok)} nearest neighbours ({time.perf_counter() - t0:.0f} s)")
    cuts = {name: youden_threshold(cal_pos[name], cal_neg[name]) for name in cal_pos}
    for name, (tau, tpr, fpr) in cuts.items():
        print(f"  {name:<8} threshold {tau:.4f}: copies pass {tpr:.3f}, nearest neighbours pass {fpr:.3f}")

    keys = [e.sha256 for e in entries]
    ea, eb = dupes.exact_pairs(keys)
    exact = {frozenset((int(x), int(y))) for x, y in zip(ea, eb)}
    grids: dict[int, np.ndarray | None] = {}

    def row_grid(r: int):
        if r not in grids:
            grids[r] = pixelmatch.load_grid(index.root / entries[r].path)
        return grids[r]

    head = f"{'cosine cut':<22} {'pairs':>6} {'statistic':<16} {'precision':>9} {'recall':>6}"
    print(f"\n{head}  by kind ({', '.join(kinds)})")
    for loose in a.loose.split(","):
        if loose == "youden":
            tau = youden_threshold(cp.copy_cosine, cp.nearest_cosine)[0]
        else:
            tau = float(np.quantile(cp.copy_cosine, 1 - float(loose)))
        pa, pb, _ = neighbours.range_pairs(base, tau, max_k=dupes.MAX_PARTNERS)
        cand = [(int(x), int(y)) for x, y in zip(pa, pb) if keys[x] != keys[y]]
        st = measure(cand, row_grid)
        options = [[n] for n in st] + [["corr", f"max{k}"] for k in BLURS] + [["corr", f"p99_{k}"] for k in BLURS]
        for combo in options:
            ok = np.ones(len(cand), bool)
            for n in combo:
                ok &= st[n] >= cuts[n][0]
            pred = {frozenset(p) for p, keep in zip(cand, ok) if keep} | exact
            tp = pred & truth.keys()
            by_kind = [sum(truth[p] == k for p in tp) / max(1, sum(v == k for v in truth.values())) for k in kinds]
            cut, precision = f"{loose} ({tau:.4f})", len(tp) / max(1, len(pred))
            print(
                f"{cut:<22} {len(cand):>6} {'+'.join(combo):<16} {precision:>9.3f} "
                f"{len(tp) / len(truth):>6.3f}  " + " ".join(f"{x:.2f}" for x in by_kind)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

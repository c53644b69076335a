"""Outliers: do off-distribution images planted in a corpus rank at the top of ``simsearch outliers``?

``--n`` Fashion-MNIST training PNGs (a seeded sample across classes) and ``--plant`` clip-art
images (Debian's openclipart-png: RGBA drawings of every size, a seeded sample) go into one folder
(the clip art keeps its own size and format; indexing makes everything the model's 28×28 grey
input). The folder is indexed with default settings and ``--budget`` seconds of training, then
``outliers.find`` ranks every image by ``--by recon`` (and ``knn`` for comparison); the script
prints where each planted image ranks and whether all of them are in the top ``--top``.

    python scripts/bench_outliers.py --fmnist data/fashion-mnist/train --work /tmp/outliers-bench
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fmnist", type=Path, default=Path("data/fashion-mnist/train"))
    ap.add_argument("--clipart", type=Path, default=Path("/usr/share/openclipart/png"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/simsearch-bench-outliers"))
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--plant", type=int, default=20)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--budget", type=float, default=120)
    ap.add_argument("--epochs", type=int, default=None, help="cap on training epochs (default: the budget decides)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sheet", type=Path, help="write the top outliers beside their reconstructions here")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import simsearch
    from simsearch import outliers

    def key(p: Path) -> str:
        return hashlib.sha256(f"{args.seed}:{p}".encode()).hexdigest()

    fm = sorted(args.fmnist.rglob("*.png"), key=key)[: args.n]
    clip = sorted(args.clipart.rglob("*.png"), key=key)[: args.plant]
    folder = args.work / "images"
    if folder.exists():
        shutil.rmtree(folder)
    for p in fm:
        dst = folder / "fmnist" / p.parent.name / p.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
    for i, p in enumerate(clip):
        dst = folder / "fmnist" / "planted" / f"{i:02d}-{p.name}"  # no folder name gives them away to the model
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
    planted = {f"fmnist/planted/{i:02d}-{p.name}" for i, p in enumerate(clip)}
    print(f"{len(fm)} Fashion-MNIST images + {len(clip)} clip-art images in {folder}")
    idx_dir = args.work / "index"
    if idx_dir.exists():
        shutil.rmtree(idx_dir)
    t0 = time.perf_counter()
    opts = {"time_budget": args.budget} | ({"max_epochs": args.epochs} if args.epochs else {})
    idx = simsearch.Index.build(folder, idx_dir, **opts)
    print(f"indexed in {time.perf_counter() - t0:.0f} s ({idx.info()['trained_epochs']} epochs)")
    results = {}
    for by in ("recon", "knn"):
        t0 = time.perf_counter()
        res = outliers.find(idx, len(idx), by)
        s = time.perf_counter() - t0
        rank = {o.path: o.rank for o in res.outliers}
        ranks = sorted(rank[p] for p in planted)
        ok = all(r <= args.top for r in ranks)
        results[by] = {
            "ranks": ranks,
            f"all_in_top_{args.top}": ok,
            "worst": max(ranks),
            "seconds": round(s, 1),
            "median_planted_z": float(np.median([o.z for o in res.outliers if o.path in planted])),
        }
        print(f"--by {by}: planted ranks {ranks}; all in top {args.top}: {ok} ({s:.1f} s)")
        if by == "recon":
            print(f"  {res.note()}")
    if args.sheet:
        from simsearch.reconview import load_pixels
        from simsearch.render import strips_sheet

        top = outliers.find(idx, 24, "recon").outliers
        px, _ = load_pixels(idx, [o.id for o in top])
        rec = idx.reconstruct(px)
        cells = [
            ([px[i], rec[i]], [f"#{o.rank}  z {o.z:.1f}", Path(o.path).parent.name + "/" + Path(o.path).name])
            for i, o in enumerate(top)
        ]
        print(f"wrote {strips_sheet(cells, args.sheet, ['image', 'reconstruction'], 72, columns=6)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if results["recon"][f"all_in_top_{args.top}"] else 1


if __name__ == "__main__":
    sys.exit(main())

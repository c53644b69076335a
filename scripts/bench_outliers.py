"""Outliers: do off-distribution images planted in a corpus rank at the top of ``simsearch outliers``?

``--n`` Fashion-MNIST training PNGs (a seeded sample across classes) and ``--plant`` clip-art
images (Debian's openclipart-png: RGBA drawings of every size, a seeded sample) go into one folder
(the clip art keeps its own size and format; indexing makes everything the model's 28×28 grey
input). The folder is indexed with default settings and ``--budget`` seconds of training, then
``outliers.find`` ranks every image by ``--by recon`` (and ``knn`` for comparison); the script
prints where each planted image ranks and whether all of them are in the top ``--top``, and, for
comparison, the ranks by each of the two parts of the recon score and by the clean reconstruction
error that ``--by recon`` used before. The training length decides a lot (a model trained longer
redraws the planted pictures better): pass ``--epochs`` with a generous ``--budget`` for a run that
does not depend on the machine's load. ``--reuse`` keeps the folder and index of an earlier run
with the same arguments (``--seed`` picks which images are planted). ``--check-stored`` also
scores the index as if it stored no reconstruction statistics (everything computed from the files,
as for an index written before format 4) and prints how far those values are from the stored ones
and where the planted images rank then.

    python scripts/bench_outliers.py --fmnist data/fashion-mnist/train --work /tmp/outliers-bench \
        --epochs 69 --budget 900
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
    ap.add_argument(
        "--reuse", action="store_true", help="keep the folder and index of an earlier run with the same arguments"
    )
    ap.add_argument(
        "--check-stored",
        action="store_true",
        help="also score with every value computed from the files, and compare with the stored ones",
    )
    args = ap.parse_args(argv)

    import simsearch
    from simsearch import outliers

    def key(p: Path) -> str:
        return hashlib.sha256(f"{args.seed}:{p}".encode()).hexdigest()

    fm = sorted(args.fmnist.rglob("*.png"), key=key)[: args.n]
    clip = sorted(args.clipart.rglob("*.png"), key=key)[: args.plant]
    folder = args.work / "images"
    idx_dir = args.work / "index"
    made = args.work / "made.json"
    sig = [str(args.fmnist), str(args.clipart), args.n, args.plant, args.seed, args.budget, args.epochs]
    planted = {f"fmnist/planted/{i:02d}-{p.name}" for i, p in enumerate(clip)}
    if args.reuse and made.is_file() and json.loads(made.read_text()) == sig:
        idx = simsearch.Index.open(idx_dir)
        print(f"reusing {folder} and {idx_dir} ({idx.info()['trained_epochs']} epochs)")
    else:
        made.unlink(missing_ok=True)
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
        print(f"{len(fm)} Fashion-MNIST images + {len(clip)} clip-art images in {folder}")
        if idx_dir.exists():
            shutil.rmtree(idx_dir)
        t0 = time.perf_counter()
        opts = {"time_budget": args.budget} | ({"max_epochs": args.epochs} if args.epochs else {})
        idx = simsearch.Index.build(folder, idx_dir, **opts)
        print(f"indexed in {time.perf_counter() - t0:.0f} s ({idx.info()['trained_epochs']} epochs)")
        made.write_text(json.dumps(sig))
    results: dict = {}
    recon_res = None
    for by in ("recon", "knn"):
        t0 = time.perf_counter()
        res = outliers.find(idx, len(idx), by, workers=2)
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
            recon_res = res
            print(f"  {res.note()}")
            assert res.parts is not None and res.stats is not None
            paths = [e.path for e in idx.entries()]
            old = outliers.detail_adjusted(res.stats[:, 0], res.stats[:, 1])
            for name, part in (
                ("denoising error alone", res.parts[:, 0]),
                ("code distance alone", res.parts[:, 1]),
                ("clean reconstruction error, detail-adjusted (before)", old),
            ):
                order = np.argsort(-part, kind="stable")
                where = {paths[r]: i + 1 for i, r in enumerate(order)}
                pr = sorted(where[p] for p in planted)
                results[f"recon: {name}"] = {"ranks": pr, f"all_in_top_{args.top}": all(r <= args.top for r in pr)}
                print(f"  {name}: planted ranks {pr}; in top {args.top}: {sum(r <= args.top for r in pr)}")
            if args.check_stored:
                stored = idx.recon_stats
                idx.recon_stats = lambda: None  # as an index that stores none: every value from the files
                t0 = time.perf_counter()
                fresh = outliers.find(idx, len(idx), by, workers=2)
                idx.recon_stats = stored
                secs = time.perf_counter() - t0
                assert fresh.stats is not None
                frank = {o.path: o.rank for o in fresh.outliers}
                franks = sorted(frank[p] for p in planted)
                diff = float(np.nanmax(np.abs(fresh.stats - res.stats)))
                same = [o.id for o in fresh.outliers] == [o.id for o in res.outliers]
                results["recon computed from the files"] = {
                    "ranks": franks,
                    "max_abs_diff_from_stored": diff,
                    "same_ranking": same,
                    "seconds": round(secs, 1),
                    "computed": fresh.computed,
                }
                print(
                    f"  computed from the files ({fresh.computed} images, {secs:.1f} s): planted ranks {franks}; "
                    f"max |stored - computed| {diff:.2g}; same ranking of all {len(idx)}: {same}"
                )
    if args.sheet:
        from simsearch.reconview import load_pixels
        from simsearch.render import strips_sheet

        assert recon_res is not None
        top = recon_res.outliers[:24]
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

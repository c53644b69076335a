"""What storing the denoising error at index time costs and saves (issue #11): the embedding pass
with the reconstruction statistics, and ``simsearch outliers --by recon`` on the index it wrote.

With a given model (``--model``, so no training is timed) the script

1. indexes the folder into ``--work`` with that model and reports the indexer's own stage timings
   (decode, embed, fit, write);
2. decodes ``--folder`` once and times ``embed.embed(..., recon=True)`` on those pixels, the
   embedding pass's own work (codes over the test-time views + the statistics; since format 4 also
   the denoising error of 3 corrupted copies), best of ``--reps``;
3. times ``outliers.find(index, 20, "recon")`` on that index and says how many images' errors it
   computed from the files.

Every time is given as wall-clock seconds and as CPU seconds (this process and its decode
workers): on a machine shared with other jobs the wall clock says more about the others than about
the code, and the CPU time with ``--threads 1`` (the default) much less.

It imports whichever simsearch is on the path, and uses only names that the releases before and
after format 4 both have, so the same command measures both, side by side:

    PYTHONPATH=/path/to/old/checkout python scripts/bench_recon_store.py --folder F --model M --work /tmp/a
    PYTHONPATH=$PWD python scripts/bench_recon_store.py --folder F --model M --work /tmp/b
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True, help="a saved model (simsearch train)")
    ap.add_argument("--work", type=Path, required=True, help="the index is written to WORK/index (replaced)")
    ap.add_argument("--workers", type=int, default=2, help="decode processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is comparable under load)")
    ap.add_argument("--reps", type=int, default=1, help="repetitions of the embedding timing (best is reported)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    import simsearch
    from simsearch import embed, model, outliers, store
    from simsearch.indexer import BuildOptions
    from simsearch.pool import decode_files

    torch.set_num_threads(args.threads)
    out: dict = {"simsearch": str(Path(simsearch.__file__).parent), "threads": torch.get_num_threads()}
    idx_dir = args.work / "index"
    if idx_dir.exists():
        shutil.rmtree(idx_dir)
    clock = Clock()
    index = simsearch.Index.build(
        args.folder, idx_dir, options=BuildOptions.of(model=str(args.model), workers=args.workers)
    )
    out["index"] = clock.read()
    out["index_timings"] = index.last_report.timings
    out["images"] = len(index)
    out["format_version"] = index.meta.format_version

    # the embedding pass alone, on pixels decoded beforehand
    files = [index.root / e.path for e in index.entries()]
    pixels = np.stack([a for _, a, _, _ in decode_files(files, index.preprocess, workers=args.workers)])
    net = model.load(store.model_path(index.path, index.meta.model.sha256))[0]
    runs = []
    for _ in range(args.reps):
        clock = Clock()
        _codes, stats = embed.embed(net, pixels, "cpu", views=index.views, recon=True)
        runs.append(clock.read())
    best = min(runs, key=lambda r: r["cpu_s"])
    out["input"] = list(pixels.shape[1:])
    out["embed"] = best
    out["embed_images_per_cpu_s"] = round(len(pixels) / best["cpu_s"], 1)
    out["recon_columns"] = int(stats.shape[1])

    clock = Clock()
    res = outliers.find(index, 20, "recon", workers=args.workers)
    out["outliers"] = clock.read()
    out["outliers_computed_from_files"] = res.computed
    out["top5"] = [o.path for o in res.outliers[:5]]
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


class Clock:
    """Wall-clock and CPU seconds (this process and its finished child processes) since it was made."""

    def __init__(self):
        self.t = time.perf_counter(), self._cpu()

    @staticmethod
    def _cpu() -> float:
        import resource

        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def read(self) -> dict:
        return {"wall_s": round(time.perf_counter() - self.t[0], 2), "cpu_s": round(self._cpu() - self.t[1], 2)}


if __name__ == "__main__":
    sys.exit(main())

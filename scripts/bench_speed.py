#!/usr/bin/env python3
"""simsearch speed benchmark: one markdown table, every comparison measured side by side in one run.

Rows (medians over ``--reps`` repetitions unless a row says otherwise):

1. decode + preprocess throughput — simsearch's loader (``pool.decode_files``, one process per
   core, and in-process) against a naive Pillow loop; (a) 28×28 grayscale PNGs, (b) 1920×1080 JPEGs.
2. embedding throughput — ``embed.embed`` with the default (untrained) model on CPU, and on CUDA if
   present; next to it the torch-free ``numpy_encoder`` simsearch uses for small CPU query batches.
3. end-to-end ``indexer.update`` of the Fashion-MNIST train folder, split into its stages, then an
   unchanged (no-op) second run.
4. warm library query latency (``Index.query`` / ``Index.query_batch`` of 100) on a train+test
   gallery (indexed with the row-3 model, ``BuildOptions(model=...)``), by indexed id, indexed path
   and new image (PIL; includes encoding).
5. cold command line: ``simsearch query IMAGE --index IDX`` and ``simsearch --help``, process start to exit.
6. ANN on synthetic clustered 128-d vectors (1M by default): FAISS flat / ivf / hnsw / ivfpq as
   simsearch builds and tunes them, against numpy brute force and scikit-learn.
7. training throughput (``train.train``, default objective, 1×28² and 3×64² inputs): fp32 against
   the precision ``TrainConfig.precision = "auto"`` picks on this CPU (bf16 where it has the instructions).

The table goes to stdout (and ``--out``), progress to stderr. Nothing here asserts on a timing.
This file is the entry point (options, the row loop, the report); the rows are in ``scripts/bench/``,
one module per row group, with the shared timing helpers in ``bench/common.py``.

    python scripts/bench_speed.py                      # the full benchmark (quiet machine, ~30+ min on 2 cores)
    python scripts/bench_speed.py --quick              # smoke run, tiny sizes, < 2 min
    python scripts/bench_speed.py --skip 3,4,5 --n-vectors 200000 --out bench.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

# scripts/bench/, beside this file (a script's own folder is on sys.path): the rows and their helpers
from bench.ann import row_ann
from bench.cold_cli import row_cold_cli
from bench.common import Skip, log, row
from bench.context import Ctx
from bench.decode import row_decode
from bench.embedding import row_embed
from bench.indexing import row_index
from bench.report import busy_warning, loadavg, machine_info, render
from bench.training import row_train
from bench.warm_query import row_query

ROW_TITLES = {
    "1": "decode + preprocess",
    "2": "embedding",
    "3": "end-to-end index",
    "4": "warm query latency",
    "5": "cold command line",
    "6": "ANN on synthetic vectors",
    "7": "training steps, by precision",
}

# per-mode defaults for every size option left unset on the command line
FULL = dict(
    reps=3,
    decode_n=10_000,
    jpeg_n=200,
    embed_n=20_000,
    n_vectors=1_000_000,
    n_queries=1000,
    single=300,
    slow_single=20,
    batches=20,
    cold_reps=5,
    train_budget=None,
    fmnist_subset=None,
    ann_types="flat,ivf,hnsw,ivfpq",
)
QUICK = dict(
    reps=1,
    decode_n=500,
    jpeg_n=30,
    embed_n=2000,
    n_vectors=10_000,
    n_queries=200,
    single=30,
    slow_single=5,
    batches=3,
    cold_reps=2,
    train_budget=10.0,
    fmnist_subset=(2000, 500),
    ann_types="flat,ivf,hnsw",
)  # ivfpq: PQ training alone takes 0.5-2 min even on 10k vectors


ROWS: dict[str, Callable[[Ctx], list[dict]]] = {
    "1": row_decode,
    "2": row_embed,
    "3": row_index,
    "4": row_query,
    "5": row_cold_cli,
    "6": row_ann,
    "7": row_train,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sizes left unset take the defaults of the mode: full "
        + json.dumps(FULL)
        + "; --quick "
        + json.dumps(QUICK),
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 repetition: a smoke run (< 2 min)")
    p.add_argument(
        "--skip", action="append", default=[], metavar="ROWS", help="rows to skip, e.g. --skip 3,4 (repeatable)"
    )
    p.add_argument("--reps", type=int, help="repetitions per throughput measurement (median reported)")
    p.add_argument("--out", type=Path, help="also write the report (markdown) to this file")
    p.add_argument("--json", type=Path, help="also write the raw rows as JSON")
    p.add_argument(
        "--fmnist",
        default="data/fashion-mnist/train",
        help="Fashion-MNIST train folder (its sibling test/ joins the row-4 gallery)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="use this trained model for the row-3/4 indexes instead of training one "
        "(e.g. to re-measure rows 4-5 only: --skip 1,2,3,6 --model M.pt)",
    )
    p.add_argument(
        "--train-budget",
        type=float,
        help="training time budget (s) for row 3 (default: simsearch's default; --quick: 10)",
    )
    p.add_argument("--n-vectors", type=int, help="row 6: number of synthetic vectors (default 1,000,000)")
    p.add_argument("--n-queries", type=int, help="row 6: held-out queries (default 1000)")
    p.add_argument(
        "--ann-types", help="row 6: FAISS index types, comma-separated (default flat,ivf,hnsw,ivfpq; --quick: no ivfpq)"
    )
    p.add_argument("--clusters", type=int, help="row 6: Gaussian clusters (default min(2000, n/500))")
    p.add_argument("--decode-n", type=int, help="row 1a: PNGs to decode (default 10,000)")
    p.add_argument("--jpeg-n", type=int, help="row 1b: 1920×1080 JPEGs to generate and decode (default 200)")
    p.add_argument("--embed-n", type=int, help="row 2: images to embed (default 20,000)")
    p.add_argument("--single", type=int, help="single queries timed per index / query kind (default 300)")
    p.add_argument(
        "--slow-single", type=int, help="row 6: single queries timed for the brute-force baselines (default 20)"
    )
    p.add_argument("--batches", type=int, help="row 4: batches of 100 timed per query kind (default 20)")
    p.add_argument("--cold-reps", type=int, help="row 5: runs per command (default 5)")
    p.add_argument(
        "--ball-tree-timeout", type=float, default=600.0, help="row 6: seconds allowed for the ball tree (default 600)"
    )
    p.add_argument("--tmp", help="where to put the temporary folder (default: the system's)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (indexes, generated images)")
    a = p.parse_args(argv)
    for name, value in (QUICK if a.quick else FULL).items():
        if getattr(a, name, None) is None:
            setattr(a, name, value)
    a.skip = {s.strip() for item in a.skip for s in item.replace(" ", ",").split(",") if s.strip()}
    a.ann_types = {t.strip() for t in a.ann_types.split(",") if t.strip()}
    if not a.ann_types <= {"flat", "ivf", "hnsw", "ivfpq"} or "flat" not in a.ann_types:
        p.error("--ann-types: a comma-separated subset of flat,ivf,hnsw,ivfpq that includes flat (the ground truth)")
    unknown = a.skip - set(ROWS)
    if unknown:
        p.error(f"--skip: unknown row(s) {', '.join(sorted(unknown))} (rows are {', '.join(ROWS)})")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        load_start = os.getloadavg()[0]
    except OSError:
        load_start = None
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    log(f"bench_speed: {command}")
    header = [
        "# simsearch speed benchmark",
        "",
        f"- command: `{command}` (in {os.getcwd()})",
        *machine_info(),
        f"- mode: {'quick' if a.quick else 'full'}; reps {a.reps}; load average at start {loadavg()}",
    ]
    ctx = Ctx(a)
    rows: list[dict] = []
    failed = False
    t_start = time.perf_counter()
    try:
        for key, fn in ROWS.items():
            title = ROW_TITLES[key]
            if key in a.skip:
                rows.append(row(key, title, None, "", notes="skipped (--skip)"))
                continue
            t0 = time.perf_counter()
            try:
                rows += fn(ctx)
            except Skip as e:
                rows.append(row(key, title, None, "", notes=f"skipped: {e}"))
            except Exception as e:  # keep going: the other rows are still worth printing
                failed = True
                traceback.print_exc()
                rows.append(row(key, title, None, "", notes=f"ERROR: {type(e).__name__}: {e}"))
            log(f"row {key} ({title}) done in {time.perf_counter() - t0:.1f}s")
    finally:
        ctx.cleanup()
    header.append(
        f"- finished in {time.perf_counter() - t_start:.0f} s; load average at end {loadavg()} "
        "(a load above the CPU count means other processes shared the machine)"
    )
    header += busy_warning(load_start)
    header += [
        "- speed vs comparison: how many times faster than the 'compared with' entry, measured in this run "
        "(> 1 = faster); medians over repetitions, p99 where given",
        "",
    ]
    report = "\n".join(header) + "\n" + render(rows) + "\n"
    sys.stdout.write(report)
    sys.stdout.flush()
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(report)
    if a.json:
        a.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

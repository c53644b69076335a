#!/usr/bin/env python3
"""Retrieval quality on Fashion-MNIST, measured side by side in one run.

Gallery: the 60k train images; queries: the 10k test images; relevant = same
class (folder name). Full-ranking cosine P@1 / P@10 / P@100 / mAP.

Rows: raw pixels, PCA-128 (the baselines), then simsearch indexes built with
each training objective through the product's own code path
(`simsearch.Index.build` + `simsearch.evaluate`), each with its train time.

    python scripts/fetch_fashion_mnist.py --out data/fashion-mnist
    python scripts/bench_quality.py --data data/fashion-mnist

Labels are read from folder names for scoring only.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from simsearch import discover, evaluate, pool, preprocess
from simsearch.constants import OBJECTIVES
from simsearch.settings import TrainConfig


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def decode_split(folder: Path, limit: int | None, seed: int):
    paths, _ = discover.discover(folder)
    if limit and len(paths) > limit:
        rng = np.random.default_rng(seed)
        paths = [paths[i] for i in np.sort(rng.choice(len(paths), limit, replace=False))]
    pre = preprocess.Preprocess(28, 1)
    pix = np.empty((len(paths), 1, 28, 28), np.uint8)
    for i, arr, reason, _ in pool.decode_files(paths, pre):
        if arr is None:
            raise SystemExit(f"{paths[i]}: {reason}")
        pix[i] = arr
    return paths, pix


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def baselines(train_pix, test_pix, gl, ql, ks):
    rows = []
    g = train_pix.reshape(len(train_pix), -1).astype(np.float32) / 255
    q = test_pix.reshape(len(test_pix), -1).astype(np.float32) / 255
    t = time.perf_counter()
    m = evaluate.rank_metrics(l2n(q), l2n(g), ql, gl, ks)
    rows.append({"method": "raw pixels (cosine)", "train_s": 0.0, **m})
    log(f"raw pixels: {m['P@10']:.3f} / {m['mAP']:.3f} ({time.perf_counter() - t:.0f}s)")
    t = time.perf_counter()
    mean = g.mean(0)
    _, _, vt = np.linalg.svd(g - mean, full_matrices=False)
    p = vt[:128].T
    fit = time.perf_counter() - t
    m = evaluate.rank_metrics(l2n((q - mean) @ p), l2n((g - mean) @ p), ql, gl, ks)
    rows.append({"method": "PCA-128 (cosine)", "train_s": round(fit, 1), **m})
    log(f"PCA-128: {m['P@10']:.3f} / {m['mAP']:.3f}")
    return rows


def simsearch_row(
    objective, train_dir: Path, test_dir: Path, budget, work: Path, ks, keep: Path | None, limit=None, epochs=None
):
    import simsearch
    from simsearch.indexer import BuildOptions

    idx_dir = (keep / f"fmnist-{objective}") if keep else work / f"idx-{objective}"
    if idx_dir.exists():
        shutil.rmtree(idx_dir)
    opts = BuildOptions.of(objective=objective, time_budget=budget, max_epochs=epochs)
    t = time.perf_counter()
    idx = simsearch.Index.build(train_dir, idx_dir, options=opts)
    build_s = time.perf_counter() - t
    rep = idx.last_report
    m = evaluate.evaluate_index(idx, str(test_dir), ks=ks, limit=limit)
    default = " (default)" if objective == TrainConfig().objective else ""
    row = {
        "method": f"simsearch --objective {objective}{default}",
        "train_s": rep.trained["seconds"],
        "epochs": rep.trained["epochs"],
        "index_s": round(build_s, 1),
        **m,
    }
    trained = f"train {rep.trained['seconds']:.0f}s ({rep.trained['epochs']} epochs)"
    log(f"{objective}: {m['P@10']:.3f} / {m['mAP']:.3f}  {trained}")
    return row


def existing_index_row(path: Path, test_dir: Path, ks, limit=None) -> dict:
    import simsearch

    idx = simsearch.Index.open(path)
    train = idx.meta.model.train or {}
    m = evaluate.evaluate_index(idx, str(test_dir), ks=ks, limit=limit)
    log(f"{path}: {m['P@10']:.3f} / {m['mAP']:.3f}")
    return {
        "method": f"simsearch index {path} ({train.get('objective')}, {idx.info()['postprocess']})",
        "train_s": train.get("seconds", 0.0),
        "epochs": train.get("epochs"),
        **m,
    }


def table(rows, ks) -> str:
    cols = [f"P@{k}" for k in ks] + ["mAP"]
    out = ["| method | " + " | ".join(cols) + " | train time |", "|---|" + "---:|" * (len(cols) + 1)]
    for r in rows:
        tt = f"{r['train_s']:.0f} s" + (f" ({r['epochs']} epochs)" if "epochs" in r else "")
        out.append(f"| {r['method']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + f" | {tt} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", type=Path, default=Path("data/fashion-mnist"), help="folder with train/ and test/ class folders"
    )
    ap.add_argument(
        "--objectives",
        default=",".join([TrainConfig().objective] + [o for o in OBJECTIVES if o != TrainConfig().objective]),
        help="comma-separated objectives to train (default: all, the default first)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="training time budget per objective, s (default: simsearch's default)",
    )
    ap.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="train each objective for exactly this many epochs (with --budget 0: fair under CPU contention)",
    )
    ap.add_argument("--limit-queries", type=int, default=None, help="evaluate on a random sample of test queries")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--keep-indexes", type=Path, default=None, help="keep the built indexes in this folder")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument(
        "--with-index",
        type=Path,
        action="append",
        default=[],
        help="also evaluate this existing index of the train folder (e.g. the demo's), as a row",
    )
    a = ap.parse_args(argv)
    ks = (1, 10, 100)
    train_dir, test_dir = a.data / "train", a.data / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        print(f"error: {a.data} has no train/ and test/ folders (run scripts/fetch_fashion_mnist.py)", file=sys.stderr)
        return 1
    import faiss
    import torch

    print(f"command: python scripts/bench_quality.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"faiss {faiss.__version__}, cuda={torch.cuda.is_available()}\n"
    )
    rows = []
    if not a.no_baselines:
        log("decoding train/test for the baselines …")
        gp, gpix = decode_split(train_dir, None, 0)
        qp, qpix = decode_split(test_dir, a.limit_queries, 0)
        gl, ql = evaluate.encode_labels([evaluate.label_of(p) for p in gp], [evaluate.label_of(p) for p in qp])
        rows += baselines(gpix, qpix, gl, ql, ks)
    for path in a.with_index:
        rows.append(existing_index_row(path, test_dir, ks, a.limit_queries))
    with tempfile.TemporaryDirectory() as tmp:
        for obj in [o for o in a.objectives.split(",") if o]:
            if obj not in OBJECTIVES:
                print(f"error: unknown objective {obj!r}", file=sys.stderr)
                return 2
            rows.append(
                simsearch_row(
                    obj, train_dir, test_dir, a.budget, Path(tmp), ks, a.keep_indexes, a.limit_queries, a.epochs
                )
            )
            print(table(rows[-1:], ks).splitlines()[-1], file=sys.stderr)
    print(table(rows, ks))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

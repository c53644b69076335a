#!/usr/bin/env python3
"""Retrieval quality on a second labelled corpus: scikit-learn's bundled 8×8 handwritten digits.

The 1,797 digits are written as PNG files in class folders and split in two by a
fixed random permutation: the gallery half is indexed with the product
(``simsearch.Index.build``, default settings, labels never seen), the query half
asks. Relevant = same digit; full-ranking P@1 / P@10 / mAP from
``simsearch.evaluate``. Baselines in the same run: cosine of the raw pixels, and
of mean-centred pixels. Then P@1 / P@10 of ``Index.query_batch`` on the query files
(the first 10 hits) with and without the pixel check, which reorders only those.

    pip install scikit-learn
    python scripts/bench_digits.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import simsearch
from simsearch import evaluate
from simsearch.indexer import BuildOptions


def write_halves(out: Path, seed: int) -> tuple[Path, Path, np.ndarray, np.ndarray, list, list]:
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(seed).permutation(len(d.target))
    half = len(order) // 2
    parts = {"gallery": order[:half], "queries": order[half:]}
    for name, rows in parts.items():
        for i in rows:
            p = out / name / str(d.target[i]) / f"{i:04d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8), "L").save(p)
    g, q = parts["gallery"], parts["queries"]
    return out / "gallery", out / "queries", d.data[g], d.data[q], d.target[g].tolist(), d.target[q].tolist()


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=None, help="training time budget, s (default: simsearch's)")
    ap.add_argument("--epochs", type=int, default=None, help="training epoch cap (default: simsearch's)")
    ap.add_argument("--train", type=json.loads, default=None, help="further training settings as JSON (ablations)")
    a = ap.parse_args(argv)
    ks = (1, 10)
    print(f"command: python scripts/bench_digits.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gdir, qdir, gx, qx, gl, ql = write_halves(Path(tmp), a.seed)
        gl_, ql_ = evaluate.encode_labels([str(x) for x in gl], [str(x) for x in ql])
        centred = lambda x: x - x.mean(1, keepdims=True)  # noqa: E731
        for name, f in (("raw pixels (cosine)", lambda x: x), ("mean-centred pixels (cosine)", centred)):
            m = evaluate.rank_metrics(l2n(f(qx)), l2n(f(gx)), ql_, gl_, ks)
            rows.append((name, m, "0 s"))
        t = time.perf_counter()
        given = {"time_budget": a.budget, "max_epochs": a.epochs, "train": a.train}
        opts = BuildOptions.of(**{k: v for k, v in given.items() if v is not None})
        index = simsearch.Index.build(gdir, Path(tmp) / "idx", options=opts)
        info = index.info()
        m = evaluate.evaluate_index(index, str(qdir), ks=ks)
        rows.append(
            (
                f"simsearch, default settings ({info['input']}, {info['trained_epochs']} epochs, "
                f"{info['postprocess']})",
                m,
                f"{time.perf_counter() - t:.0f} s",
            )
        )
        checked = {check: query_precision(index, qdir, check) for check in (False, True)}
        pixel_note = info["pixel_check"]
    print(f"{len(gl)} gallery digits, {len(ql)} query digits\n")
    print("| method | P@1 | P@10 | mAP | index time |\n|---|---:|---:|---:|---:|")
    for name, m, t in rows:
        print(f"| {name} | {m['P@1']:.3f} | {m['P@10']:.3f} | {m['mAP']:.3f} | {t} |")
    print(
        "\n`simsearch query`, each query file's first 10 hits (the pixel check reorders only those, so P@10 "
        f"cannot change; the index's check: {pixel_note}):\n\n"
        "| pixel check | P@1 | P@10 | queries whose first hit it changed |\n|---|---:|---:|---:|"
    )
    for check, (p1, p10, tops) in checked.items():
        moved = np.mean([a != b for a, b in zip(tops, checked[False][2])])
        print(f"| {'on (default)' if check else 'off'} | {p1:.3f} | {p10:.3f} | {moved:.3f} |")
    return 0


def query_precision(index, qdir: Path, check: bool) -> tuple[float, float, list[int]]:
    """(P@1, P@10, each query's first hit id) of every file under ``qdir`` through ``Index.query_batch``;
    relevant = the same folder name (digit)."""
    files = sorted(qdir.rglob("*.png"))
    p1, p10, tops = [], [], []
    for s in range(0, len(files), 256):
        batch = files[s : s + 256]
        for f, hits in zip(batch, index.query_batch(batch, k=10, pixel_check=check)):
            same = [h.path.split("/")[0] == f.parent.name for h in hits]
            p1.append(same[0])
            p10.append(np.mean(same))
            tops.append(hits[0].id)
    return float(np.mean(p1)), float(np.mean(p10)), tops


if __name__ == "__main__":
    sys.exit(main())

"""Sweep post-processing variants on the VALIDATION split, embedding only once.

Like tune_post.py (``simsearch.evaluate.split_folder``: train 00000-09999 =
queries, 10000-59999 = gallery, labels for scoring only), but the raw codes of
queries and gallery are computed once (``Index.codes``, ``Index.encode_pixels``)
and every variant re-fits `simsearch.postprocess` on the gallery codes in
memory, so a sweep costs one fit + one exact ranking per variant.

    python scripts/research/post_sweep.py --model indexes/fashion-mnist/models/<sha>.pt \\
        --variants default,b0.75,k20

Variant names: see VARIANTS below ("key=value+key=value" also works, e.g.
"weight=0.8+k=20"); a "/proj" suffix places gallery images through
their anchors like queries instead of using their own graph coordinates.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

import simsearch
from simsearch import discover, pool, postprocess, preprocess
from simsearch.evaluate import encode_labels, label_of, rank_metrics, split_folder
from simsearch.indexer import BuildOptions

BASE = postprocess.PostConfig()
VARIANTS = {
    "default": BASE,
    "nodiff": replace(BASE, diffusion=False),
    "b1.25": replace(BASE, weight=1.25),
    "b0.9": replace(BASE, weight=0.9),
    "b0.75": replace(BASE, weight=0.75),
    "k20": replace(BASE, k=20),
    "k12": replace(BASE, k=12),
    "k10": replace(BASE, k=10),
    "w0.35": replace(BASE, whiten=0.35),
    "w0.15": replace(BASE, whiten=0.15),
    "g2": replace(BASE, gamma=2.0),
    "g4": replace(BASE, gamma=4.0),
    "a0.95": replace(BASE, alpha=0.95),
    "r96": replace(BASE, rank=96),
    "r160": replace(BASE, rank=160),
}


def parse_variant(name: str) -> postprocess.PostConfig:
    if name in VARIANTS:
        return VARIANTS[name]
    types = {f.name: f.type for f in fields(postprocess.PostConfig)}
    kw = {}
    for part in name.split("+"):
        key, value = part.split("=")
        t = types[key]
        kw[key] = (
            (value.lower() in ("1", "true"))
            if t in (bool, "bool")
            else (int(value) if t in (int, "int") else float(value))
        )
    return replace(BASE, **kw)


def decode(paths: list[Path], pre: preprocess.Preprocess) -> np.ndarray:
    """Preprocessed pixels (N, C, S, S) of image files; every one must decode."""
    pixels = np.empty((len(paths), pre.channels, pre.size, pre.size), np.uint8)
    for i, arr, reason, _info in pool.decode_files(paths, pre):
        if arr is None:
            raise SystemExit(f"{paths[i]}: {reason}")
        pixels[i] = arr
    return pixels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the trained model file (models/<sha>.pt of an index)")
    ap.add_argument("--train", type=Path, default=Path("data/fashion-mnist/train"), help="Fashion-MNIST train folder")
    ap.add_argument("--work", type=Path, default=Path("data/fmnist-val"), help="where the split's symlinks go")
    ap.add_argument("--variants", default="default", help="comma-separated, of: " + ",".join(VARIANTS))
    a = ap.parse_args()
    q_dir, g_dir = split_folder(a.train, a.work)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        idx = simsearch.Index.build(
            g_dir, Path(tmp) / "idx", options=BuildOptions(model=a.model, post=replace(BASE, diffusion=False))
        )
        g_raw, g_ids = idx.codes(), idx.ids()
        g_labels = [label_of(p) for p in idx.paths()]
        q_paths, _ = discover.discover(q_dir)
        q_raw = idx.encode_pixels(decode(q_paths, idx.preprocess))
        print(f"# embedded {len(q_raw)} queries, {len(g_raw)} gallery in {time.perf_counter() - t:.0f}s", flush=True)
    ql, gl = encode_labels([label_of(p) for p in q_paths], g_labels)
    for name in a.variants.split(","):
        project_gallery = name.endswith("/proj")
        cfg = parse_variant(name.removesuffix("/proj"))
        t = time.perf_counter()
        post = postprocess.fit(g_raw, g_ids, cfg)
        # without ids, gallery images are placed through their anchors like queries (/proj)
        g = post.search_vectors(g_raw, None if project_gallery else g_ids)
        q = post.search_vectors(q_raw)
        m = rank_metrics(q, g, ql, gl, ks=(1, 10))
        print(
            json.dumps(
                {
                    "variant": name,
                    "P@1": round(m["P@1"], 4),
                    "P@10": round(m["P@10"], 4),
                    "mAP": round(m["mAP"], 4),
                    "seconds": round(time.perf_counter() - t),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

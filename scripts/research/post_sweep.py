"""Sweep post-processing variants on the VALIDATION split, embedding only once.

Like tune_post.py (train 00000-09999 = queries, 10000-59999 = gallery, labels
for scoring only), but the raw codes of queries and gallery are computed once
and every variant re-fits `simsearch.postprocess` on the gallery codes in
memory, so a sweep costs one fit + one exact ranking per variant.

    python scripts/research/post_sweep.py --model indexes/fashion-mnist/models/<sha>.pt \
        --variants default,b0.75,k20

Variant names: see VARIANTS below ("key=value+key=value" also works, e.g.
"weight=0.8+k=20"); a "/proj" suffix places gallery images through
their anchors like queries instead of using their own graph coordinates.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from tune_post import arg_parser, split  # noqa: E402

import simsearch  # noqa: E402
from simsearch import postprocess  # noqa: E402
from simsearch.discover import discover  # noqa: E402
from simsearch.evaluate import encode_labels, label_of, rank_metrics  # noqa: E402
from simsearch.indexer import BuildOptions, _decode  # noqa: E402

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


def main() -> int:
    a = arg_parser().parse_args()
    q_dir, g_dir = split(a.train, a.work)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        idx = simsearch.Index.build(
            g_dir, Path(tmp) / "idx", options=BuildOptions(model=a.model, post=replace(BASE, diffusion=False))
        )
        g_raw, g_ids = idx._snap.vectors, idx.ids()
        g_labels = [label_of(p) for p in idx.paths()]
        q_paths, _ = discover(q_dir)
        pixels, _, _, bad = _decode(list(q_paths), idx.preprocess, 0, None)
        assert not bad, bad[:3]
        q_raw = idx._encode(pixels)
        print(f"# embedded {len(q_raw)} queries, {len(g_raw)} gallery in {time.perf_counter() - t:.0f}s", flush=True)
    ql, gl = encode_labels([label_of(p) for p in q_paths], g_labels)
    for name in a.variants.split(","):
        project_gallery = name.endswith("/proj")
        cfg = parse_variant(name.removesuffix("/proj"))
        t = time.perf_counter()
        post = postprocess.fit(g_raw, g_ids, cfg)
        g = post.search_vectors(g_raw, g_ids)
        if project_gallery and post.diffusion:  # gallery placed like queries (through its anchors)
            b = post.base(g_raw)
            g = postprocess._l2n(np.hstack([b, cfg.weight * post._coords_projected(b)]))
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

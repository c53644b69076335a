"""Tune the post-processing on the VALIDATION split (never the test set).

Validation (``simsearch.evaluate.split_folder``): train images 00000-09999 are
queries, 10000-59999 the gallery (labels = class folders, for scoring only). The
model is given (--model, e.g. the demo's, trained label-free on the train
images); each variant re-fits the post-processing on the gallery and is scored
with `simsearch.evaluate`.

    python scripts/research/tune_post.py --model indexes/fashion-mnist/models/<sha>.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import simsearch
from simsearch.evaluate import evaluate_index, split_folder
from simsearch.indexer import BuildOptions
from simsearch.postprocess import PostConfig

BASE = PostConfig()
VARIANTS = {
    "default": BASE,
    "b1.5": replace(BASE, weight=1.5),
    "b0.75": replace(BASE, weight=0.75),
    "k20": replace(BASE, k=20),
    "k10": replace(BASE, k=10),
    "w0.5": replace(BASE, whiten=0.5),
    "w0": replace(BASE, whiten=0.0),
    "a0.999": replace(BASE, alpha=0.999),
    "r192": replace(BASE, rank=192),
    "nodiff": replace(BASE, diffusion=False),
    "nocopies": replace(BASE, copies=False),
    "b1.25": replace(BASE, weight=1.25),
    "k20b1.25": replace(BASE, k=20, weight=1.25),
    # the diffusion graph fitted on a uniform sample of the gallery, the rest placed through its anchors as
    # queries are: the 50k gallery at the sampling ratios of a 300k (1/3) and a 1M (1/10) folder under the
    # default max_anchors of 100k
    "anchors1/3": replace(BASE, max_anchors=16_667),
    "anchors1/10": replace(BASE, max_anchors=5_000),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the trained model file (models/<sha>.pt of an index)")
    ap.add_argument("--train", type=Path, default=Path("data/fashion-mnist/train"), help="Fashion-MNIST train folder")
    ap.add_argument("--work", type=Path, default=Path("data/fmnist-val"), help="where the split's symlinks go")
    ap.add_argument("--variants", default="default", help="comma-separated, of: " + ",".join(VARIANTS))
    a = ap.parse_args()
    q, g = split_folder(a.train, a.work)
    for name in a.variants.split(","):
        cfg = VARIANTS[name]
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            idx = simsearch.Index.build(g, Path(tmp) / "idx", options=BuildOptions(model=a.model, post=cfg))
            m = evaluate_index(idx, str(q))
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

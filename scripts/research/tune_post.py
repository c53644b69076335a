"""Tune the post-processing on the VALIDATION split (never the test set).

Validation: train images 00000-09999 are queries, 10000-59999 the gallery
(labels = class folders, for scoring only). The model is given (--model, e.g.
the demo's, trained label-free on the train images); each variant re-fits the
post-processing on the gallery and is scored with `simsearch.evaluate`.

    python scripts/research/tune_post.py --model indexes/fashion-mnist/models/<sha>.pt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import simsearch  # noqa: E402
from simsearch.evaluate import evaluate_index  # noqa: E402
from simsearch.indexer import BuildOptions  # noqa: E402
from simsearch.postprocess import PostConfig  # noqa: E402


def split(train: Path, out: Path) -> tuple[Path, Path]:
    q, g = out / "queries", out / "gallery"
    if not q.exists():
        for p in sorted(train.rglob("*.png")):
            dst = (q if int(p.stem) < 10000 else g) / p.parent.name / p.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(p.resolve(), dst)
    return q, g


def arg_parser() -> argparse.ArgumentParser:
    """The options of the validation-split scripts (this one and post_sweep.py)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", type=Path, default=Path("data/fashion-mnist/train"))
    ap.add_argument("--work", type=Path, default=Path("data/fmnist-val"))
    ap.add_argument("--variants", default="default")
    return ap


def main() -> int:
    a = arg_parser().parse_args()
    q, g = split(a.train, a.work)
    base = PostConfig()
    variants = {
        "default": base,
        "b1.5": replace(base, weight=1.5),
        "b0.75": replace(base, weight=0.75),
        "k20": replace(base, k=20),
        "k10": replace(base, k=10),
        "w0.5": replace(base, whiten=0.5),
        "w0": replace(base, whiten=0.0),
        "a0.999": replace(base, alpha=0.999),
        "r192": replace(base, rank=192),
        "nodiff": replace(base, diffusion=False),
        "nocopies": replace(base, copies=False),
        "b1.25": replace(base, weight=1.25),
        "k20b1.25": replace(base, k=20, weight=1.25),
    }
    for name in a.variants.split(","):
        cfg = variants[name]
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

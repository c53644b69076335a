"""IVF-Flat against the sharded index's IVF-SQ8 codes on real search vectors (not synthetic ones).

``scripts/bench/scale_shards.py`` chose SQ8 on synthetic 128-d vectors; ``auto`` picks the sharded
index (SQ8) from 1M images, whose search vectors are 256-d (whitened codes + diffusion
coordinates). This builds both index types over an index's own search vectors with the product's
``ann.build`` / ``ann.tune`` (nprobe raised until recall@10 against exact search reaches 0.95 on a
sample) and prints, side by side: nprobe, recall@10, bytes per vector, build and query time.

    python scripts/research/codec_real.py --index indexes/fashion-mnist
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import simsearch
from simsearch import ann


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--types", default="ivf,sharded")
    a = ap.parse_args()
    index = simsearch.Index.open(a.index)
    vecs, ids = np.ascontiguousarray(index.vectors(), dtype=np.float32), index.ids()
    n, d = vecs.shape
    print(f"{n:,} search vectors of dimension {d} from {a.index}")
    print("| type | factory | nprobe | recall@10 | bytes/vector | build s | query ms (batch of up to 1000) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    q = vecs[np.random.default_rng(1).choice(n, min(n, 1000), replace=False)]
    for kind in a.types.split(","):
        spec = ann.choose(kind, n, d)
        t0 = time.perf_counter()
        built = ann.build(vecs, ids, spec)
        tuned = ann.tune(built, vecs, ids, spec)
        took = time.perf_counter() - t0
        ann.apply_params(built, tuned["params"])
        t0 = time.perf_counter()
        built.search(q, 10)
        ms = (time.perf_counter() - t0) * 1000 / len(q)
        with tempfile.TemporaryDirectory() as tmp:
            if kind == "sharded":
                from simsearch import shards

                shards.write(built, Path(tmp))
            else:
                import faiss

                faiss.write_index(built, str(Path(tmp) / "index.faiss"))
            size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        print(
            f"| {kind} | {tuned['factory']} | {tuned['params']['nprobe']} | {tuned['recall_at_10']:.3f} "
            f"| {size / n:.0f} | {took:.1f} | {ms:.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

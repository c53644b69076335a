#!/usr/bin/env python3
"""Peak memory of `simsearch index` against the number of images (issue 12, part 1).

Each build runs in its own process (``--child``), so each peak is that build's alone:

- *through embedding*: ``ru_maxrss`` of the indexing process when the embedding stage reports its
  last image (discover, plan, decode and embed: the stages that stream);
- *overall*: ``ru_maxrss`` at the end (also the post-processing fit, the FAISS build and the write,
  whose memory is that of the vectors and the FAISS index);
- *decode worker*: the largest ``ru_maxrss`` of the decode worker processes (RUSAGE_CHILDREN).

The corpora are the Fashion-MNIST train folder (60k PNGs) and a generated one of 5 variants of each of
its images (300k PNGs: each shifted by a pixel or two and darkened a little, so no two files are the
same), written under ``--scratch`` and deleted afterwards unless ``--keep``. Builds use a given model
(``--model``): nothing is trained, so the figures are the streaming pipeline's. ``--old-code DIR`` also
runs the indexer in DIR (a checkout of an older simsearch, e.g. the one before streaming) on the
``--old-sizes`` corpora for comparison (labelled "older checkout").

    python scripts/bench/scale_rss.py --model /work/main/indexes/fashion-mnist/models/<sha>.pt \\
        --fmnist data/fashion-mnist/train --sizes 60000,300000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1 << 20


def kib_to_mib(kib: int) -> float:
    return kib / 1024  # ru_maxrss is in KiB on Linux


def child(a: argparse.Namespace) -> None:
    """One build, in this process; prints a JSON line with its peaks."""
    from simsearch import indexer
    from simsearch.indexer import BuildOptions

    marks: dict[str, float] = {}

    def progress(stage: str, done: int, total: int, **kw) -> None:
        if stage == "embed" and done >= total:
            marks["embed_peak_mib"] = kib_to_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            print(f"embedded {total} images: peak RSS so far {marks['embed_peak_mib']:,.0f} MiB", file=sys.stderr)

    kw = dict(model=a.model, workers=a.workers, rebuild=True)
    if a.chunk:
        kw["chunk_size"] = a.chunk
    t0 = time.perf_counter()
    report = indexer.update(a.folder, a.index, BuildOptions.of(**kw), progress=progress)
    import simsearch

    info = simsearch.Index.open(a.index).info()
    out = {
        "dim": info["dim"],
        "search_dim": info["search_dim"],
        "images": report.total,
        "skipped": len(report.skipped),
        "seconds": round(time.perf_counter() - t0, 1),
        "timings": report.timings,
        "faiss": (report.faiss or {}).get("factory"),
        "peak_mib": kib_to_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "worker_peak_mib": kib_to_mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
        **marks,
    }
    print(json.dumps(out), flush=True)


def run_build(folder: Path, index: Path, model: str, code: Path, workers: int, chunk: int | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--folder", str(folder), "--index", str(index)]
    cmd += ["--model", model, "--workers", str(workers)] + (["--chunk", str(chunk)] if chunk else [])
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)  # its stderr: ours, as it goes
    if r.returncode != 0:
        raise SystemExit(f"build of {folder} failed (exit {r.returncode})")
    return json.loads(r.stdout.strip().splitlines()[-1])


def write_variants(src: Path, dst: Path, copies: int) -> int:
    """``copies`` variants of every PNG under ``src``: shifted by (k mod 3 − 1, k // 3 mod 3 − 1) px
    (edges repeated) and darkened by 2k %, k = 1..copies."""
    import numpy as np
    from PIL import Image

    files = sorted(src.rglob("*.png"))
    n = 0
    for k in range(1, copies + 1):
        dy, dx = k % 3 - 1, (k // 3) % 3 - 1
        if (dy, dx) == (0, 0):
            dy = 1
        for p in files:
            with Image.open(p) as im:
                a = np.asarray(im.convert("L"))
            a = np.pad(a, 2, mode="edge")[2 + dy : 2 + dy + a.shape[0], 2 + dx : 2 + dx + a.shape[1]]
            a = (a.astype(np.float32) * (1 - 0.02 * k)).astype(np.uint8)
            out = dst / f"v{k}" / p.parent.name / p.name
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a, "L").save(out)
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--index", help=argparse.SUPPRESS)
    ap.add_argument("--model", required=True, help="a saved model (simsearch train, or an index's models/<sha>.pt)")
    ap.add_argument("--fmnist", type=Path, default=Path("data/fashion-mnist/train"), help="Fashion-MNIST train PNGs")
    ap.add_argument("--sizes", default="60000,300000", help="corpus sizes: 60000 = the folder, k·60000 = k variants")
    ap.add_argument("--workers", type=int, default=0, help="decode processes (0 = one per core)")
    ap.add_argument("--chunk", type=int, default=None, help="images per streamed chunk (default: the indexer's)")
    ap.add_argument("--old-code", type=Path, help="also run the indexer of this checkout (its simsearch/)")
    ap.add_argument("--old-sizes", default="60000", help="the corpus sizes --old-code indexes")
    ap.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()), help="where generated images go")
    ap.add_argument("--keep", action="store_true", help="keep the generated images and indexes")
    a = ap.parse_args()
    if a.child:
        return child(a)

    here = Path(__file__).resolve().parents[2]
    work = Path(tempfile.mkdtemp(prefix="scale_rss-", dir=a.scratch))
    base_n = sum(1 for _ in a.fmnist.rglob("*.png"))
    rows = []
    try:
        for size in [int(s) for s in a.sizes.split(",")]:
            copies = max(1, round(size / base_n))
            if copies == 1:
                folder = a.fmnist
            else:
                folder = work / f"images-{size}"
                t0 = time.perf_counter()
                n = write_variants(a.fmnist, folder, copies)
                print(f"wrote {n} PNGs to {folder} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            runs = [("streaming (this checkout)", here)]
            if a.old_code and str(size) in a.old_sizes.split(","):
                runs.append((f"older checkout ({a.old_code.name})", a.old_code.resolve()))
            for label, code in runs:
                print(f"indexing {folder} with {label}", file=sys.stderr, flush=True)
                res = run_build(folder, work / "index", a.model, code, a.workers, a.chunk)
                shutil.rmtree(work / "index", ignore_errors=True)
                res["label"] = label
                rows.append(res)
                print(json.dumps(res), file=sys.stderr, flush=True)
            if copies > 1 and not a.keep:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(rows)


def report(rows: list[dict]) -> None:
    dim = 128
    print(
        "| code | images | vectors (N·128·4) | peak RSS through embedding | peak RSS overall | decode worker peak |"
        " wall (s) | stages (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        vec = r["images"] * dim * 4 / MIB
        stages = ", ".join(f"{k} {v:.0f}" for k, v in r["timings"].items())
        print(
            f"| {r['label']} | {r['images']:,} | {vec:,.0f} MiB | {r.get('embed_peak_mib', float('nan')):,.0f} MiB |"
            f" {r['peak_mib']:,.0f} MiB | {r['worker_peak_mib']:,.0f} MiB | {r['seconds']:.0f} | {stages} |"
        )
    for label in dict.fromkeys(r["label"] for r in rows):
        same = [r for r in rows if r["label"] == label]
        if len(same) < 2:
            continue
        lo, hi = min(same, key=lambda r: r["images"]), max(same, key=lambda r: r["images"])
        dn = hi["images"] - lo["images"]
        for key, what in (("embed_peak_mib", "through embedding"), ("peak_mib", "overall")):
            if key in lo and key in hi:
                per = (hi[key] - lo[key]) * MIB / dn
                print(f"\n{label}, growth {what}: {per:,.0f} bytes per extra image (its raw vector: {dim * 4} bytes)")
        if all("embed_peak_mib" in r for r in same):
            # what the peak through embedding leaves once each image's raw code and reconstruction
            # statistics (4·(D + 3) bytes: the vectors the build keeps) are taken off, at every size
            rest = ", ".join(f"{r['embed_peak_mib'] - r['images'] * (dim + 3) * 4 / MIB:,.0f}" for r in same)
            sizes = ", ".join(f"{r['images']:,}" for r in same)
            most = max(r["embed_peak_mib"] - r["images"] * (dim + 3) * 4 / MIB for r in same)
            print(
                f"{label}, bound through embedding: {most:,.0f} MiB + {(dim + 3) * 4} bytes per image"
                f" (peak less the vectors: {rest} MiB at {sizes} images)"
            )
        if all("search_dim" in r for r in same):
            # overall, the build holds each image's vectors three times at its peak (the FAISS build and
            # its recall check): the raw code and statistics, the search vector, and FAISS's copy of it
            per = (same[0]["dim"] + 3) * 4 + 2 * 4 * same[0]["search_dim"] + 8
            left = [r["peak_mib"] - r["images"] * per / MIB for r in same]
            rest = ", ".join(f"{x:,.0f}" for x in left)
            print(
                f"{label}, bound overall: {max(left):,.0f} MiB + {per:,} bytes per image (raw code and statistics,"
                f" search vector, FAISS's copy of it with its id; peak less those: {rest} MiB at {sizes} images)"
            )


if __name__ == "__main__":
    main()

"""Row 1: decode + preprocess throughput, simsearch's loader against a naive Pillow loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import faster, log, row, timeit, usable_cpus
from .context import Ctx


def naive_load(paths: list[Path], mode: str, size: int) -> int:
    from PIL import Image

    for p in paths:
        with Image.open(p) as im:
            np.asarray(im.convert(mode).resize((size, size)))
    return len(paths)


def library_load(paths: list[Path], pre, workers: int) -> int:
    from simsearch import pool

    bad = 0
    for _i, arr, _reason, _info in pool.decode_files(paths, pre, workers=workers):
        bad += arr is None
    return bad


def compare_loaders(key: str, label: str, paths: list[Path], pre, reps: int, source: str) -> list[dict]:
    mode = "L" if pre.channels == 1 else "RGB"
    n = len(paths)
    cores = usable_cpus()
    log(f"row {key}: decoding {n} {label} ({reps} reps × 3 loaders)")
    naive_load(paths, mode, pre.size)  # page cache warm for every loader
    t_naive = timeit(lambda i: naive_load(paths, mode, pre.size), reps)
    bad = library_load(paths, pre, 0)
    t_pool = timeit(lambda i: library_load(paths, pre, 0), reps)
    t_one = timeit(lambda i: library_load(paths, pre, 1), reps)
    shape = f"{pre.channels}×{pre.size}×{pre.size}"
    naive_what = f"naive loop: Image.open→convert('{mode}')→resize→asarray, 1 process"
    common = f"{n} files, {source}; → {shape}; page cache warm"
    failed = f"; {bad} files FAILED to decode" if bad else ""
    draft = ", JPEG draft" if pre.channels == 3 else ""
    return [
        row(key, f"{label}: {naive_what}", n / t_naive.median, "images/s", notes=common),
        row(
            key,
            f"{label}: simsearch decode_files(workers=0) = {cores} processes",
            n / t_pool.median,
            "images/s",
            "naive loop",
            faster(t_pool.median, t_naive.median),
            f"incl. stat + sha256 of every file, center-crop, bilinear{draft}{failed}",
        ),
        row(
            key,
            f"{label}: simsearch decode_files(workers=1), in-process",
            n / t_one.median,
            "images/s",
            "naive loop",
            faster(t_one.median, t_naive.median),
            "per-image cost of the library loader",
        ),
    ]


def row_decode(ctx: Ctx) -> list[dict]:
    from simsearch.preprocess import Preprocess

    pngs, source = ctx.pngs()
    rows = compare_loaders("1a", "28×28 gray PNG", pngs, Preprocess(28, 1), ctx.a.reps, source)
    rows += compare_loaders(
        "1b",
        "1920×1080 JPEG",
        ctx.jpegs(),
        Preprocess(64, 3),
        ctx.a.reps,
        "generated (gradients + blobs + noise), quality 90",
    )
    return rows

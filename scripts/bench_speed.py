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

The table goes to stdout (and ``--out``), progress to stderr. Nothing here asserts on a timing.

    python scripts/bench_speed.py                      # the full benchmark (quiet machine, ~30+ min on 2 cores)
    python scripts/bench_speed.py --quick              # smoke run, tiny sizes, < 2 min
    python scripts/bench_speed.py --skip 3,4,5 --n-vectors 200000 --out bench.md
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout even when simsearch is not installed

IDX_SOURCE = Path("/usr/share/datasets/fashion-mnist")  # Debian dataset-fashion-mnist
ROW_TITLES = {
    "1": "decode + preprocess",
    "2": "embedding",
    "3": "end-to-end index",
    "4": "warm query latency",
    "5": "cold command line",
    "6": "ANN on synthetic vectors",
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

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class Skip(Exception):
    """A row (or part of one) that cannot run here; the message goes into the table."""


# ---------------------------------------------------------------- measuring


@dataclass
class Timing:
    median: float  # seconds
    p99: float
    n: int


def timeit(fn: Callable[[int], Any], reps: int, warmup: int = 0) -> Timing:
    """Call ``fn(i)`` ``warmup`` times untimed, then ``reps`` times timed → median and p99 seconds."""
    for i in range(warmup):
        fn(i)
    ts = []
    for i in range(max(1, reps)):
        t0 = time.perf_counter()
        fn(i)
        ts.append(time.perf_counter() - t0)
    return Timing(float(np.median(ts)), float(np.percentile(ts, 99)), len(ts))


def row(
    key: str, what: str, value: float | None, unit: str, vs: str = "", ratio: float | None = None, notes: str = ""
) -> dict:
    """One table row. ``ratio``: speed relative to ``vs`` (> 1 = this one is faster)."""
    return {"row": key, "what": what, "value": value, "unit": unit, "vs": vs, "ratio": ratio, "notes": notes}


def faster(this_s: float, other_s: float) -> float | None:
    """Speed ratio of two durations (other / this): > 1 when ``this`` is faster."""
    return other_s / this_s if this_s > 0 else None


@contextlib.contextmanager
def single_thread():
    """One thread for FAISS (OpenMP) and BLAS, as simsearch searches single queries."""
    import faiss

    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            limits = contextlib.nullcontext()
        else:
            limits = threadpool_limits(1)
        with limits:
            yield
    finally:
        faiss.omp_set_num_threads(n)


def have_threadpoolctl() -> bool:
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def ms(seconds: float) -> str:
    return fmt(seconds * 1e3) + " ms"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{fmt(n)} {unit}"
        n /= 1024
    return f"{n} B"


# ---------------------------------------------------------------- corpora


def spread(items: list, n: int) -> list:
    """``n`` items evenly spaced over ``items`` (all of them if fewer)."""
    if n >= len(items):
        return list(items)
    return [items[int(i * len(items) / n)] for i in range(n)]


def write_synthetic_pngs(root: Path, n: int, seed: int) -> list[Path]:
    """28×28 grayscale PNGs of three shape classes (discs, squares, stripes) with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    paths = []
    for i in range(n):
        kind = ("disc", "square", "stripes")[i % 3]
        cx, cy = rng.uniform(9, 19, 2)
        r = rng.uniform(5, 9)
        if kind == "disc":
            m = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        elif kind == "square":
            m = (abs(xx - cx) < r) & (abs(yy - cy) < r)
        else:
            m = ((yy + rng.integers(0, 6)) // 3) % 2 == 0
        img = np.clip(m * rng.uniform(150, 255) + rng.normal(0, 12, (28, 28)), 0, 255).astype(np.uint8)
        p = root / kind / f"{i:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        _save(img, p)
        paths.append(p)
    return paths


def write_synthetic_jpegs(root: Path, n: int, seed: int, w: int = 1920, h: int = 1080) -> list[Path]:
    """Photo-like RGB JPEGs (quality 90): colour gradients + smooth blobs + fine noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    gx = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    gy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    paths = []
    for i in range(n):
        a, b, c = (rng.uniform(0, 255, 3).astype(np.float32) for _ in range(3))
        base = (a * gx + b * gy) * 0.5 + c * 0.5  # (h, w, 3)
        blobs = rng.uniform(0, 255, (9, 16, 3)).astype(np.uint8)
        blobs = np.asarray(Image.fromarray(blobs).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
        fine = rng.integers(-8, 9, (h, w, 3), dtype=np.int16).astype(np.float32)
        img = np.clip(0.55 * base + 0.45 * blobs + fine, 0, 255).astype(np.uint8)
        p = root / f"{i:04d}.jpg"
        Image.fromarray(img, "RGB").save(p, quality=90)
        paths.append(p)
    return paths


def _save(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path)


@dataclass
class Corpus:
    train: Path
    test: Path | None
    label: str


# ---------------------------------------------------------------- shared, lazily built state


class Ctx:
    """Options, the temporary folder, and what several rows share (built once, on first use)."""

    def __init__(self, args: argparse.Namespace):
        self.a = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_speed_", dir=args.tmp))
        self._cache: dict[str, Any] = {}
        self.results: dict[str, Any] = {}  # numbers one row hands to a later one

    def once(self, name: str, fn: Callable[[], Any]) -> Any:
        if name not in self._cache:
            try:
                self._cache[name] = fn()
            except Skip as e:
                self._cache[name] = e
        got = self._cache[name]
        if isinstance(got, Skip):
            raise got
        return got

    # -- Fashion-MNIST (or a small stand-in in --quick mode)
    def fmnist(self) -> Corpus:
        return self.once("fmnist", self._fmnist)

    def _fmnist(self) -> Corpus:
        src = Path(self.a.fmnist)
        test = src.parent / "test"
        if self.a.fmnist_subset is None:
            if not src.is_dir():
                raise Skip(
                    f"{src} not found (write it with `python scripts/fetch_fashion_mnist.py`, or pass --fmnist DIR)"
                )
            return Corpus(src, test if test.is_dir() else None, f"{src}")
        n_train, n_test = self.a.fmnist_subset
        out = self.tmp / "fmnist"
        if src.is_dir():
            from simsearch.discover import discover

            for split_src, n in ((src, n_train), (test, n_test)):
                if not split_src.is_dir():
                    continue
                files = spread(discover(split_src)[0], n)
                for p in files:
                    dst = out / split_src.name / p.relative_to(split_src)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, dst)
            label = f"{n_train}+{n_test} files copied from {src}"
        elif IDX_SOURCE.is_dir():
            log(f"writing {n_train}+{n_test} Fashion-MNIST PNGs from {IDX_SOURCE}")
            cmd = [
                sys.executable,
                str(ROOT / "scripts" / "fetch_fashion_mnist.py"),
                "--source",
                str(IDX_SOURCE),
                "--out",
                str(out),
                "--limit-train",
                str(n_train),
                "--limit-test",
                str(n_test),
            ]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            label = f"first {n_train}+{n_test} Fashion-MNIST images (from {IDX_SOURCE})"
        else:
            write_synthetic_pngs(out / "train", n_train, seed=1)
            write_synthetic_pngs(out / "test", n_test, seed=2)
            label = f"{n_train}+{n_test} synthetic 28×28 PNGs (no Fashion-MNIST here)"
        return Corpus(out / "train", out / "test" if (out / "test").is_dir() else None, label)

    def pngs(self) -> tuple[list[Path], str]:
        """≈ decode_n 28×28 grayscale PNGs: Fashion-MNIST if present, else generated."""

        def make():
            from simsearch.discover import discover

            try:
                corpus = self.fmnist()
            except Skip:
                corpus = None
            if corpus is not None:
                files = discover(corpus.train)[0]
                return spread(files, self.a.decode_n), f"Fashion-MNIST train ({corpus.label})"
            files = write_synthetic_pngs(self.tmp / "png", self.a.decode_n, seed=3)
            return files, "generated 28×28 grayscale PNGs (Fashion-MNIST not found)"

        return self.once("pngs", make)

    def jpegs(self) -> list[Path]:
        def make():
            log(f"generating {self.a.jpeg_n} 1920×1080 JPEGs")
            return write_synthetic_jpegs(self.tmp / "jpeg", self.a.jpeg_n, seed=4)

        return self.once("jpegs", make)

    # -- the index of row 3 (trained here), and the train+test gallery of rows 4 and 5 (same model)
    def build_options(self, **kw):
        from simsearch.indexer import BuildOptions

        if self.a.train_budget is not None:
            kw.setdefault("time_budget", self.a.train_budget)
        return BuildOptions(**kw)

    def train_index(self) -> dict:
        def make():
            from simsearch import indexer

            corpus = self.fmnist()
            idx = self.tmp / "index-train"
            # --model: reuse a trained model (rows 4-5 without retraining; row 3 then measures no training)
            opts = self.build_options(**({"model": self.a.model} if self.a.model else {}))
            budget = opts.time_budget if opts.time_budget is not None else "default"
            log(f"indexing {corpus.train} → {idx} (training budget {budget} s)")
            t0 = time.perf_counter()
            report = indexer.update(corpus.train, idx, opts)
            return {"dir": idx, "report": report, "wall": time.perf_counter() - t0, "options": opts, "corpus": corpus}

        return self.once("train_index", make)

    def gallery(self) -> dict:
        def make():
            from simsearch import indexer, store

            built = self.train_index()
            corpus: Corpus = built["corpus"]
            sha = store.read_meta(built["dir"])["model"]["sha256"]
            model_file = store.model_path(built["dir"], sha)
            root = corpus.train.parent if corpus.test is not None else corpus.train
            idx = self.tmp / "index-gallery"
            log(f"indexing the gallery {root} → {idx} with the row-3 model (no training)")
            t0 = time.perf_counter()
            report = indexer.update(root, idx, self.build_options(model=str(model_file)))
            return {
                "dir": idx,
                "report": report,
                "wall": time.perf_counter() - t0,
                "root": root,
                "corpus": corpus,
                "model": model_file,
            }

        return self.once("gallery", make)

    def new_images(self, n: int) -> list:
        """``n`` images that are not in any index: mirrored test (or train) images, loaded as PIL."""
        from PIL import Image, ImageOps

        from simsearch.discover import discover

        corpus = self.fmnist()
        files = spread(discover(corpus.test or corpus.train)[0], n)
        out = []
        for p in files:
            with Image.open(p) as im:
                out.append(ImageOps.mirror(im.convert("L")))
        return out

    def cleanup(self) -> None:
        if self.a.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------- row 1: decode + preprocess


def naive_load(paths: list[Path], mode: str, size: int) -> int:
    from PIL import Image

    for p in paths:
        with Image.open(p) as im:
            np.asarray(im.convert(mode).resize((size, size)))
    return len(paths)


def library_load(paths: list[Path], pre, workers: int) -> int:
    from simsearch.pool import decode_files

    bad = 0
    for _i, arr, _reason, _info in decode_files(paths, pre, workers=workers):
        bad += arr is None
    return bad


def compare_loaders(key: str, label: str, paths: list[Path], pre, reps: int, source: str) -> list[dict]:
    from simsearch.pool import _cpu_count

    mode = "L" if pre.channels == 1 else "RGB"
    n = len(paths)
    cores = _cpu_count()
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


# ---------------------------------------------------------------- row 2: embedding


def row_embed(ctx: Ctx) -> list[dict]:
    import torch

    from simsearch import embed, train
    from simsearch import model as model_mod

    objective = train.TrainConfig().objective
    cfg = train.model_config_for(objective, image_size=28, channels=1)
    n, reps = ctx.a.embed_n, ctx.a.reps
    pixels = np.random.default_rng(0).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    what = f"default '{objective}' model 1×28×28 → {cfg.latent_dim}-d (untrained)"
    rows = []
    model = model_mod.build(cfg).eval()
    n_params = sum(p.numel() for p in model.encoder.parameters())
    log(f"row 2: embedding {n} images on cpu ({reps} reps)")
    cpu = timeit(lambda i: embed.embed(model, pixels, "cpu"), reps, warmup=1)
    bs = embed.default_batch_size
    rows.append(
        row(
            "2",
            f"embed.embed on cpu, {what}, {n} images",
            n / cpu.median,
            "images/s",
            notes=f"batch {bs(torch.device('cpu'))}, {torch.get_num_threads()} torch threads, "
            f"encoder {n_params / 1e6:.2f} M params; 1 warm-up call",
        )
    )
    from simsearch.views import tta_views_for

    views = tta_views_for(28)
    log(f"row 2: embedding {n} images on cpu with the default {len(views)} test-time views ({reps} reps)")
    tta = timeit(lambda i: embed.embed(model, pixels, "cpu", views=views), reps, warmup=1)
    rows.append(
        row(
            "2",
            f"… the same with simsearch's default {len(views)} test-time views (index default)",
            n / tta.median,
            "images/s",
            "one view",
            faster(tta.median, cpu.median),
            f"{len(views)} encoder passes per image (the image and its 1-px shifts), codes averaged; "
            "--no-tta gives the one-view figure",
        )
    )
    rows += numpy_encoder_rows(ctx, model, pixels, cpu.median / n)
    if not torch.cuda.is_available():
        rows.append(row("2", f"embed.embed on cuda, {what}", None, "images/s", notes="skipped: CUDA not available"))
        return rows
    gpu_model = model_mod.build(cfg)
    log(f"row 2: embedding {n} images on cuda ({reps} reps)")
    gpu = timeit(lambda i: embed.embed(gpu_model, pixels, "cuda"), max(reps, 3), warmup=1)
    rows.append(
        row(
            "2",
            f"embed.embed on cuda, {what}, {n} images",
            n / gpu.median,
            "images/s",
            "embed.embed on cpu",
            faster(gpu.median, cpu.median),
            f"batch {bs(torch.device('cuda'))}, {torch.cuda.get_device_name(0)}, autocast; incl. host→device copies",
        )
    )
    return rows


def numpy_encoder_rows(ctx: Ctx, model, pixels: np.ndarray, torch_s_per_image: float) -> list[dict]:
    """The torch-free encoder simsearch uses for small CPU query batches, next to torch."""
    try:
        from simsearch import numpy_encoder
    except ImportError:
        return []
    from simsearch import embed

    path = ctx.tmp / "encoder.npz"
    path.write_bytes(numpy_encoder.export(model))
    enc = numpy_encoder.NumpyEncoder(path)
    reps = ctx.a.reps
    batch = pixels[:256]
    log(f"row 2: numpy encoder, batch of {len(batch)} and single images")
    t_np = timeit(lambda i: enc(batch), reps, warmup=1)
    err = float(np.abs(enc(batch[:8]) - embed.embed(model, batch[:8], "cpu")).max())
    rows = [
        row(
            "2",
            f"numpy_encoder (simsearch's CPU query encoder), batch of {len(batch)}",
            len(batch) / t_np.median,
            "images/s",
            "embed.embed on cpu",
            faster(t_np.median / len(batch), torch_s_per_image),
            f"max |numpy − torch| = {err:.2g}",
        )
    ]
    n1 = max(10, ctx.a.single // 3)
    one_t = timeit(lambda i: embed.embed(model, pixels[i : i + 1], "cpu"), n1, warmup=2)
    one_np = timeit(lambda i: enc(pixels[i : i + 1]), n1, warmup=2)
    rows.append(
        row(
            "2",
            "one image: embed.embed on cpu (torch)",
            one_t.median * 1e3,
            "ms p50",
            notes=f"p99 {ms(one_t.p99)}, n={one_t.n}",
        )
    )
    rows.append(
        row(
            "2",
            "one image: numpy_encoder",
            one_np.median * 1e3,
            "ms p50",
            "torch, one image",
            faster(one_np.median, one_t.median),
            f"p99 {ms(one_np.p99)}, n={one_np.n}",
        )
    )
    return rows


# ---------------------------------------------------------------- row 3: end-to-end index


def row_index(ctx: Ctx) -> list[dict]:
    from simsearch import indexer

    built = ctx.train_index()
    rep, wall, corpus = built["report"], built["wall"], built["corpus"]
    n = rep.added
    t = rep.timings
    trained = rep.trained or {}
    budget = built["options"].time_budget
    if budget is None:
        from simsearch.train import TrainConfig

        budget = TrainConfig().time_budget
    key = "3"
    rows = [
        row(
            key,
            f"simsearch index {corpus.train.name}/ ({n} images, {corpus.label}): total wall",
            wall,
            "s",
            notes=f"library indexer.update, default options"
            f"{'' if ctx.a.train_budget is None else f' except time_budget={ctx.a.train_budget:g}'}; "
            f"{len(rep.skipped)} skipped; n=1",
        )
    ]
    stage_notes = {
        "decode": lambda s: f"{n / s:,.0f} images/s" if s else "",
        "train": lambda s: (
            f"{trained.get('epochs')} epochs, stopped by {trained.get('stopped_by')}, objective "
            f"{trained.get('objective')}; time budget {fmt(budget)} s, "
            f"training loop {fmt(trained.get('seconds'))} s"
        ),
        "embed": lambda s: f"{n / s:,.0f} images/s" if s else "",
        "write": lambda s: "mean, FAISS build (+ tune if ivf/hnsw), manifest, fsync, atomic switch",
    }
    for stage in ("discover", "decode", "train", "embed", "write"):
        s = t.get(stage)
        if s is None:
            continue
        note = stage_notes.get(stage, lambda s: "")(s)
        share = f"{100 * s / wall:.0f}% of total"
        rows.append(row(key, f"  ↳ {stage}", s, "s", notes=share + (f"; {note}" if note else "")))
    other = wall - sum(t.values())
    rows.append(
        row(
            key,
            "  ↳ other (probe, model choice/save, diff, …)",
            other,
            "s",
            notes=f"{100 * other / wall:.0f}% of total",
        )
    )

    log(f"row 3: unchanged re-run ({ctx.a.reps} reps)")
    reports = []
    nop = timeit(lambda i: reports.append(indexer.update(corpus.train, built["dir"], built["options"])), ctx.a.reps)
    last = reports[-1]
    verdict = (
        "nothing written"
        if (last.added, last.updated, last.removed) == (0, 0, 0)
        else f"NOT a no-op: added {last.added}, updated {last.updated}, removed {last.removed}"
    )
    stages = ", ".join(f"{k} {v:.2f}" for k, v in last.timings.items())
    rows.append(
        row(
            key,
            "second, unchanged run (incremental no-op)",
            nop.median,
            "s",
            "first run",
            faster(nop.median, wall),
            f"{verdict}; stages (s): {stages}; median of {nop.n}",
        )
    )
    return rows


# ---------------------------------------------------------------- row 4: warm query latency


def row_query(ctx: Ctx) -> list[dict]:
    import simsearch

    g = ctx.gallery()
    rep = g["report"]
    t = rep.timings
    rows = [
        row(
            "4",
            f"build the gallery index ({rep.total} images: {g['root'].name}/, existing model via --model)",
            g["wall"],
            "s",
            notes="stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in t.items()) + "; n=1",
        )
    ]
    index = simsearch.Index.open(g["dir"])
    n_single, n_batches, k = ctx.a.single, ctx.a.batches, 10
    need = max(n_single, 100 * min(n_batches, 10))
    rng = np.random.default_rng(0)
    ids = [int(x) for x in rng.choice(index.ids(), min(need, len(index)), replace=False)]
    root, paths = index.root, index.paths()
    by_path = [root / paths[i] for i in rng.choice(len(paths), min(need, len(paths)), replace=False)]
    pil = ctx.new_images(min(need, 1000))
    kinds = [
        ("indexed id", ids, "stored vector, no encoding"),
        ("indexed path", by_path, "stat + stored vector, no encoding"),
        ("new image (PIL, mirrored test image)", pil, "preprocess + encode: " + query_encoder(index, 1)),
    ]
    for item in (ids[0], by_path[0], pil[0]):  # load the model, page in the index
        index.query(item, k=k)
    log(f"row 4: {n_single} single queries and {n_batches} batches of 100, per kind, on {len(index)} images")
    by_id: Timing | None = None  # the cheapest kind: the comparison for the others
    for name, items, note in kinds:
        single = timeit(lambda i: index.query(items[i % len(items)], k=k), n_single)
        batch = timeit(lambda i: index.query_batch(_window(items, i, 100), k=k), n_batches)
        vs, ratio = ("", None) if by_id is None else ("by indexed id", faster(single.median, by_id.median))
        rows.append(
            row(
                "4",
                f"Index.query by {name}, k={k}",
                single.median * 1e3,
                "ms p50",
                vs,
                ratio,
                f"p99 {ms(single.p99)}, n={single.n}; {note}",
            )
        )
        by_id = by_id or single
        rows.append(
            row(
                "4",
                f"Index.query_batch of 100 by {name}",
                batch.median * 1e3,
                "ms p50 / batch",
                "100 single queries",
                faster(batch.median, 100 * single.median),
                f"{fmt(batch.median * 1e3 / 100)} ms/query; p99 {ms(batch.p99)}, n={batch.n}"
                + (f"; encode: {query_encoder(index, 100)}" if items is pil else ""),
            )
        )
    faiss_kind = index.meta["faiss"]["factory"]
    rows[0]["notes"] += f"; FAISS {faiss_kind}; device {index.device}"
    ctx.results["warm_query"] = {name: r["value"] for (name, _, _), r in zip(kinds, rows[1::2])}
    return rows


def query_encoder(index, batch: int) -> str:
    """Which encoder ``Index`` uses for a query batch of this size (numpy for small CPU batches, else torch)."""
    limit = getattr(type(index), "NUMPY_MAX_BATCH", 0)
    try:
        numpy_ok = index.device in ("auto", "cpu") and batch <= limit and index._numpy_encoder() is not None
    except Exception:
        numpy_ok = False
    return "numpy encoder" if numpy_ok else f"torch (device {index.device})"


def _window(items: list, i: int, size: int) -> list:
    start = (i * size) % len(items)
    out = items[start : start + size]
    while len(out) < size:
        out += items[: size - len(out)]
    return out


# ---------------------------------------------------------------- row 5: cold command line


def simsearch_command() -> list[str]:
    exe = Path(sys.executable).parent / "simsearch"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "simsearch"]


def imports_torch(cli_args: list[str]) -> str:
    """Whether ``simsearch CLI_ARGS`` imports torch (an extra, untimed run of the same command)."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write('\\nTORCH-LOADED=%d\\n' % ('torch' in sys.modules)))\n"
        "from simsearch.cli import main\n"
        "sys.argv = ['simsearch'] + sys.argv[1:]\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *cli_args], capture_output=True, text=True)
    return "yes" if "TORCH-LOADED=1" in r.stderr else "no" if "TORCH-LOADED=0" in r.stderr else "unknown"


def row_cold_cli(ctx: Ctx) -> list[dict]:
    g = ctx.gallery()
    cmd = simsearch_command()
    new_png = ctx.tmp / "new-query.png"
    ctx.new_images(1)[0].save(new_png)
    from simsearch import store

    snap = store.read(g["dir"], load_faiss=False)
    indexed_png = Path(snap.meta["corpus_root"]) / snap.entries[len(snap.entries) // 2].path
    cases = [
        ("simsearch --help", cmd + ["--help"], "help"),
        (
            "simsearch query NEW.png --index IDX (not indexed: loads the model, encodes)",
            cmd + ["query", str(new_png), "--index", str(g["dir"])],
            "new image (PIL, mirrored test image)",
        ),
        (
            "simsearch query INDEXED.png --index IDX (stored vector reused)",
            cmd + ["query", str(indexed_png), "--index", str(g["dir"])],
            "indexed path",
        ),
    ]
    rows = []
    warm = ctx.results.get("warm_query", {})
    for what, argv, warm_kind in cases:
        log(f"row 5: {what} × {ctx.a.cold_reps}")

        def run(_i, argv=argv):
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0 or not r.stdout.strip():
                raise RuntimeError(f"{shlex.join(argv)} failed (rc {r.returncode}): {r.stderr.strip()[-300:]}")

        t = timeit(run, ctx.a.cold_reps, warmup=1)
        note = f"p99 {ms(t.p99)}, median of {t.n} (+1 untimed warm-up); new process each, page cache warm"
        note += f"; imports torch: {imports_torch(argv[len(cmd) :])}"
        if warm_kind in warm:
            note += f"; {t.median * 1e3 / warm[warm_kind]:,.0f}× the warm library query (row 4)"
        rows.append(row("5", what, t.median * 1e3, "ms", notes=note))
    rows[0]["notes"] += f"; command: {shlex.join(cmd)}"
    return rows


# ---------------------------------------------------------------- row 6: ANN on synthetic vectors


def make_vectors(n: int, n_queries: int, d: int, n_clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised float32 vectors from a realistic-ish embedding distribution, and held-out queries.

    ``n_clusters`` Gaussian clusters grouped under √n_clusters super-clusters (classes → sub-classes);
    each cluster is elongated along its own random 12-d subspace (low intrinsic dimension, so the nearest
    neighbours are the genuinely closest points of the same cluster) plus weak isotropic noise; log-normal
    cluster sizes. Queries are fresh draws from the same clusters.
    """
    rng = np.random.default_rng(seed)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    r, iso = 12, 0.06
    n_super = max(4, round(math.sqrt(n_clusters)))
    supers = unit(rng.standard_normal((n_super, d)))
    centres = unit(supers[rng.integers(0, n_super, n_clusters)] + 0.7 * unit(rng.standard_normal((n_clusters, d))))
    weights = rng.lognormal(0.0, 1.0, n_clusters)
    weights /= weights.sum()
    spreads = rng.uniform(0.2, 0.4, n_clusters) / np.sqrt(np.sum(1.0 / np.arange(1, r + 1)))
    axes = np.sqrt(1.0 / np.arange(1, r + 1))  # decaying variance along the cluster's subspace

    bases = unit(rng.standard_normal((n_clusters, r, d))) * axes[None, :, None]

    def draw(m: int) -> np.ndarray:
        labels = rng.choice(n_clusters, m, p=weights)
        out = np.empty((m, d), np.float32)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=n_clusters)
        start = 0
        for c in np.flatnonzero(counts):
            rows_ = order[start : start + counts[c]]
            start += counts[c]
            z = rng.standard_normal((len(rows_), r)) * spreads[c]
            out[rows_] = centres[c] + z @ bases[c] + rng.standard_normal((len(rows_), d)) * (iso / math.sqrt(d))
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    return draw(n), draw(n_queries)


def numpy_search(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k by dot product (= cosine on normalised vectors), chunked to ≤ 128 MB of scores."""
    n = len(x)
    out = np.empty((len(q), k), np.int64)
    step = max(1, int(128e6 // (4 * n)))
    for s in range(0, len(q), step):
        scores = q[s : s + step] @ x.T
        top = np.argpartition(scores, n - k, axis=1)[:, n - k :]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[s : s + step] = np.take_along_axis(top, order, axis=1)
    return out


def faiss_effective_params(index) -> str:
    import faiss

    try:
        return f"nprobe={faiss.extract_index_ivf(index).nprobe}"
    except RuntimeError:
        pass
    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    if hasattr(inner, "hnsw"):
        return f"efSearch={inner.hnsw.efSearch}"
    return "exact"


def _ball_tree_child(x_path: str, q_path: str, k: int, n_single: int, out_path: str) -> None:
    """In a separate (spawned) process so that a slow ball tree can be stopped at the time limit."""
    from sklearn.neighbors import NearestNeighbors

    x, q = np.load(x_path, mmap_mode="r"), np.load(q_path)
    t0 = time.perf_counter()
    nn = NearestNeighbors(n_neighbors=k, algorithm="ball_tree", metric="euclidean").fit(x)
    build = time.perf_counter() - t0
    ids, times = [], []
    for i in range(n_single):
        t0 = time.perf_counter()
        got = nn.kneighbors(q[i : i + 1], return_distance=False)
        times.append(time.perf_counter() - t0)
        ids.append(got[0].tolist())
    mem = sum(a.nbytes for a in nn._tree.get_arrays() if isinstance(a, np.ndarray))
    Path(out_path).write_text(json.dumps({"build": build, "times": times, "ids": ids, "bytes": int(mem)}))


def row_ann(ctx: Ctx) -> list[dict]:
    import faiss

    from simsearch import ann

    a = ctx.a
    n, nq, d, k = a.n_vectors, a.n_queries, 128, 10
    n_clusters = a.clusters or min(2000, max(8, n // 500))
    log(f"row 6: generating {n:,} + {nq} vectors ({n_clusters} clusters)")
    x, q = make_vectors(n, nq, d, n_clusters, seed=0)
    threads = faiss.omp_get_max_threads()
    data_note = f"{n:,} × {d}-d, {n_clusters} clusters, {nq} held-out queries"
    rows: list[dict] = []
    truth: np.ndarray | None = None
    ref_single: float | None = None  # numpy brute force, one query

    def add(
        name: str,
        build_s: float,
        nbytes: int | None,
        single: Timing,
        batch: Timing | None,
        got: np.ndarray,
        q_rows: int,
        extra: str = "",
    ) -> None:
        nonlocal ref_single
        rec = ann.recall(got, truth[:q_rows])
        if ref_single is None:
            ref_single = single.median
        per_query = f"batch of {nq}: {fmt(batch.median / nq * 1e3)} ms/query ({threads} threads)" if batch else ""
        parts = [
            f"build {fmt(build_s)} s",
            f"size {human_bytes(nbytes)}" if nbytes is not None else "size n/a",
            f"p99 {ms(single.p99)} (n={single.n}, 1 thread)",
            per_query or "no batch run",
            f"recall@10 {rec:.3f}" + ("" if q_rows == nq else f" on {q_rows} queries"),
        ]
        rows.append(
            row(
                "6",
                name,
                single.median * 1e3,
                "ms p50 / query",
                "numpy brute force" if rows else "",
                faster(single.median, ref_single) if rows else None,
                "; ".join(parts) + (f"; {extra}" if extra else ""),
            )
        )

    def measure(search: Callable[[np.ndarray], np.ndarray], n_single: int, batch_reps: int):
        search(q[:1])  # warm-up
        with single_thread():
            single = timeit(lambda i: search(q[i % nq : i % nq + 1]), n_single)
        got = []
        batch = timeit(lambda i: got.append(search(q)), batch_reps)
        return single, batch, got[0]

    # exact references first: numpy brute force (ratio base) and FAISS flat (the ground truth)
    log(f"row 6: numpy brute force ({a.slow_single} single queries, {a.reps} batch reps)")
    exact = numpy_search(x, q, k)
    truth = exact
    single, batch, got = measure(lambda qq: numpy_search(x, qq, k), a.slow_single, a.reps)
    unlimited = "" if have_threadpoolctl() else "; BLAS threads NOT limited for single queries (no threadpoolctl)"
    add("numpy brute force (dot product + argpartition)", 0.0, x.nbytes, single, batch, got, nq, data_note + unlimited)

    for kind in ("flat", "ivf", "hnsw", "ivfpq"):
        if kind not in a.ann_types:
            why = " (the --quick default: PQ training takes minutes)" if kind == "ivfpq" and a.quick else ""
            rows.append(
                row(
                    "6",
                    f"simsearch {kind}",
                    None,
                    "ms p50 / query",
                    notes=f"skipped: not in --ann-types {','.join(sorted(a.ann_types))}{why}",
                )
            )
            continue
        spec = ann.choose(kind, n, d)
        is_auto = ann.choose("auto", n, d)["factory"] == spec["factory"]
        log(f"row 6: {kind} {spec['factory']}: build + tune")
        t0 = time.perf_counter()
        index = ann.build(x, np.arange(n, dtype=np.int64), spec)
        spec = ann.tune(index, x, np.arange(n, dtype=np.int64), spec)
        build_s = time.perf_counter() - t0
        nbytes = len(faiss.serialize_index(index))
        n_single = a.slow_single if kind == "flat" else a.single
        log(f"row 6: {kind}: {n_single} single queries, {a.reps} batch reps")
        single, batch, got = measure(lambda qq: index.search(qq, k)[1], n_single, a.reps)
        if kind == "flat":
            truth = got  # FAISS exact search is the reference for recall
            agree = ann.recall(exact, truth)
            m = min(200, nq, n)
            scores = index.search(q[:m], k)[0]
            rand = float(np.mean(np.sum(x[:m] * q[:m], axis=1)))
            extra = (
                f"ground truth; numpy agrees {agree:.4f}; cos top-1 {scores[:, 0].mean():.2f}, "
                f"top-10 {scores[:, -1].mean():.2f}, random pair {rand:.2f}"
            )
        else:
            extra = (
                f"tuned {spec.get('params')} → recall@10 {spec.get('recall_at_10')} on "
                f"{spec.get('recall_sample')} indexed vectors; in effect: {faiss_effective_params(index)}"
            )
        label = "FAISS flat, exact" if kind == "flat" else f"simsearch {kind}"
        auto = ", = auto" if is_auto else ""
        add(f"{label} ({spec['factory']}{auto})", build_s, nbytes, single, batch, got, nq, extra)
        del index
        gc.collect()

    try:
        from sklearn.neighbors import NearestNeighbors
    except ImportError:
        rows.append(
            row(
                "6",
                "scikit-learn NearestNeighbors",
                None,
                "",
                notes="skipped: scikit-learn not installed (pip install scikit-learn)",
            )
        )
        return rows
    log(f"row 6: scikit-learn brute cosine ({a.slow_single} single queries, {a.reps} batch reps)")
    t0 = time.perf_counter()
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine").fit(x)
    build_s = time.perf_counter() - t0
    single, batch, got = measure(lambda qq: nn.kneighbors(qq, return_distance=False), a.slow_single, a.reps)
    add(
        "scikit-learn NearestNeighbors(brute, cosine)",
        build_s,
        None,
        single,
        batch,
        got,
        nq,
        "holds a reference to the array",
    )
    del nn
    rows.append(ball_tree(ctx, x, q, k, add))
    return [r for r in rows if r is not None]


def ball_tree(ctx: Ctx, x: np.ndarray, q: np.ndarray, k: int, add) -> dict | None:
    """sklearn ball tree (euclidean on the normalised vectors = same ranking as cosine), time-limited."""
    import multiprocessing

    a = ctx.a
    n_single = a.slow_single
    name = "scikit-learn NearestNeighbors(ball_tree, euclidean)"
    x_path, q_path, out_path = ctx.tmp / "x.npy", ctx.tmp / "q.npy", ctx.tmp / "ball_tree.json"
    np.save(x_path, x)
    np.save(q_path, q)
    limit = a.ball_tree_timeout
    log(f"row 6: scikit-learn ball tree in a child process ({n_single} single queries, limit {limit:g} s)")
    proc = multiprocessing.get_context("spawn").Process(
        target=_ball_tree_child, args=(str(x_path), str(q_path), k, n_single, str(out_path))
    )
    proc.start()
    proc.join(limit)
    if proc.is_alive():
        proc.terminate()
        proc.join(10)
        return row(
            "6",
            name,
            None,
            "ms p50 / query",
            notes=f"skipped: build + {n_single} queries did not finish within {limit:g} s (--ball-tree-timeout)",
        )
    if proc.exitcode != 0 or not out_path.exists():
        return row("6", name, None, "", notes=f"failed: child exited with {proc.exitcode}")
    res = json.loads(out_path.read_text())
    ts = np.asarray(res["times"])
    single = Timing(float(np.median(ts)), float(np.percentile(ts, 99)), len(ts))
    for p in (x_path, q_path):
        p.unlink(missing_ok=True)
    add(
        name,
        res["build"],
        res["bytes"],
        single,
        None,
        np.asarray(res["ids"]),
        n_single,
        "single queries only (separate process, 1 thread)",
    )
    return None


# ---------------------------------------------------------------- table, machine, main

ROWS: dict[str, Callable[[Ctx], list[dict]]] = {
    "1": row_decode,
    "2": row_embed,
    "3": row_index,
    "4": row_query,
    "5": row_cold_cli,
    "6": row_ann,
}


def render(rows: list[dict]) -> str:
    head = "| row | measurement | value | unit | compared with | speed vs comparison | notes |"
    lines = [head, "|---|---|--:|---|---|--:|---|"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3g}×" if r["ratio"] < 10 else f"{r['ratio']:,.0f}×"
        cells = [r["row"], r["what"], fmt(r["value"]), r["unit"], r["vs"], ratio, r["notes"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def machine_info() -> list[str]:
    import faiss
    import PIL
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import sklearn

        skl = f"scikit-learn {sklearn.__version__}"
    except ImportError:
        skl = "scikit-learn not installed"
    if torch.cuda.is_available():
        device = f"CUDA: {torch.cuda.get_device_name(0)} (simsearch device 'auto' → cuda)"
    else:
        device = "CPU only (no CUDA; simsearch device 'auto' → cpu)"
    import simsearch

    return [
        f"- machine: {platform.node()}, {platform.system()} {platform.machine()}, {cpu}, "
        f"{usable} usable CPUs (os.cpu_count {os.cpu_count()}){mem}",
        f"- software: Python {platform.python_version()}, simsearch {simsearch.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), faiss {faiss.__version__} "
        f"({faiss.omp_get_max_threads()} OpenMP threads), "
        f"numpy {np.__version__}, Pillow {PIL.__version__}, {skl}",
        f"- device: {device}",
    ]


def loadavg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def busy_warning(load: float | None) -> list[str]:
    """A warning line when other processes kept the CPUs busy before we started (multi-threaded timings
    then swing wildly). ``load``: the 1-minute load average at start."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    if load is None or load <= 0.5 * cpus:
        return []
    return [
        f"- **WARNING: busy machine** (load {load:.1f} on {cpus} CPUs before the benchmark started): "
        "multi-threaded steps (torch, FAISS, BLAS) can take 10-100× longer while their threads wait for a core; "
        "do not compare these numbers"
    ]


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

"""What several rows share: options, the temporary folder, and corpora and indexes built once, on first use."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import Skip, log
from .corpora import Corpus, spread, write_synthetic_jpegs, write_synthetic_pngs

SCRIPTS = Path(__file__).resolve().parent.parent
IDX_SOURCE = Path("/usr/share/datasets/fashion-mnist")  # Debian dataset-fashion-mnist


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
            from simsearch import discover

            for split_src, n in ((src, n_train), (test, n_test)):
                if not split_src.is_dir():
                    continue
                files = spread(discover.discover(split_src)[0], n)
                for p in files:
                    dst = out / split_src.name / p.relative_to(split_src)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, dst)
            label = f"{n_train}+{n_test} files copied from {src}"
        elif IDX_SOURCE.is_dir():
            log(f"writing {n_train}+{n_test} Fashion-MNIST PNGs from {IDX_SOURCE}")
            cmd = [
                sys.executable,
                str(SCRIPTS / "fetch_fashion_mnist.py"),
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
            from simsearch import discover

            try:
                corpus = self.fmnist()
            except Skip:
                corpus = None
            if corpus is not None:
                files = discover.discover(corpus.train)[0]
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
        return BuildOptions.of(**kw)

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
            sha = store.read_meta(built["dir"]).model.sha256
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

        from simsearch import discover

        corpus = self.fmnist()
        files = spread(discover.discover(corpus.test or corpus.train)[0], n)
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

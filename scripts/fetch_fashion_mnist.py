#!/usr/bin/env python3
"""Write Fashion-MNIST to disk as PNG files in per-class folders.

Layout::

    <out>/train/<class>/<index>.png     index 00000..59999
    <out>/test/<class>/<index>.png      index 00000..09999

``<class>`` is one of ``t-shirt_top, trouser, pullover, dress, coat, sandal,
shirt, sneaker, bag, ankle_boot`` and ``<index>`` is the zero-padded position
of the image in its original split, so file names are stable and unique.

The IDX files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``) are read
from, in order of preference:

1. ``--source DIR`` if given (an error if the files are not there);
2. ``/usr/share/datasets/fashion-mnist`` (Debian package
   ``dataset-fashion-mnist``);
3. ``torchvision.datasets.FashionMNIST(root=..., download=True)`` (needs
   torchvision and network access); its raw IDX files are then parsed.

The conversion is idempotent and resumable: a PNG that already exists and is a
valid 28x28 PNG is left alone (``--force`` rewrites everything).  Each PNG is
written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written ``.png`` behind.

Usage::

    python scripts/fetch_fashion_mnist.py                      # -> data/fashion-mnist
    python scripts/fetch_fashion_mnist.py --out /tmp/fmnist --workers 2
    python scripts/fetch_fashion_mnist.py --limit-train 200 --limit-test 50
    python scripts/fetch_fashion_mnist.py --source ~/Downloads/fashion-mnist
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT = Path("data/fashion-mnist")
DEFAULT_DOWNLOAD_ROOT = Path.home() / ".cache" / "simsearch" / "torchvision"

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGE_SIZE = 28

# split name on disk -> IDX file prefix
SPLITS: dict[str, str] = {"train": "train", "test": "t10k"}
IDX_KINDS = ("images-idx3", "labels-idx1")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TMP_MARKER = ".tmp-"
INDEX_WIDTH = 5


class IdxError(ValueError):
    """A missing, truncated or malformed IDX file."""


class SourceNotFound(FileNotFoundError):
    """No usable directory of Fashion-MNIST IDX files was found."""


# --------------------------------------------------------------------------
# IDX parsing
# --------------------------------------------------------------------------


def _read_bytes(path: Path | str) -> bytes:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head == b"\x1f\x8b":  # gzip magic, regardless of file name
                with gzip.GzipFile(fileobj=fh) as gz:
                    return gz.read()
            return fh.read()
    except FileNotFoundError:
        raise IdxError(f"{path}: file not found") from None
    except (OSError, EOFError) as exc:  # e.g. corrupt/truncated gzip stream
        raise IdxError(f"{path}: cannot read: {exc}") from None


def _parse_idx(path: Path | str, magic: int, ndim: int) -> np.ndarray:
    data = _read_bytes(path)
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise IdxError(f"{path}: bad magic number {found} (expected {magic})")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(data) - header_len
    if payload != expected:
        raise IdxError(f"{path}: header dims {dims} need {expected} bytes of data, found {payload}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def read_idx_images(path: Path | str) -> np.ndarray:
    """Read an IDX3 image file (gzipped or not) into an (N, 28, 28) uint8 array."""
    arr = _parse_idx(path, IMAGES_MAGIC, 3)
    if arr.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise IdxError(f"{path}: images are {arr.shape[1]}x{arr.shape[2]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    return arr


def read_idx_labels(path: Path | str) -> np.ndarray:
    """Read an IDX1 label file (gzipped or not) into an (N,) uint8 array."""
    arr = _parse_idx(path, LABELS_MAGIC, 1)
    if arr.size and int(arr.max()) >= len(CLASS_NAMES):
        raise IdxError(f"{path}: label {int(arr.max())} out of range 0..{len(CLASS_NAMES) - 1}")
    return arr


def read_split(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check the images and labels of ``split`` ('train'/'test')."""
    prefix = SPLITS[split]
    images_path = _idx_file(source, f"{prefix}-images-idx3-ubyte")
    labels_path = _idx_file(source, f"{prefix}-labels-idx1-ubyte")
    if images_path is None:
        raise IdxError(f"{source}: missing {prefix}-images-idx3-ubyte[.gz]")
    if labels_path is None:
        raise IdxError(f"{source}: missing {prefix}-labels-idx1-ubyte[.gz]")
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if len(images) != len(labels):
        raise IdxError(f"{split}: {len(images)} images in {images_path} but {len(labels)} labels in {labels_path}")
    return images, labels


# --------------------------------------------------------------------------
# Locating the source files
# --------------------------------------------------------------------------


def _idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _has_all_files(directory: Path) -> bool:
    return all(
        _idx_file(directory, f"{prefix}-{kind}-ubyte") is not None for prefix in SPLITS.values() for kind in IDX_KINDS
    )


def _missing_files(directory: Path) -> list[str]:
    return [
        f"{prefix}-{kind}-ubyte[.gz]"
        for prefix in SPLITS.values()
        for kind in IDX_KINDS
        if _idx_file(directory, f"{prefix}-{kind}-ubyte") is None
    ]


def _download_with_torchvision(root: Path) -> Path:
    try:
        from torchvision.datasets import FashionMNIST  # lazy: heavy, optional
    except ImportError as exc:
        raise SourceNotFound(
            f"Fashion-MNIST IDX files not found in {DEFAULT_SOURCE} and torchvision "
            f"is not importable ({exc}); install the Debian package "
            "dataset-fashion-mnist, pass --source DIR, or pip install torchvision"
        ) from None
    root.mkdir(parents=True, exist_ok=True)
    print(f"downloading Fashion-MNIST with torchvision into {root} ...", file=sys.stderr)
    try:
        datasets = [FashionMNIST(root=str(root), train=t, download=True) for t in (True, False)]
    except Exception as exc:  # network errors come in many types
        raise SourceNotFound(f"torchvision download of Fashion-MNIST failed: {type(exc).__name__}: {exc}") from None
    # torchvision keeps the IDX files (.gz and decompressed) in its raw_folder,
    # <root>/FashionMNIST/raw; we parse those rather than its tensors.
    candidates = [root / "FashionMNIST" / "raw"]
    raw_folder = getattr(datasets[0], "raw_folder", None)
    if raw_folder:
        candidates.insert(0, Path(raw_folder))
    for candidate in candidates:
        if _has_all_files(candidate):
            return candidate
    raise SourceNotFound(f"torchvision download finished but no IDX files found in {candidates[-1]}")


def find_source(explicit: Path | str | None, download_root: Path | str | None = None) -> Path:
    """Return a directory holding the four Fashion-MNIST IDX files.

    ``explicit`` (from ``--source``) wins and must contain all the files.
    Otherwise the Debian location is used, and failing that the files are
    downloaded with torchvision into ``download_root``.  Raises
    :class:`SourceNotFound` if none works.
    """
    if explicit is not None:
        directory = Path(explicit).expanduser()
        if not directory.is_dir():
            raise SourceNotFound(f"--source {directory}: not a directory")
        missing = _missing_files(directory)
        if missing:
            raise SourceNotFound(f"--source {directory}: missing {', '.join(missing)}")
        return directory
    if _has_all_files(DEFAULT_SOURCE):
        return DEFAULT_SOURCE
    root = Path(download_root).expanduser() if download_root else DEFAULT_DOWNLOAD_ROOT
    return _download_with_torchvision(root)


# --------------------------------------------------------------------------
# PNG writing
# --------------------------------------------------------------------------


def png_path(out: Path, split: str, label: int, index: int) -> Path:
    return out / split / CLASS_NAMES[label] / f"{index:0{INDEX_WIDTH}d}.png"


def _existing_png_ok(path: str, size: int = IMAGE_SIZE) -> bool:
    """True if ``path`` is a PNG whose IHDR says size x size (cheap header check)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError:
        return False
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return False
    width, height = struct.unpack(">II", head[16:24])
    return width == size and height == size


def _encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
        buf, format="PNG", optimize=False, compress_level=1
    )
    return buf.getvalue()


def _write_atomic(path: str, data: bytes) -> None:
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}{TMP_MARKER}{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_chunk(task: tuple[list[str], np.ndarray, bool]) -> tuple[int, int]:
    """Worker: write one chunk of images. Returns (written, existing)."""
    paths, images, force = task
    written = existing = 0
    for path, image in zip(paths, images):
        if not force and _existing_png_ok(path):
            existing += 1
            continue
        _write_atomic(path, _encode_png(image))
        written += 1
    return written, existing


def _remove_stale_temps(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.name.startswith(".") and TMP_MARKER in entry.name:
            try:
                entry.unlink()
            except OSError:
                pass


def write_split(
    images: np.ndarray,
    labels: np.ndarray,
    out: Path | str,
    split: str,
    *,
    limit: int | None = None,
    workers: int | None = None,
    force: bool = False,
    chunk_size: int = 1000,
) -> tuple[int, int]:
    """Write the first ``limit`` images of a split as PNGs under ``out/split/<class>/``.

    Returns ``(written, existing)``: how many PNGs were (re)written and how
    many valid ones were already there and skipped.
    """
    out = Path(out)
    if len(images) != len(labels):
        raise IdxError(f"{split}: {len(images)} images but {len(labels)} labels")
    n = len(images) if limit is None else max(0, min(int(limit), len(images)))
    images, labels = images[:n], labels[:n]

    for name in CLASS_NAMES:
        class_dir = out / split / name
        class_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(class_dir)

    paths = [str(png_path(out, split, int(lab), i)) for i, lab in enumerate(labels)]
    tasks = [
        (paths[start : start + chunk_size], images[start : start + chunk_size], force)
        for start in range(0, n, chunk_size)
    ]
    workers = max(1, workers or os.cpu_count() or 1)
    written = existing = 0
    if workers == 1 or len(tasks) <= 1:
        results = map(_write_chunk, tasks)
        for w, e in results:
            written += w
            existing += e
    else:
        import multiprocessing

        with multiprocessing.Pool(min(workers, len(tasks))) as pool:
            for w, e in pool.imap_unordered(_write_chunk, tasks):
                written += w
                existing += e
    return written, existing


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write Fashion-MNIST as PNG files in per-class folders (<out>/{train,test}/<class>/<index>.png).",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="directory with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] "
        f"(default: {DEFAULT_SOURCE}, else download with torchvision)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument(
        "--download-root",
        type=Path,
        default=DEFAULT_DOWNLOAD_ROOT,
        help=f"where torchvision downloads to, if needed (default: {DEFAULT_DOWNLOAD_ROOT})",
    )
    parser.add_argument(
        "--limit-train",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="only write the first N training images",
    )
    parser.add_argument(
        "--limit-test",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="only write the first N test images",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="parallel PNG writer processes (default: os.cpu_count())",
    )
    parser.add_argument("--force", action="store_true", help="rewrite PNGs that already exist")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        source = find_source(args.source, args.download_root)
        limits = {"train": args.limit_train, "test": args.limit_test}
        summary = []
        totals = [0, 0]
        for split in SPLITS:
            images, labels = read_split(source, split)
            written, existing = write_split(
                images,
                labels,
                args.out,
                split,
                limit=limits[split],
                workers=args.workers,
                force=args.force,
            )
            totals[0] += written
            totals[1] += existing
            summary.append(f"{split} {written + existing} ({written} written, {existing} existing)")
    except (IdxError, SourceNotFound) as exc:
        print(f"fetch_fashion_mnist: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"fetch_fashion_mnist: error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    print(
        f"fetch_fashion_mnist: {'; '.join(summary)}; total {totals[0]} written, "
        f"{totals[1]} existing -> {args.out} from {source} in {elapsed:.1f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tests for scripts/fetch_fashion_mnist.py (no network access needed)."""

from __future__ import annotations

import gzip
import importlib.util
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fetch_fashion_mnist.py"
REAL_SOURCE = Path("/usr/share/datasets/fashion-mnist")


def _load_module():
    name = "fetch_fashion_mnist"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # registered so multiprocessing workers can pickle its functions under spawn too
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ffm = _load_module()


# --------------------------------------------------------------------------
# helpers writing synthetic IDX files
# --------------------------------------------------------------------------


def write_idx_images(path: Path, images: np.ndarray, magic: int = 2051, count=None) -> Path:
    n, h, w = images.shape
    header = struct.pack(">IIII", magic, n if count is None else count, h, w)
    path.write_bytes(gzip.compress(header + images.astype(np.uint8).tobytes()))
    return path


def write_idx_labels(path: Path, labels: np.ndarray, magic: int = 2049, count=None) -> Path:
    header = struct.pack(">II", magic, len(labels) if count is None else count)
    path.write_bytes(gzip.compress(header + labels.astype(np.uint8).tobytes()))
    return path


def make_source(directory: Path, n_train: int = 37, n_test: int = 13, seed: int = 0):
    """Write a synthetic Fashion-MNIST source dir; return the arrays written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # make sure extremes survive
        labels = (np.arange(n) * 7 % 10).astype(np.uint8)  # every class appears
        write_idx_images(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx_labels(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
        data[split] = (images, labels)
    return data


def png_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png"))


# --------------------------------------------------------------------------
# IDX parsing
# --------------------------------------------------------------------------


def test_read_idx_images_and_labels_roundtrip(tmp_path):
    images = np.arange(5 * 28 * 28, dtype=np.int64).reshape(5, 28, 28) % 256
    labels = np.array([9, 0, 3, 1, 2], dtype=np.uint8)
    got_images = ffm.read_idx_images(write_idx_images(tmp_path / "i.gz", images))
    got_labels = ffm.read_idx_labels(write_idx_labels(tmp_path / "l.gz", labels))
    assert got_images.shape == (5, 28, 28)
    assert got_images.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images.astype(np.uint8))
    assert got_labels.shape == (5,)
    assert got_labels.dtype == np.uint8
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_accepts_uncompressed_file(tmp_path):
    labels = np.array([4, 5, 6], dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 2049, 3) + labels.tobytes())
    np.testing.assert_array_equal(ffm.read_idx_labels(path), labels)


def test_bad_magic_is_rejected(tmp_path):
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    with pytest.raises(ffm.IdxError, match="magic"):
        ffm.read_idx_images(write_idx_images(tmp_path / "i.gz", images, magic=2049))
    with pytest.raises(ffm.IdxError, match="magic"):
        ffm.read_idx_labels(write_idx_labels(tmp_path / "l.gz", np.zeros(2), magic=2051))


def test_header_count_disagreeing_with_data_is_rejected(tmp_path):
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    with pytest.raises(ffm.IdxError):
        ffm.read_idx_images(write_idx_images(tmp_path / "i.gz", images, count=4))
    with pytest.raises(ffm.IdxError):
        ffm.read_idx_labels(write_idx_labels(tmp_path / "l.gz", np.zeros(3), count=2))


def test_wrong_image_dims_rejected(tmp_path):
    with pytest.raises(ffm.IdxError, match="28x28"):
        ffm.read_idx_images(write_idx_images(tmp_path / "i.gz", np.zeros((2, 27, 28))))


def test_truncated_and_missing_files_rejected(tmp_path):
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(b"\x00\x00\x08"))
    with pytest.raises(ffm.IdxError):
        ffm.read_idx_labels(short)
    with pytest.raises(ffm.IdxError, match="not found"):
        ffm.read_idx_images(tmp_path / "nope.gz")


def test_image_label_count_mismatch_is_error_exit_1(tmp_path, capsys):
    src = tmp_path / "src"
    make_source(src)
    # labels file with one entry fewer than the train images
    write_idx_labels(src / "train-labels-idx1-ubyte.gz", np.zeros(36, dtype=np.uint8))
    with pytest.raises(ffm.IdxError, match="37 images"):
        ffm.read_split(src, "train")
    rc = ffm.main(["--source", str(src), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert "error" in err and "37 images" in err
    assert len(err.splitlines()) == 1


def test_bad_magic_via_main_is_one_line_error(tmp_path, capsys):
    src = tmp_path / "src"
    data = make_source(src)
    write_idx_images(src / "t10k-images-idx3-ubyte.gz", data["test"][0], magic=1234)
    rc = ffm.main(["--source", str(src), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert "bad magic number 1234" in err
    assert len(err.splitlines()) == 1


def test_missing_source_file_is_error(tmp_path, capsys):
    src = tmp_path / "src"
    make_source(src)
    (src / "t10k-labels-idx1-ubyte.gz").unlink()
    rc = ffm.main(["--source", str(src), "--out", str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert "t10k-labels-idx1-ubyte" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------
# end to end on synthetic data
# --------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_end_to_end_synthetic(tmp_path, capsys, workers):
    src, out = tmp_path / "src", tmp_path / "out"
    data = make_source(src, n_train=37, n_test=13)
    rc = ffm.main(["--source", str(src), "--out", str(out), "--workers", str(workers)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "50 written" in err

    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(ffm.CLASS_NAMES)
    assert sorted(p.name for p in (out / "test").iterdir()) == sorted(ffm.CLASS_NAMES)
    assert len(png_files(out / "train")) == 37
    assert len(png_files(out / "test")) == 13
    for split in ("train", "test"):
        images, labels = data[split]
        for i, (image, label) in enumerate(zip(images, labels)):
            path = out / split / ffm.CLASS_NAMES[label] / f"{i:05d}.png"
            with Image.open(path) as im:
                assert im.mode == "L"
                assert im.size == (28, 28)
                np.testing.assert_array_equal(np.asarray(im), image)
    # no temp files left behind
    assert [p for p in out.rglob("*") if p.is_file() and p.suffix != ".png"] == []


def test_class_folder_names():
    assert ffm.CLASS_NAMES == (
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


def test_limits_take_first_n(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    data = make_source(src, n_train=37, n_test=13)
    argv = ["--source", str(src), "--out", str(out), "--workers", "1"]
    assert ffm.main(argv + ["--limit-train", "5", "--limit-test", "0"]) == 0
    names = sorted(p.name for p in png_files(out / "train"))
    assert names == [f"{i:05d}.png" for i in range(5)]
    assert png_files(out / "test") == []
    labels = data["train"][1]
    for i in range(5):
        assert (out / "train" / ffm.CLASS_NAMES[labels[i]] / f"{i:05d}.png").is_file()


def test_rerun_is_idempotent_and_resumes(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    data = make_source(src, n_train=37, n_test=13)
    argv = ["--source", str(src), "--out", str(out), "--workers", "2"]
    assert ffm.main(argv) == 0
    before = {p: p.stat().st_mtime_ns for p in png_files(out)}
    inodes = {p: p.stat().st_ino for p in png_files(out)}
    assert len(before) == 50
    capsys.readouterr()

    assert ffm.main(argv) == 0
    assert "0 written, 50 existing" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in png_files(out)} == before
    assert {p: p.stat().st_ino for p in png_files(out)} == inodes

    # simulate an interrupted run: one file missing, one truncated, a stale temp
    images, labels = data["train"]
    gone = out / "train" / ffm.CLASS_NAMES[labels[3]] / "00003.png"
    broken = out / "train" / ffm.CLASS_NAMES[labels[4]] / "00004.png"
    stale = broken.parent / f".00004.png{ffm.TMP_MARKER}99999"
    gone.unlink()
    broken.write_bytes(broken.read_bytes()[:10])
    stale.write_bytes(b"partial")
    assert ffm.main(argv) == 0
    assert "2 written, 48 existing" in capsys.readouterr().err
    assert not stale.exists()
    for i, path in ((3, gone), (4, broken)):
        with Image.open(path) as im:
            np.testing.assert_array_equal(np.asarray(im), images[i])
    untouched = {p: t for p, t in before.items() if p not in (gone, broken)}
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched

    # --force rewrites everything
    assert ffm.main(argv + ["--force"]) == 0
    assert "50 written, 0 existing" in capsys.readouterr().err


def test_write_split_function(tmp_path):
    images = np.stack([np.full((28, 28), v, dtype=np.uint8) for v in (0, 128, 255)])
    labels = np.array([9, 1, 9], dtype=np.uint8)
    assert ffm.write_split(images, labels, tmp_path, "train", workers=1) == (3, 0)
    assert ffm.write_split(images, labels, tmp_path, "train", workers=1) == (0, 3)
    with Image.open(tmp_path / "train" / "ankle_boot" / "00002.png") as im:
        assert np.asarray(im).min() == 255 and np.asarray(im).max() == 255
    # an existing PNG of the wrong size is not accepted as done
    wrong = tmp_path / "train" / "trouser" / "00001.png"
    Image.fromarray(np.zeros((14, 14), dtype=np.uint8)).save(wrong)
    assert ffm.write_split(images, labels, tmp_path, "train", workers=1) == (1, 2)
    with Image.open(wrong) as im:
        assert im.size == (28, 28) and np.asarray(im).max() == 128
    with pytest.raises(ffm.IdxError):
        ffm.write_split(images, labels[:2], tmp_path, "train", workers=1)


# --------------------------------------------------------------------------
# source discovery
# --------------------------------------------------------------------------


def test_find_source_explicit(tmp_path):
    make_source(tmp_path / "src")
    assert ffm.find_source(tmp_path / "src") == tmp_path / "src"
    with pytest.raises(ffm.SourceNotFound):
        ffm.find_source(tmp_path / "does-not-exist")
    with pytest.raises(ffm.SourceNotFound, match="missing"):
        ffm.find_source(tmp_path)  # exists but holds no IDX files


def test_find_source_torchvision_fallback_without_network(tmp_path, monkeypatch):
    """With no Debian files, find_source uses torchvision's raw folder (faked here)."""
    monkeypatch.setattr(ffm, "DEFAULT_SOURCE", tmp_path / "no-debian-here")
    calls = []

    class FakeFashionMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            self.raw_folder = str(Path(root) / "FashionMNIST" / "raw")
            make_source(Path(self.raw_folder), n_train=3, n_test=2)

    fake_tv = types.ModuleType("torchvision")
    fake_datasets = types.ModuleType("torchvision.datasets")
    fake_datasets.FashionMNIST = FakeFashionMNIST
    fake_tv.datasets = fake_datasets
    monkeypatch.setitem(sys.modules, "torchvision", fake_tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake_datasets)

    found = ffm.find_source(None, tmp_path / "dl")
    assert found == tmp_path / "dl" / "FashionMNIST" / "raw"
    assert {c[2] for c in calls} == {True}  # download=True
    assert {c[1] for c in calls} == {True, False}
    images, labels = ffm.read_split(found, "train")
    assert images.shape == (3, 28, 28) and labels.shape == (3,)


def test_find_source_without_debian_or_torchvision_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ffm, "DEFAULT_SOURCE", tmp_path / "no-debian-here")
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes import fail
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(ffm.SourceNotFound, match="torchvision"):
        ffm.find_source(None, tmp_path / "dl")
    assert ffm.main(["--out", str(tmp_path / "out"), "--download-root", str(tmp_path / "dl")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# --------------------------------------------------------------------------
# the real Debian files
# --------------------------------------------------------------------------


def test_real_debian_files(tmp_path, capsys):
    if not all(
        (REAL_SOURCE / f"{p}-{k}-ubyte.gz").is_file() for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
    ):
        pytest.skip(f"Fashion-MNIST not installed at {REAL_SOURCE} (dataset-fashion-mnist)")
    out = tmp_path / "fmnist"
    assert ffm.find_source(None) == REAL_SOURCE
    rc = ffm.main(["--out", str(out), "--limit-train", "200", "--limit-test", "50", "--workers", "2"])
    assert rc == 0
    assert "250 written" in capsys.readouterr().err

    for split, n in (("train", 200), ("test", 50)):
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(ffm.CLASS_NAMES)
        assert len(png_files(out / split)) == n
    assert len(list((out / "train" / "trouser").glob("*.png"))) > 0

    images, labels = ffm.read_split(REAL_SOURCE, "train")
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert labels[0] == 9  # first Fashion-MNIST training image is an ankle boot
    t_images, t_labels = ffm.read_split(REAL_SOURCE, "test")
    assert t_images.shape == (10000, 28, 28) and t_labels.shape == (10000,)
    assert np.bincount(labels, minlength=10).tolist() == [6000] * 10

    with Image.open(out / "train" / "ankle_boot" / "00000.png") as im:
        np.testing.assert_array_equal(np.asarray(im), images[0])
    first_trouser = int(np.flatnonzero(labels == 1)[0])
    with Image.open(out / "train" / "trouser" / f"{first_trouser:05d}.png") as im:
        np.testing.assert_array_equal(np.asarray(im), images[first_trouser])
    with Image.open(out / "test" / ffm.CLASS_NAMES[t_labels[49]] / "00049.png") as im:
        np.testing.assert_array_equal(np.asarray(im), t_images[49])

"""Streaming index builds (issue 12, part 1): a bounded, uniform, deterministic training sample;
embedding chunk by chunk (``indexer.embed_files``) gives the same index as embedding every decoded
image at once did; the memory a build holds does not grow with the folder, apart from the vectors."""

from __future__ import annotations

import os
import sys
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synth import FAST, write_corpus

from simsearch import indexer, store
from simsearch.indexer import BuildOptions, Embedded, Found, embed_files, train_sample
from simsearch.settings import TrainConfig, corruption_config


def state(idx: Path):
    snap = store.read(idx)
    return [e.path for e in snap.entries], snap.ids.copy(), np.asarray(snap.vectors).copy(), snap.recon.copy()


def all_in_memory(idx: Path, root: Path):
    """What the indexer did before it streamed: every file decoded into one (N, C, S, S) array,
    then embedded in one call (codes and reconstruction statistics) with the index's model."""
    from simsearch import embed as embed_mod
    from simsearch.pool import decode_files
    from simsearch.preprocess import Preprocess

    snap = store.read(idx)
    pre = Preprocess.from_dict(snap.meta.preprocess)
    files = [root / e.path for e in snap.entries]
    pixels = np.stack([arr for _, arr, _, _ in decode_files(files, pre, workers=1)])
    model = store.load_model(idx, snap.meta.model.sha256)
    corruption = corruption_config(snap.meta.model.train)
    return embed_mod.embed(
        model, pixels, "cpu", None, None, snap.meta.embedding.views, recon=True, corruption=corruption
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream") / "images"
    write_corpus(root, per_class=15)
    (root / "disc" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image")
    return root


@pytest.fixture(scope="module")
def built(folder, tmp_path_factory):
    """A first build, trained, embedded 7 images at a time."""
    idx = tmp_path_factory.mktemp("built") / "idx"
    report = indexer.update(folder, idx, BuildOptions.of(**FAST, chunk_size=7))
    return idx, report


def test_streamed_build_equals_the_all_in_memory_result(built, folder):
    idx, report = built
    paths, ids, vectors, recon = state(idx)
    assert len(paths) == 45 and ids.tolist() == list(range(45))
    assert [s["path"] for s in report.skipped] == ["disc/broken.png"]
    codes, stats = all_in_memory(idx, folder)
    np.testing.assert_allclose(vectors, codes, atol=1e-6)
    np.testing.assert_allclose(recon, stats, atol=1e-6)
    assert set(report.timings) >= {"decode", "train", "embed", "write"}


@pytest.mark.parametrize(("chunk", "workers"), [(1, 1), (4, 2), (10_000, 2)])
def test_chunk_size_and_workers_do_not_change_the_index(built, folder, tmp_path, chunk, workers):
    """With the index's model (no training: files are decoded in the pool as they stream)."""
    idx, _ = built
    model = store.model_path(idx, store.read_meta(idx).model.sha256)
    other = tmp_path / "idx"
    opts = BuildOptions.of(**{**FAST, "workers": workers}, chunk_size=chunk, model=str(model))
    report = indexer.update(folder, other, opts)
    a, b = state(idx), state(other)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    np.testing.assert_allclose(a[2], b[2], atol=1e-6)
    np.testing.assert_allclose(a[3], b[3], atol=1e-6)
    assert [s["path"] for s in report.skipped] == ["disc/broken.png"]


def test_incremental_update_streams_only_the_changes(built, folder, tmp_path):
    import shutil

    idx0, _ = built
    root = shutil.copytree(folder, tmp_path / "images", copy_function=shutil.copy2)
    idx = tmp_path / "idx"
    model = store.model_path(idx0, store.read_meta(idx0).model.sha256)
    opts = BuildOptions.of(**FAST, chunk_size=2, model=str(model))
    indexer.update(root, idx, opts)
    before = state(idx)
    os.utime(root / "disc" / "disc_000.png", ns=(1, 10**18))  # touched, same content
    Image.open(root / "square" / "square_001.png").transpose(Image.FLIP_TOP_BOTTOM).save(root / "square" / "m.png")
    (root / "square" / "square_002.png").unlink()
    write_corpus(tmp_path / "more", per_class=2, seed=9)
    for p in sorted((tmp_path / "more").rglob("*.png")):
        shutil.copy2(p, root / "stripes" / f"new_{p.name}")
    Image.open(root / "stripes" / "stripes_003.png").rotate(90).save(root / "stripes" / "stripes_003.png")

    seen = []
    report = indexer.update(
        root, idx, opts, progress=lambda stage, done, total, **kw: seen.append((stage, done, total))
    )
    assert (report.added, report.updated, report.removed) == (7, 1, 1)
    assert report.unchanged == 45 - 1 - 1  # the touched file counts as unchanged (refreshed)
    # one progress stage: files decoded and embedded so far, of the files to look at (7 new,
    # 1 changed, the touched one and the broken one, tried again), ending at the total
    assert {s for s, _, _ in seen} == {"embed"} and seen[-1] == ("embed", 10, 10)
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)
    paths, ids, vectors, _ = state(idx)
    old_row = {p: i for i, p in enumerate(before[0])}
    for p in ("disc/disc_000.png", "disc/disc_001.png"):  # kept vectors, same ids
        assert ids[paths.index(p)] == before[1][old_row[p]]
        assert np.array_equal(vectors[paths.index(p)], before[2][old_row[p]])
    assert ids[paths.index("stripes/stripes_003.png")] == before[1][old_row["stripes/stripes_003.png"]]
    assert ids.max() == 45 + 7 - 1 and "square/square_002.png" not in paths  # new ids after the last
    entry = store.read(idx).entries[paths.index("disc/disc_000.png")]
    assert entry.mtime_ns == 10**18
    # the new and changed files' vectors are what embedding them all at once gives
    codes, _ = all_in_memory(idx, root)
    np.testing.assert_allclose(vectors, codes, atol=1e-6)


def test_embed_files_sorts_embedded_same_and_failed_in_input_order(built, folder):
    from simsearch.preprocess import Preprocess

    idx, _ = built
    snap = store.read(idx)
    pre = Preprocess.from_dict(snap.meta.preprocess)
    by_path = {e.path: e for e in snap.entries}
    rels = ["stripes/stripes_004.png", "disc/broken.png", "disc/disc_003.png", "square/square_010.png", "nope.png"]
    todo = [Found(folder / r, r) for r in rels]
    old_sha = {"disc/disc_003.png": by_path["disc/disc_003.png"].sha256, "stripes/stripes_004.png": "0" * 64}
    opts = BuildOptions.of(**FAST, chunk_size=1)
    views = snap.meta.embedding.views
    emb = embed_files(todo, pre, store.model_path(idx, snap.meta.model.sha256), views, old_sha, opts, None)
    assert isinstance(emb, Embedded)
    assert [f.rel for f, _ in emb.done] == ["stripes/stripes_004.png", "square/square_010.png"]
    assert [f.rel for f, _ in emb.same] == ["disc/disc_003.png"]
    assert [f.rel for f, _ in emb.failed] == ["disc/broken.png", "nope.png"]
    assert all(reason and "\n" not in reason for _, reason in emb.failed)
    assert emb.done[1][1].sha256 == by_path["square/square_010.png"].sha256
    assert emb.codes.shape == (2, snap.vectors.shape[1]) and emb.codes.dtype == np.float32
    assert emb.recon.shape == (2, 3)
    rows = [snap.entries.index(by_path[f.rel]) for f, _ in emb.done]
    np.testing.assert_allclose(emb.codes, snap.vectors[rows], atol=1e-6)
    np.testing.assert_allclose(emb.recon, snap.recon[rows], atol=1e-6)


def test_an_unchanged_folder_loads_no_model(built, folder, monkeypatch):
    idx, _ = built
    calls = []
    real = indexer._load_model_file
    monkeypatch.setattr(indexer, "_load_model_file", lambda p: calls.append(p) or real(p))
    report = indexer.update(folder, idx, BuildOptions.of(**FAST, chunk_size=3))
    assert (report.added, report.updated, report.removed) == (0, 0, 0) and calls == []


# ---------------------------------------------------------------- the training sample


def test_the_training_sample_is_bounded_deterministic_and_uniform():
    cfg = TrainConfig(max_images=100, seed=0)
    a = train_sample(1000, cfg, 784)
    assert len(a) == 100 and len(set(a.tolist())) == 100 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, train_sample(1000, cfg, 784))  # deterministic
    assert not np.array_equal(a, train_sample(1000, TrainConfig(max_images=100, seed=1), 784))
    assert np.array_equal(train_sample(80, cfg, 784), np.arange(80))  # a small folder: every image
    assert len(train_sample(1000, TrainConfig(max_images=0), 784)) == 1000  # 0: no count limit
    # the byte budget binds for large inputs
    assert len(train_sample(1000, TrainConfig(max_images=0, max_sample_bytes=50 * 3 * 64 * 64), 3 * 64 * 64)) == 50
    # uniform over the folder (not its first images): 400 seeds, 100 of 1,000 each; every decile
    # of the folder is drawn about 4,000 times (binomial sd ≈ 60), every position about 40 times
    counts = np.zeros(1000)
    for seed in range(400):
        counts[train_sample(1000, TrainConfig(max_images=100, seed=seed), 784)] += 1
    deciles = counts.reshape(10, 100).sum(1)
    assert np.all(np.abs(deciles - 4000) < 300), deciles
    assert counts.min() > 10 and counts.max() < 80


def test_fashion_mnist_sized_folders_train_on_every_image():
    assert len(train_sample(60_000, TrainConfig(), 28 * 28)) == 60_000  # the default keeps 60k whole
    assert len(train_sample(300_000, TrainConfig(), 28 * 28)) == 100_000


def test_a_build_trains_on_the_sample_only_and_embeds_everything(folder, tmp_path, monkeypatch):
    from simsearch import train as train_mod

    seen, logs = [], []
    real = train_mod.train

    def spy(pixels, *a, **kw):
        seen.append(pixels.copy())
        return real(pixels, *a, **kw)

    monkeypatch.setattr(train_mod, "train", spy)
    decoded = []
    real_decode = indexer._decode
    monkeypatch.setattr(indexer, "_decode", lambda paths, *a: decoded.append(list(paths)) or real_decode(paths, *a))
    opts = BuildOptions.of(**FAST, train={"max_images": 12}, chunk_size=5)
    for i in range(2):
        report = indexer.update(folder, tmp_path / f"idx{i}", opts, log=logs.append)
        assert report.added == 45
    assert len(decoded) == 2 and len(decoded[0]) == 12 and decoded[0] == decoded[1]  # only the sample, the same
    assert seen[0].shape[0] <= 12 and np.array_equal(seen[0], seen[1])  # (a broken file drawn is left out)
    assert any("training sample: 12 of 46 images" in m for m in logs)
    assert store.read_meta(tmp_path / "idx0").model.train["config"]["max_images"] == 12
    # the whole folder is embedded (streamed) with the model trained on the sample
    codes, _ = all_in_memory(tmp_path / "idx0", folder)
    np.testing.assert_allclose(store.read(tmp_path / "idx0").vectors, codes, atol=1e-6)


def test_train_sample_on_the_command_line(folder, tmp_path):
    from click.testing import CliRunner
    from synth import FAST_CLI

    from simsearch.cli import cli

    out = tmp_path / "m.pt"
    r = CliRunner().invoke(cli, ["train", str(folder), "-o", str(out), "--train-sample", "10", *FAST_CLI])
    assert r.exit_code == 0, r.output
    assert "training sample: 10 of 46 images" in r.output
    r = CliRunner().invoke(cli, ["train", str(folder), "-o", str(out), "--train-sample", "1", *FAST_CLI])
    assert r.exit_code == 1 and "at least 2 images" in r.output


# ---------------------------------------------------------------- Ray dispatch (the seam)


def test_ray_option_dispatches_to_distributed_with_the_saved_model(built, folder, tmp_path, monkeypatch):
    idx0, _ = built
    calls = []

    def ray_embed_files(todo, pre, model_path, views, old_sha, options, progress, *, corruption):
        calls.append((len(todo), Path(model_path).is_file(), options.ray_address))
        return embed_files(todo, pre, model_path, views, old_sha, options, progress, corruption=corruption)

    monkeypatch.setitem(sys.modules, "simsearch.distributed", types.SimpleNamespace(ray_embed_files=ray_embed_files))
    model = store.model_path(idx0, store.read_meta(idx0).model.sha256)
    opts = BuildOptions.of(**FAST, model=str(model), ray=True, ray_address="ray://nowhere:1")
    indexer.update(folder, tmp_path / "idx", opts)
    assert calls == [(46, True, "ray://nowhere:1")]
    a, b = state(idx0), state(tmp_path / "idx")
    assert a[0] == b[0] and np.allclose(a[2], b[2], atol=1e-6) and np.allclose(a[3], b[3], atol=1e-6)


# ---------------------------------------------------------------- memory


SIDE = 64  # RGB: 12 KiB of pixels an image, against 512 B of its raw code


def _noise_folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        block = rng.integers(0, 256, (SIDE // 8, SIDE // 8, 3), dtype=np.uint8)
        Image.fromarray(block).resize((SIDE, SIDE), Image.NEAREST).save(root / f"{i:05d}.png")
    return root


def _build_peaks(tmp: str) -> dict[int, int]:
    """Python and numpy memory at its peak (tracemalloc) over a whole build with a given model, for
    100 and 400 images. Run in a fresh interpreter: what earlier tests left behind (objects, caches,
    the collector's thresholds) moved the peak by 900 B an image in a full suite."""
    import gc

    tmp_path = Path(tmp)
    opts = dict(width=4, max_epochs=1, time_budget=0, workers=1, batch_size=8, size=SIDE, channels=3)
    model = tmp_path / "m.pt"
    train = _noise_folder(tmp_path / "train", 16)
    indexer.train_model(train, model, BuildOptions.of(**opts))
    # a first build untraced, so that what a build imports once (faiss, scipy …) is not in either peak
    indexer.update(train, tmp_path / "warm", BuildOptions.of(model=str(model), workers=1, tta=False))
    peaks = {}
    for n in (100, 400):
        folder = _noise_folder(tmp_path / f"c{n}", n)
        build = BuildOptions.of(model=str(model), workers=1, tta=False, chunk_size=50)
        gc.collect()
        tracemalloc.start()
        try:
            indexer.update(folder, tmp_path / f"idx{n}", build)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return peaks


def test_memory_per_image_is_the_vectors_not_the_pixels(tmp_path):
    """Per extra image the build may hold its vector, statistics and manifest entry (a few KiB), not
    its 12 KiB of pixels (before streaming: about 5× that per image)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        peaks = pool.apply(_build_peaks, (str(tmp_path),))
    small, large = sorted(peaks)
    per_image = (peaks[large] - peaks[small]) / (large - small)
    print(f"peak {peaks}, {per_image:.0f} B per extra image")
    assert per_image < 3 * SIDE * SIDE / 4, (peaks, per_image)


@pytest.mark.slow
def test_the_rss_benchmark_prints_its_table(tmp_path):
    """scripts/bench/scale_rss.py on a small generated folder: both sizes, and the older code's row."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    folder = tmp_path / "fm"
    write_corpus(folder, per_class=10, size=28)
    model = tmp_path / "m.pt"
    indexer.train_model(folder, model, BuildOptions.of(**FAST))
    cmd = [sys.executable, str(root / "scripts/bench/scale_rss.py"), "--model", str(model), "--fmnist", str(folder)]
    cmd += [
        "--sizes",
        "30,60",
        "--old-code",
        str(root),
        "--old-sizes",
        "30",
        "--scratch",
        str(tmp_path),
        "--workers",
        "1",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(root)))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and "images" not in line]
    assert len(rows) == 3 and [row.split("|")[2].strip() for row in rows] == ["30", "30", "60"]
    assert "bytes per extra image" in r.stdout and "bound through embedding" in r.stdout
    assert not list(tmp_path.glob("scale_rss-*"))  # generated images and indexes deleted

"""The build's per-file records on disk (``simsearch.spill``): lists that behave like lists, a
sorter that sorts like ``discover``, and the scratch file gone when the build ends."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simsearch import indexer, spill
from simsearch.discover import discover, walk
from simsearch.indexer import FOUND, BuildOptions, Found

PAIR = spill.Codec(2, lambda t: t, lambda r: (r[0], r[1]))


@pytest.mark.parametrize("n", [0, 1, 5, 6, 17])
def test_a_spill_list_reads_back_what_was_appended(tmp_path, n):
    items = [(i, f"name-{i}-ä") for i in range(n)]
    with spill.Spill(tmp_path) as sp:
        lst = sp.list(PAIR, window=3)
        for it in items[: n // 2]:
            lst.append(it)
        lst.extend(items[n // 2 :])  # some rows stored (windows of 3), the rest still pending
        assert len(lst) == n and bool(lst) == bool(n)
        assert list(lst) == items
        assert [lst[i] for i in range(n)] == items  # in order: a window at a time
        assert [lst[i] for i in reversed(range(n))] == items[::-1]  # backwards: a query per window
        assert [lst[i] for i in np.arange(n)] == items  # numpy positions (the training sample's)
        assert lst[1:-1:2] == items[1:-1:2]
        if n:
            assert lst[-1] == items[-1]
        with pytest.raises(IndexError):
            lst[n]
        lst.append((n, "late"))  # appending after reading: the cached window is not stale
        assert lst[n] == (n, "late") and list(lst)[-1] == (n, "late") and len(lst) == n + 1


def test_found_records_round_trip(tmp_path):
    odd = os.fsdecode(b"\xff.png")  # a name that is not UTF-8 (a surrogate-escaped str)
    rows = [
        Found("/a/b.png", "b.png", 10, 123456789012345678),
        Found("/a/c.png", "c.png"),
        Found("/a/" + odd, odd, 1, 2),
    ]
    with spill.Spill(tmp_path) as sp:
        assert list(sp.list(FOUND, rows)) == rows


def test_concat_and_mapped_are_views(tmp_path):
    with spill.Spill(tmp_path) as sp:
        a = sp.list(PAIR, [(1, "x"), (2, "y")], window=1)
        b = [(3, "z")]
        both = spill.concat(a, [], b)
        assert len(both) == 3 and list(both) == [(1, "x"), (2, "y"), (3, "z")] and both[2] == (3, "z")
        assert both[-3] == (1, "x") and both[0:2] == [(1, "x"), (2, "y")]
        assert spill.concat([], a) is a and spill.concat() == []
        names = spill.mapped(both, lambda t: t[1])
        assert list(names) == ["x", "y", "z"] and names[1] == "y" and len(names) == 3


def test_the_sorter_orders_paths_as_discover_does(tmp_path):
    root = tmp_path / "folder"
    names = ["a.png", "a/b.png", "a-b.png", "a/z/y.png", "a0.png", "Z.png", "ä.png", "b/a.png", "ab/c.png"]
    names.append(os.fsdecode(b"\xfe\xff.png"))  # not UTF-8
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(root / n)
    with spill.Spill(tmp_path) as sp:
        s = sp.sorter()
        problems = walk(root, s.add)
        assert list(s) == discover(root, strings=True)[0] and problems == []
        assert [os.path.relpath(p, root) for p in s] == sorted(names, key=os.fsencode)


def test_a_build_leaves_no_scratch_file_and_removes_a_killed_runs(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((12, 12), i * 40, np.uint8)).save(folder / f"{i}.png")
    idx = tmp_path / "idx"
    (idx / "work").mkdir(parents=True)
    (idx / "work" / "spill-left-by-a-killed-run.sqlite").write_bytes(b"x")
    indexer.update(folder, idx, BuildOptions.of(max_epochs=1, time_budget=0, width=4, workers=1, tta=False))
    assert not list((idx / "work").glob("spill-*"))


SIDE = 24


def _folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(n)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(root / f"{i:05d}.png")
    return root


def test_memory_through_embedding_grows_by_the_vectors_alone(tmp_path, monkeypatch):
    """Python and numpy memory at its peak (tracemalloc) from the start of a build to the last embedded
    image, for N and 4N images: per extra image, the raw code and the reconstruction statistics
    (4·(D + 3) bytes) and nothing else — the per-file records are on disk. With them in lists (the
    code before) it was about 1.3 KB an image."""
    monkeypatch.setattr(spill, "WINDOW", 16)  # a window far below N, as on a real folder
    opts = dict(width=4, max_epochs=1, time_budget=0, workers=1, batch_size=8, size=SIDE, channels=3)
    model = tmp_path / "m.pt"
    indexer.train_model(_folder(tmp_path / "train", 16), model, BuildOptions.of(**opts))
    warm = BuildOptions.of(model=str(model), workers=1, tta=False)
    indexer.update(tmp_path / "train", tmp_path / "warm", warm)  # imports (faiss, scipy …) before tracing
    small, large, peaks = 600, 1800, {}
    for n in (small, large):
        folder = _folder(tmp_path / f"c{n}", n)

        def progress(stage, done, total, n=n, **kw):
            if stage == "embed" and done >= total:
                peaks[n] = tracemalloc.get_traced_memory()[1]

        tracemalloc.start()
        try:
            indexer.update(
                folder,
                tmp_path / f"idx{n}",
                BuildOptions.of(model=str(model), workers=1, tta=False, chunk_size=50),
                progress=progress,
            )
        finally:
            tracemalloc.stop()
    dim = 128
    per_image = (peaks[large] - peaks[small]) / (large - small)
    print(f"peaks through embedding {peaks}: {per_image:.0f} B per extra image, vectors {4 * (dim + 3)} B")
    assert per_image < 4 * (dim + 3) + 64, (peaks, per_image)

"""Unit tests for simsearch.discover: which files under a folder are images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from synth import write

from simsearch import discover as discover_mod
from simsearch.discover import discover
from simsearch.errors import SimsearchError

# ---------------------------------------------------------------- discover


def test_discover_sorted_recursive_and_filtered(tmp_path):
    img = Image.new("L", (4, 4))
    for rel in ["b.png", "a/z.JPG", "a/y.gif", "a.png", "c/d/e.tiff", "B.bmp"]:
        write(tmp_path / rel, img)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a" / "data.npy").write_bytes(b"x")
    files, problems = discover(tmp_path)
    rel = [p.relative_to(tmp_path).as_posix() for p in files]
    # byte order of the relative POSIX path: 'B' < 'a', 'a.png' < 'a/...' ('.' < '/')
    assert rel == ["B.bmp", "a.png", "a/y.gif", "a/z.JPG", "b.png", "c/d/e.tiff"]
    assert problems == []
    assert all(p.parent.is_relative_to(tmp_path) for p in files)


def test_discover_skips_hidden_files_and_dirs(tmp_path):
    img = Image.new("L", (4, 4))
    write(tmp_path / "visible.png", img)
    write(tmp_path / ".hidden.png", img)
    write(tmp_path / ".cache" / "x.png", img)
    write(tmp_path / "sub" / ".also.png", img)
    files, problems = discover(tmp_path)
    assert [p.name for p in files] == ["visible.png"]
    assert problems == []


def test_discover_hidden_root_is_still_walked(tmp_path):
    root = tmp_path / ".thumbnails"
    write(root / "x.png", Image.new("L", (4, 4)))
    files, _ = discover(root)
    assert files == [root / "x.png"]


def test_discover_keeps_relative_root_relative(tmp_path, monkeypatch):
    write(tmp_path / "imgs" / "x.png", Image.new("L", (4, 4)))
    monkeypatch.chdir(tmp_path)
    files, _ = discover("imgs")
    assert files == [Path("imgs") / "x.png"]


def test_discover_single_file_root(tmp_path):
    p = write(tmp_path / "one.webp", Image.new("RGB", (4, 4)), "WEBP")
    assert discover(p) == ([p], [])
    assert discover(str(p)) == ([p], [])


def test_discover_root_not_image_raises(tmp_path):
    p = tmp_path / "readme.txt"
    p.write_text("hi")
    with pytest.raises(SimsearchError, match="readme.txt"):
        discover(p)


def test_discover_missing_root_raises_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(SimsearchError) as ei:
        discover(missing)
    msg = str(ei.value)
    assert "nope" in msg and "\n" not in msg


def test_discover_is_deterministic(tmp_path):
    img = Image.new("L", (2, 2))
    for i in range(30):
        write(tmp_path / f"d{i % 3}" / f"{(i * 7919) % 101}.png", img)
    assert discover(tmp_path) == discover(tmp_path)


def test_discover_unreadable_dir_monkeypatched(tmp_path, monkeypatch):
    # Works even as root (where chmod 000 does not stop reading).
    write(tmp_path / "ok.png", Image.new("L", (2, 2)))
    bad = tmp_path / "locked"
    write(bad / "x.png", Image.new("L", (2, 2)))
    real_scandir = os.scandir

    def fake_scandir(path):
        if Path(path) == bad:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(discover_mod.os, "scandir", fake_scandir)
    files, problems = discover(tmp_path)
    assert files == [tmp_path / "ok.png"]
    assert problems == [(bad, "cannot read directory: permission denied")]


def test_discover_fifo_with_image_name_is_a_problem_not_a_file(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "pipe.png")
    files, problems = discover(tmp_path)
    assert files == []
    assert problems == [(tmp_path / "pipe.png", "not a regular file")]

"""Smoke tests for the research scripts (scripts/research/): each runs from the repository root as a plain
script and prints its help; the validation split they share (``evaluate.split_folder``) is checked here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simsearch.evaluate import split_folder

ROOT = Path(__file__).resolve().parent.parent
RESEARCH = ROOT / "scripts" / "research"


@pytest.mark.parametrize(
    "script",
    [
        "tune_post.py",
        "post_sweep.py",
        "train_sweep.py",
        "codec_real.py",
        "dupes_pixel.py",
        "dupes_frontier.py",
        "fine_check.py",
        "neardup_misses.py",
        "unseen_edits.py",
        "frozen/fmnist_probe.py",
        "frozen/post_probe.py",
    ],
)
def test_research_script_help(script):
    r = subprocess.run(
        [sys.executable, str(RESEARCH / script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("usage:")


def test_unseen_edits_makes_each_copy_from_the_resized_original():
    sys.path.insert(0, str(RESEARCH))
    try:
        import unseen_edits
    finally:
        sys.path.remove(str(RESEARCH))
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (80, 100, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:, :50, :3] = (200, 30, 30)  # a red left half: mirroring and turning grey show
    img = Image.fromarray(rgba, "RGBA")
    out = {e: np.asarray(unseen_edits.make_copy(img, e, seed=1), np.float32) for e in unseen_edits.EDITS}
    assert all(a.ndim == 3 and a.shape[2] == 3 for a in out.values())
    assert out["none"].shape == (56, 70, 3) and out["upscale 2x"].shape == (112, 140, 3)
    assert out["frame 15%"].shape == (56 + 2 * 10, 70 + 2 * 10, 3) and out["crop 15%"].shape == (40, 50, 3)
    assert out["rotate 90"].shape == (70, 56, 3)
    assert out["none"][:, :30, 0].mean() > 150 and out["mirror"][:, -30:, 0].mean() > 150  # red moved right
    assert (
        np.abs(out["grey"][..., 0] - out["grey"][..., 2]).max()
        < 12
        < np.abs(out["none"][..., 0] - out["none"][..., 2]).max()
    )


def test_dupes_frontier_finds_the_best_thresholds_of_a_toy_set():
    sys.path.insert(0, str(RESEARCH))
    try:
        import dupes_frontier
    finally:
        sys.path.remove(str(RESEARCH))
    one = np.ones(3)
    f = dupes_frontier.frontier(one, np.array([0.99, 0.98, 0.90]), np.ones(1), np.array([0.95]), n_true=3)
    assert f["p_at_r90"][0] == f["p_at_r95"][0] == 0.75  # every planted pair kept costs the one false pair
    assert abs(f["f1"][0] - 2 * 0.75 / 1.75) < 1e-9 and f["f1"][1][1] == 0.90
    assert (
        dupes_frontier.frontier(one, np.array([0.99, 0.98, 0.0]), np.ones(1), np.array([0.95]), 4)["p_at_r90"][1]
        is None
    )


def test_dupes_frontier_crop_grids():
    sys.path.insert(0, str(RESEARCH))
    try:
        import dupes_frontier
    finally:
        sys.path.remove(str(RESEARCH))
    assert dupes_frontier.crop_grid(0.025) == dupes_frontier.COARSE_CROPS
    assert dupes_frontier.crop_grid(0.0125) == dupes_frontier.FINE_CROPS
    fine = dupes_frontier.crop_grid(0.00625)
    assert len(fine) == 15 and fine[-1] == 0.0875 and set(dupes_frontier.FINE_CROPS) <= set(fine)
    pytest.importorskip("scipy")
    g = np.zeros((96, 96, 3), np.uint8)
    g[40:56, 40:56] = 255
    grids = {0: g, 1: None}
    assert dupes_frontier.blurred(grids, 0.0) is grids
    b = dupes_frontier.blurred(grids, 2.0)
    assert b[1] is None and b[0].shape == g.shape and b[0].dtype == np.float32
    assert 0 < b[0][40, 40, 0] < 1 and abs(float(b[0].sum()) - g.sum() / 255) < 1e-2 * g.sum() / 255


def test_split_folder_puts_the_first_files_by_name_in_queries(tmp_path):
    src = tmp_path / "train"
    for i in range(12):  # numbered across class folders, as fetch_fashion_mnist.py writes them
        p = src / ("bag", "coat", "shirt")[i % 3] / f"{i:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(p)
    q, g = split_folder(src, tmp_path / "split", n_queries=5)
    queries = sorted(p.relative_to(q).as_posix() for p in q.rglob("*.png"))
    gallery = sorted(p.relative_to(g).as_posix() for p in g.rglob("*.png"))
    assert sorted(Path(p).name for p in queries) == [f"{i:05d}.png" for i in range(5)]
    assert len(gallery) == 7 and not set(queries) & set(gallery)
    assert "bag/00000.png" in queries and "coat/00007.png" in gallery  # class folders (labels) kept
    assert (q / "bag" / "00000.png").resolve() == (src / "bag" / "00000.png").resolve()
    # an existing split is reused as it is
    assert split_folder(src, tmp_path / "split", n_queries=8) == (q, g)
    assert len(list(q.rglob("*.png"))) == 5
    assert not (tmp_path / "split" / ".partial").exists()


def test_codec_real_compares_ivf_and_sharded_on_an_index(tmp_path):
    from click.testing import CliRunner
    from synth import FAST_CLI, write_corpus

    from simsearch.cli import cli

    write_corpus(tmp_path / "images", per_class=30)
    res = CliRunner().invoke(cli, ["index", str(tmp_path / "images"), "--index", str(tmp_path / "idx"), *FAST_CLI])
    assert res.exit_code == 0, res.output
    r = subprocess.run(
        [sys.executable, str(RESEARCH / "codec_real.py"), "--index", str(tmp_path / "idx")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ivf") or line.startswith("| sharded")]
    assert len(rows) == 2 and ",SQ8 |" in rows[1] and ",Flat |" in rows[0]
    assert all(float(row.split("|")[4]) >= 0.95 for row in rows)  # both tuned to the recall target

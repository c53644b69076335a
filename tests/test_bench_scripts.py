"""Smoke tests for the quality benchmarks: a tiny run of each prints its table. No figures asserted
beyond their range: the real runs and their numbers are in the README."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synth import picture

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _rows(stdout: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| method")
    ]


def test_bench_neardup_prints_simsearch_beside_the_baselines(tmp_path):
    pytest.importorskip("imagehash")
    corpus = tmp_path / "corpus"
    rng = np.random.default_rng(0)
    for i in range(60):
        p = corpus / f"set{i % 3}" / f"pic_{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        picture(rng, int(rng.integers(60, 140)), int(rng.integers(60, 140))).save(p)
    cmd = [
        sys.executable,
        str(SCRIPTS / "bench_neardup.py"),
        "--corpus",
        str(corpus),
        "--copies",
        "8",
        "--strengths",
        "light,default",
        "--epochs",
        "2",
        "--budget",
        "20",
        "--per-edit",
        "--per-edit-copies",
        "8",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row[0]: row[1:] for row in _rows(r.stdout)}
    for name in ("thumb32 colour", "thumb32 grey", "pHash", "dHash"):
        assert name in rows
    sim = [k for k in rows if k.startswith("simsearch (")]
    assert len(sim) == 2 and sim[0].endswith("without the pixel check")  # the ablation row, then the default
    assert all(len(rows[k]) == 4 and all(0.0 <= float(v) <= 1.0 for v in rows[k]) for k in sim)
    assert "One edit at a time" in r.stdout and "scores (median)" in r.stdout
    # the margin over the best baseline, per strength, is simsearch's recall minus that baseline's
    best = {j: max(float(v[j]) for k, v in rows.items() if not k.startswith("simsearch")) for j in range(4)}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("- light:", "- default:"))]
    assert len(lines) == 2
    for s, line in enumerate(lines):
        for j, part in enumerate(line.split(": ", 1)[1].split(", ")):
            m = float(part.split()[1])
            assert abs(m - (float(rows[sim[1]][2 * s + j]) - best[2 * s + j])) <= 2e-3, line


def test_bench_digits_prints_simsearch_beside_the_pixel_baseline():
    pytest.importorskip("sklearn")
    r = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_digits.py"), "--budget", "5"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row[0]: row[1:] for row in _rows(r.stdout)}
    assert "raw pixels (cosine)" in rows
    sim = [k for k in rows if k.startswith("simsearch")]
    assert len(sim) == 1 and all(0.0 <= float(v) <= 1.0 for v in rows[sim[0]][:3])
    checked = {row[0]: row[1:] for row in _rows(r.stdout.split("`simsearch query`")[1]) if row[0] != "pixel check"}
    assert set(checked) == {"off", "on (default)"} and checked["off"][1] == checked["on (default)"][1]  # P@10


def test_bench_dupes_prints_precision_recall_and_runtimes(tmp_path):
    corpus = tmp_path / "corpus"
    rng = np.random.default_rng(0)
    for i in range(40):
        p = corpus / f"set{i % 2}" / f"pic_{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        picture(rng, int(rng.integers(60, 140)), int(rng.integers(60, 140))).save(p)
    cmd = [sys.executable, str(SCRIPTS / "bench_dupes.py"), "--corpus", str(corpus), "--work", str(tmp_path / "w"),
           "--originals", "30", "--plant", "8", "--budget", "15", "--epochs", "2", "--no-imagededup",
           "--synthetic", "20000", "--json", str(tmp_path / "r.json")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "precision" in r.stdout and "20000 synthetic 64-d vectors" in r.stdout
    import json

    res = json.loads((tmp_path / "r.json").read_text())
    assert 0 <= res["simsearch"]["precision"] <= 1 and 0 <= res["simsearch"]["recall"] <= 1
    assert res["synthetic"]["planted_recall"] > 0.95  # tight planted pairs in random 64-d vectors
    # the pixel check alone on that index: the per-pair reference beside all pairs at once, the same numbers
    cmd = [sys.executable, str(SCRIPTS / "bench_dupes.py"), "--skip-set", "--big-index", str(tmp_path / "w" / "index"),
           "--pixel-check", "--json", str(tmp_path / "p.json")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    pc = json.loads((tmp_path / "p.json").read_text())["pixel_check"]
    assert pc["pairs"] > 0 and [run["path"].split(",")[0] for run in pc["runs"]] == [
        "one pair at a time (before)",
        "all pairs at once",
        "all pairs at once",
    ]
    assert max(run["max_abs_diff"] for run in pc["runs"]) < 1e-5
    assert "pairs/s" in r.stdout and "max |diff|" in r.stdout


@pytest.mark.slow
def test_bench_outliers_planted_clipart_rank_at_the_top(tmp_path):
    """A small plant (2,000 Fashion-MNIST images + 10 clip-art drawings) at a fixed 20 epochs, so the
    result does not hang on the machine's load: every planted image in the top 20 by ``--by recon``
    (measured: ranks 1–10 with seed 0, 1–9 and 11 with seed 1). The script exits 1 when one is outside.
    Issue #11's full goal (20 of 20 in the top 40 of 5,020 at 69 epochs) is measured by the same script
    with other arguments; see the README (19 of 20)."""
    fm, clip = Path("data/fashion-mnist/train"), Path("/usr/share/openclipart/png")
    if not fm.is_dir() or not clip.is_dir():
        pytest.skip("needs data/fashion-mnist (scripts/fetch_fashion_mnist.py) and Debian's openclipart-png")
    cmd = [sys.executable, str(SCRIPTS / "bench_outliers.py"), "--fmnist", str(fm), "--clipart", str(clip),
           "--work", str(tmp_path / "w"), "--n", "2000", "--plant", "10", "--top", "20",
           "--epochs", "20", "--budget", "900"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "all in top 20: True" in r.stdout


def test_bench_recon_store_times_the_embedding_pass_and_outliers(shared_index, shared_corpus, tmp_path):
    import json

    from simsearch import store

    model = store.model_path(shared_index.path, shared_index.meta.model.sha256)
    cmd = [sys.executable, str(SCRIPTS / "bench_recon_store.py"), "--folder", str(shared_corpus), "--model",
           str(model), "--work", str(tmp_path / "w"), "--workers", "1", "--json", str(tmp_path / "r.json")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["images"] == len(shared_index) and res["format_version"] == 4 and res["recon_columns"] == 3
    assert res["outliers_computed_from_files"] == 0  # the index stores every value
    assert res["embed"]["cpu_s"] > 0 and res["embed_images_per_cpu_s"] > 0 and len(res["top5"]) == 5


def test_bench_dupes_originals_skip_the_same_drawing_on_another_canvas(tmp_path):
    """The distinctness test of the generated set: the same drawing pasted on a larger white canvas is
    skipped as near-identical (its whole-picture thumbnail alone would have let it through), a
    different drawing is picked."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import bench_dupes
    finally:
        sys.path.remove(str(SCRIPTS))
    from PIL import Image, ImageDraw

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    drawing = Image.new("RGB", (120, 90), "white")
    d = ImageDraw.Draw(drawing)
    d.ellipse((10, 10, 70, 80), fill="navy")
    d.rectangle((60, 20, 110, 50), fill="orange")
    on_canvas = Image.new("RGB", (300, 260), "white")
    on_canvas.paste(drawing, (150, 20))
    other = Image.new("RGB", (120, 90), "white")
    ImageDraw.Draw(other).polygon([(5, 85), (60, 5), (115, 85)], fill="darkgreen")
    for name, img in (("a.png", drawing), ("b.png", on_canvas), ("c.png", other)):
        img.save(corpus / name)
    whole = [bench_dupes.grey_thumb(i) for i in (drawing, on_canvas)]
    assert float(whole[0] @ whole[1]) < bench_dupes.DISTINCT_CORR  # the older test alone: "distinct"
    picked, near = bench_dupes.pick_originals(corpus, 3, seed=0)
    assert near == 1 and len(picked) == 2 and "c.png" in {p.name for p in picked}

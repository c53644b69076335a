"""The command line end to end, through click's CliRunner (and one real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from synth import FAST_CLI, make_image

import simsearch
from simsearch.cli import cli


def run(*args, ok=True):
    res = CliRunner().invoke(cli, [str(a) for a in args], obj={})
    if ok and res.exit_code != 0:
        raise AssertionError(f"exit {res.exit_code}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}\n{res.exception!r}")
    return res


def counts(stderr: str) -> dict[str, int]:
    line = next(ln for ln in stderr.splitlines() if ln.startswith("indexed "))
    parts = line.split(": ", 1)[1].split(" / ")
    return {p.split()[0]: int(p.split()[1]) for p in parts}


@pytest.fixture
def built(shared_index, shared_corpus):
    """(corpus, index dir) of the session's shared index: for tests that only read it."""
    return shared_corpus, shared_index.path


@pytest.fixture
def built_copy(index_copy):
    """(corpus, index dir): a private copy of the shared index and its corpus, for tests that change them."""
    return index_copy.root, index_copy.path


def test_index_query_update_cycle(corpus, tmp_path):
    # built here with the command line, from nothing (the other tests share an index built once)
    idx = tmp_path / "idx"
    res = run("index", corpus, "--index", idx, *FAST_CLI)
    assert counts(res.stderr) == {"added": 60, "updated": 0, "removed": 0, "unchanged": 0, "skipped": 0}
    q = corpus / "disc" / "disc_000.png"
    res = run("query", q, "--index", idx, "-k", "5")
    lines = res.stdout.splitlines()
    assert lines[0].startswith("query:") and "rank" in lines[1]
    assert len(lines) == 2 + 5
    assert not any("disc_000.png" in ln for ln in lines[2:])  # an indexed query is left out of its own results

    # add 3, delete 2, modify 1
    rng = np.random.default_rng(9)
    for i in range(3):
        make_image("square", rng).save(corpus / "square" / f"new_{i}.png")
    deleted = [corpus / "stripes" / "stripes_000.png", corpus / "disc" / "disc_005.png"]
    for p in deleted:
        p.unlink()
    modified = corpus / "square" / "square_003.png"
    make_image("disc", rng).save(modified)
    res = run("index", corpus, "--index", idx, *FAST_CLI)
    assert counts(res.stderr) == {"added": 3, "updated": 1, "removed": 2, "unchanged": 57, "skipped": 0}
    assert "trained" not in res.stderr  # the model is kept

    # deleted files never come back, whatever the query
    res = run(
        "query", *[corpus / "disc" / f"disc_{i:03d}.png" for i in range(1, 4)], "--index", idx, "-k", "58", "--json"
    )
    returned = {h["relpath"] for line in res.stdout.splitlines() for h in json.loads(line)["hits"]}
    assert not returned & {"stripes/stripes_000.png", "disc/disc_005.png"}
    assert {"square/new_0.png", "square/new_1.png", "square/new_2.png"} <= returned

    # unchanged folder: nothing to do
    res = run("index", corpus, "--index", idx, *FAST_CLI)
    assert counts(res.stderr) == {"added": 0, "updated": 0, "removed": 0, "unchanged": 61, "skipped": 0}


def test_touch_without_change_is_not_an_update(built_copy):
    corpus, idx = built_copy
    p = corpus / "disc" / "disc_001.png"
    t = time.time() + 100
    os.utime(p, (t, t))
    res = run("index", corpus, "--index", idx, *FAST_CLI)
    assert counts(res.stderr)["updated"] == 0 and counts(res.stderr)["unchanged"] == 60


def test_query_json_lines_and_grid(built, tmp_path):
    corpus, idx = built
    ext = tmp_path / "outside.png"
    make_image("stripes", np.random.default_rng(3)).save(ext)
    grid = tmp_path / "sheet.png"
    res = run("query", ext, corpus / "square" / "square_001.png", "--index", idx, "-k", "4", "--json", "--grid", grid)
    rows = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert len(rows) == 2 and all(len(r["hits"]) == 4 for r in rows)
    assert [h["rank"] for h in rows[0]["hits"]] == [1, 2, 3, 4]
    scores = [h["score"] for h in rows[0]["hits"]]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.width > 4 * 100 and im.height > 2 * 100


def test_query_indexed_by_id_and_path(built):
    corpus, idx = built
    res = run("query", "--indexed", "square/square_002.png", "--index", idx, "-k", "3", "--json")
    hits = json.loads(res.stdout)["hits"]
    assert len(hits) == 3 and all(h["relpath"] != "square/square_002.png" for h in hits)
    res = run("query", "--indexed", str(hits[0]["id"]), "--index", idx, "-k", "2", "--json", "--include-self")
    assert json.loads(res.stdout)["hits"][0]["id"] == hits[0]["id"]
    res = run("query", "--indexed", "nope/missing.png", "--index", idx, ok=False)
    assert res.exit_code == 1 and "not in the index" in res.stderr


def test_k_larger_than_index_returns_all(built):
    corpus, idx = built
    res = run("query", corpus / "disc" / "disc_001.png", "--index", idx, "-k", "1000", "--json")
    assert len(json.loads(res.stdout)["hits"]) == 59


def test_errors_are_one_line_with_exit_codes(built, tmp_path):
    corpus, idx = built
    res = run("query", tmp_path / "missing.png", "--index", idx, ok=False)
    assert res.exit_code == 1
    assert res.stderr.strip() == f"Error: {tmp_path / 'missing.png'}: file not found"
    res = run("query", corpus / "disc" / "disc_001.png", "--index", tmp_path / "no-index", ok=False)
    assert res.exit_code == 1 and "no index here" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run("query", corpus, "--index", idx, ok=False)
    assert res.exit_code == 1 and "is a directory" in res.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    res = run("query", bad, "--index", idx, ok=False)
    assert res.exit_code == 1 and str(bad) in res.stderr and "Traceback" not in res.stderr
    res = run("query", bad, "--index", idx, "-k", "0", ok=False)
    assert res.exit_code == 2
    res = run("query", "--index", idx, ok=False)  # no images
    assert res.exit_code == 2
    res = run("index", tmp_path / "no-such-folder", "--index", idx, ok=False)
    assert res.exit_code == 1 and "no such folder" in res.stderr
    res = run("index", corpus, "--bogus-flag", ok=False)
    assert res.exit_code == 2


def test_info(built):
    corpus, idx = built
    res = run("info", "--index", idx, "--json")
    d = json.loads(res.stdout)
    assert d["images"] == 60 and d["dim"] == 128 and d["input"] == "1×32×32" and d["format_version"] == 4
    assert d["recon_stats"] == "stored"  # every column known: a build stores the denoising error too
    assert d["faiss_factory"] == "IDMap2,Flat" and d["metric"] == "cosine" and d["disk_bytes"] > 0
    res = run("info", "--index", idx)
    assert "images" in res.stdout and "60" in res.stdout


def test_corrupt_file_is_skipped_and_reported(corpus, tmp_path):
    (corpus / "disc" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    idx = tmp_path / "idx"
    res = run("index", corpus, "--index", idx, *FAST_CLI)
    assert counts(res.stderr)["skipped"] == 1
    assert "broken.png" in res.stderr
    res = run("info", "--index", idx, "--skipped")
    assert "disc/broken.png" in res.stdout


def test_train_then_index_with_model(corpus, tmp_path):
    model = tmp_path / "m.pt"
    res = run("train", corpus, "-o", model, *FAST_CLI)
    assert model.exists() and "sha256:" in res.stdout
    idx = tmp_path / "idx"
    res = run("index", corpus, "--index", idx, "--model", model)
    assert "trained" not in res.stderr and counts(res.stderr)["added"] == 60
    run("query", corpus / "disc" / "disc_001.png", "--index", idx, "--model", model)
    other = tmp_path / "other.pt"
    other.write_bytes(model.read_bytes() + b"x")
    res = run("query", corpus / "disc" / "disc_001.png", "--index", idx, "--model", other, ok=False)
    assert res.exit_code == 1 and "does not match" in res.stderr
    # --fit applies to a given model too (a model file does not record one)
    padded = tmp_path / "padded"
    run("index", corpus, "--index", padded, "--model", model, "--fit", "pad")
    assert simsearch.Index.open(padded).preprocess.fit == "pad"


def test_help_does_not_import_torch_faiss_or_ray():
    code = (
        "import sys; from simsearch.cli import cli\n"
        "try:\n    cli(['--help'], obj={})\nexcept SystemExit:\n    pass\n"
        "for cmd in sorted(cli.commands):\n"
        "    try:\n        cli([cmd, '--help'], obj={})\n    except SystemExit:\n        pass\n"
        "bad = [m for m in ('torch', 'faiss', 'numpy', 'ray', 'pyarrow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Example:" in out.stdout


def test_every_command_help_has_an_example():
    for cmd in cli.commands:
        res = run(cmd, "--help")
        assert "Example" in res.stdout, cmd


def test_empty_index_after_every_file_is_deleted(built_copy):
    corpus, idx = built_copy
    for p in corpus.rglob("*.png"):
        p.unlink()
    res = run("index", corpus, "--index", idx, *FAST_CLI)
    assert counts(res.stderr) == {"added": 0, "updated": 0, "removed": 60, "unchanged": 0, "skipped": 0}
    ext = corpus / "new.png"
    make_image("disc", np.random.default_rng(0)).save(ext)
    res = run("query", ext, "--index", idx, ok=False)
    assert res.exit_code == 1 and "the index is empty" in res.stderr
    import simsearch

    assert simsearch.Index.open(idx).query(ext) == []
    res = run("verify", "--index", idx)
    assert res.exit_code == 0

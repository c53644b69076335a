"""File names that are not UTF-8 through the command line: JSON gives back the exact bytes
(``os.fsencode(json.loads(line)[...]["path"])``), text output shows them readably and never crashes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from synth import FAST_CLI, make_image, write_corpus

from simsearch.cli import cli

pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems reject non-UTF-8 names")

BAD = b"bad\xffname.png"  # a valid image whose name is not UTF-8
BROKEN = b"broken\xfe.png"  # not an image: skipped


def run(*args):
    # CliRunner's streams encode strictly as UTF-8: a lone surrogate written to them raises
    res = CliRunner().invoke(cli, [a if isinstance(a, str) else os.fsdecode(a) for a in args], obj={})
    assert res.exit_code == 0, f"exit {res.exit_code}\n{res.stdout}\n{res.stderr}\n{res.exception!r}"
    return res


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("odd")
    root = tmp / "images"
    write_corpus(root, per_class=4)
    bad = os.path.join(os.fsencode(root), b"disc", BAD)
    make_image("disc", np.random.default_rng(7)).save(Path(os.fsdecode(bad)))
    with open(os.path.join(os.fsencode(root), b"disc", BROKEN), "wb") as f:
        f.write(b"not an image")
    idx = tmp / "idx"
    res = run("index", root, "--index", idx, "--json", *FAST_CLI)
    return root, idx, bad, res


def test_index_json_reports_skipped_names_byte_exact(odd):
    _root, _idx, _bad, res = odd
    res.stdout.encode("ascii")  # escapes only
    report = json.loads(res.stdout)
    assert report["added"] == 13
    assert [os.fsencode(s["path"]) for s in report["skipped"]] == [b"disc/" + BROKEN]


def test_query_json_path_round_trips_to_the_file_bytes(odd):
    root, idx, bad, _ = odd
    res = run("query", "--indexed", os.fsdecode(b"disc/" + BAD), "--include-self", "-k", "3", "--index", idx, "--json")
    res.stdout.encode("ascii")
    row = json.loads(res.stdout)
    assert os.fsencode(row["query"]) == b"disc/" + BAD
    top = row["hits"][0]
    assert os.fsencode(top["relpath"]) == b"disc/" + BAD
    assert os.fsencode(os.path.abspath(top["path"])) == bad
    with open(os.fsencode(top["path"]), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # the file itself as the query (by its path): found, and the label comes back as given
    res = run("query", bad, "--include-self", "-k", "1", "--index", idx, "--json")
    row = json.loads(res.stdout)
    assert os.fsencode(os.path.abspath(row["query"])) == bad
    assert os.fsencode(row["hits"][0]["relpath"]) == b"disc/" + BAD


def test_query_table_shows_the_name_readably(odd):
    root, idx, bad, _ = odd
    res = run("query", bad, "--include-self", "-k", "2", "--index", idx)
    lines = res.stdout.splitlines()
    assert lines[0].startswith("query: ") and lines[0].endswith("disc/bad\\xffname.png")
    assert lines[2].split()[:2] == ["1", "1.0000"] and lines[2].endswith("disc/bad\\xffname.png")


def test_skipped_listing_text_and_json(odd):
    _root, idx, _bad, _ = odd
    res = run("info", "--skipped", "--index", idx)
    assert res.stdout.strip() == "disc/broken\\xfe.png: not a recognised image format"
    res = run("info", "--skipped", "--index", idx, "--json")
    res.stdout.encode("ascii")
    (row,) = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert os.fsencode(row["path"]) == b"disc/" + BROKEN


def test_errors_show_odd_names_readably(odd, tmp_path):
    _root, idx, _bad, _ = odd
    missing = os.path.join(os.fsencode(tmp_path), b"gone\xff.png")
    res = CliRunner().invoke(cli, ["query", os.fsdecode(missing), "--index", str(idx)], obj={})
    assert res.exit_code == 1
    assert res.stderr.strip() == f"Error: {tmp_path}/gone\\xff.png: file not found"


def test_http_api_paths_round_trip_too(odd):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from simsearch.serve.app import create_app

    _root, idx, bad, _ = odd
    client = TestClient(create_app(idx))
    browse = client.get("/api/images?offset=0&limit=100")
    assert browse.status_code == 200
    browse.content.decode("ascii")  # escapes only
    (entry,) = [x for x in browse.json()["images"] if os.fsencode(x["relpath"]) == b"disc/" + BAD]
    assert os.fsencode(entry["path"]) == bad
    hits = client.get(f"/api/neighbors/{entry['id']}?k=12").json()["hits"]
    others = client.get(f"/api/neighbors/{hits[0]['id']}?k=12").json()["hits"]
    assert bad in [os.fsencode(h["path"]) for h in others]

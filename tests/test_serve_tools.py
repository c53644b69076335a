"""The whole-folder tools in ``simsearch serve`` (duplicates, outliers, map, reconstructions)
through FastAPI's TestClient: each answers what the library (and so the CLI) answers, changes no
file, and rejects bad parameters with a JSON error."""

from __future__ import annotations

import io
import shutil

import pytest
from conftest import tree_digest
from PIL import Image
from serve_helpers import build_index, make_client

pytest.importorskip("fastapi")

from simsearch import dupes, outliers  # noqa: E402
from simsearch.api import Index  # noqa: E402
from simsearch.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("tools")
    corpus, index = build_index(base)
    shutil.copyfile(corpus / "disc" / "disc_000.png", corpus / "disc_000_copy.png")  # an exact duplicate
    Index.open(index).update()
    return corpus, index


@pytest.fixture(scope="module")
def client(built, tmp_path_factory):
    _, index = built
    return make_client(create_app(index, cache_dir=tmp_path_factory.mktemp("cache")))


def test_tools_page_is_served(client):
    r = client.get("/tools")
    assert r.status_code == 200 and "tools.js" in r.text
    assert client.get("/static/tools.js").status_code == 200


def test_dupes_api_answers_as_the_library(built, client):
    corpus, index = built
    before = tree_digest(corpus)
    r = client.get("/api/dupes?threshold=0.99")
    assert r.status_code == 200, r.text
    doc = r.json()
    lib = dupes.find(Index.open(index), 0.99)
    assert doc["threshold"] == 0.99 and "given with --threshold" in doc["why"]
    got = [g["keep"]["path"] for g in doc["groups"]]
    assert len(doc["groups"]) == len(lib.groups)
    assert [[m["path"] for m in [g["keep"], *g["others"]]] for g in doc["groups"]] == [
        [m.path for m in g.members] for g in lib.groups
    ]
    assert got and all(g["keep"]["thumb"].startswith("/thumb/") for g in doc["groups"])
    exact = [g for g in doc["groups"] if g["exact"]]
    assert {exact[0]["keep"]["path"], exact[0]["others"][0]["path"]} == {"disc/disc_000.png", "disc_000_copy.png"}
    assert client.get("/api/dupes?threshold=2").status_code == 422
    assert tree_digest(corpus) == before  # nothing moved or written


def test_outliers_api_answers_as_the_library(built, client):
    _, index = built
    r = client.get("/api/outliers?n=5&by=knn")
    assert r.status_code == 200, r.text
    doc = r.json()
    lib = outliers.find(Index.open(index), 5, "knn")
    assert [o["id"] for o in doc["outliers"]] == [o.id for o in lib.outliers]
    assert doc["outliers"][0]["rank"] == 1 and "thumb" in doc["outliers"][0] and "mean cosine" in doc["note"]
    assert client.get("/api/outliers?by=pixels").status_code == 422
    assert client.get("/api/outliers?n=0").status_code == 422


def test_map_api_gives_every_image_its_own_cell(client):
    doc = client.get("/api/map?sample=30").json()
    cells = {(m["col"], m["row"]) for m in doc["images"]}
    assert len(doc["images"]) == 30 and len(cells) == 30
    assert all(0 <= c < doc["grid"]["columns"] and 0 <= r < doc["grid"]["rows"] for c, r in cells)


def test_reconstruction_is_a_png(built, client):
    _, index = built
    some = Index.open(index).entries()[3].id
    r = client.get(f"/reconstruction/{some}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size[0] > 100
    assert client.get("/reconstruction/999999").status_code == 404

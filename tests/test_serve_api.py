"""``simsearch serve``'s JSON API through FastAPI's TestClient: every endpoint, every bad input
(a 4xx with a JSON message, never a traceback, never a file outside the index), the CLI command,
and the start-up checks (limits, loopback)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image
from serve_helpers import build_index, build_pictures_index, make_client
from synth import encode, make_image
from test_hostile_files import png_header_only

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

from simsearch.api import Index  # noqa: E402
from simsearch.render import hit_json  # noqa: E402
from simsearch.serve.app import MAX_K, create_app  # noqa: E402
from simsearch.serve.run import is_loopback, loopback_names, parse_size  # noqa: E402

HIT_KEYS = {"rank", "score", "pixel", "id", "path", "relpath"}  # `simsearch query --json`


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_index(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(built, tmp_path_factory):
    _, index = built
    app = create_app(index, max_upload=200_000, cache_dir=tmp_path_factory.mktemp("cache"))
    return make_client(app)


def new_image(seed: int = 7, kind: str = "disc", fmt: str = "PNG") -> bytes:
    return encode(make_image(kind, np.random.default_rng(seed)), fmt)


def upload(client, data: bytes, name: str = "query.png", k: int | None = 5, ctype: str = "image/png", **kw):
    url = "/api/query" if k is None else f"/api/query?k={k}"
    return client.post(url, files={"image": (name, data, ctype)}, **kw)


def error_of(resp, status: int) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    return body["error"]


# ---------------------------------------------------------------- endpoints


def test_health_and_info(client, built):
    _, index = built
    h = client.get("/health").json()
    assert h == {"status": "ok", "images": 60, "generation": "gen-000001"}
    info = client.get("/api/info").json()
    assert info["images"] == 60 and info["generation"] == "gen-000001"
    assert info["server"]["max_upload"] == 200_000 and info["server"]["max_k"] == MAX_K
    assert {k: v for k, v in info.items() if k not in ("generation", "server")} == Index.open(index).info()


def test_images_pages_through_the_index_in_id_order(client, built):
    _, index = built
    entries = Index.open(index).entries()
    seen = []
    for offset in range(0, 60, 25):
        page = client.get(f"/api/images?offset={offset}&limit=25").json()
        assert page["total"] == 60 and page["offset"] == offset and page["limit"] == 25
        seen += page["images"]
    assert [im["id"] for im in seen] == [e.id for e in entries]
    assert [im["relpath"] for im in seen] == [e.path for e in entries]
    first = seen[0]
    assert first["thumb"].startswith(f"/thumb/{first['id']}?v=") and first["image"] == f"/image/{first['id']}"
    assert client.get("/api/images?offset=1000").json()["images"] == []


def test_neighbors_are_the_library_s_with_the_cli_schema(client, built):
    _, index = built
    idx = Index.open(index)
    r = client.get("/api/neighbors/3?k=7")
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == "id:3" and body["id"] == 3 and body["relpath"] == idx.entries()[3].path
    assert body["k"] == 7 and body["generation"] == "gen-000001"
    expected = [hit_json(h) for h in idx.neighbors(3, 7)]
    assert [{k: h[k] for k in HIT_KEYS} for h in body["hits"]] == expected
    assert all(set(h) == HIT_KEYS | {"thumb", "image"} for h in body["hits"])
    assert 3 not in [h["id"] for h in body["hits"]]


def test_query_by_upload_matches_the_cli_on_the_same_file(client, built, tmp_path):
    _, index = built
    data = new_image()
    path = tmp_path / "new.png"
    path.write_bytes(data)
    r = upload(client, data, "new.png", k=6)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "upload:new.png" and body["k"] == 6
    expected = [hit_json(h) for h in Index.open(index).query(path, k=6)]
    assert [{k: h[k] for k in HIT_KEYS} for h in body["hits"]] == expected
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5, 6]


def test_upload_of_an_indexed_file_finds_it_first(client, built):
    corpus, index = built
    e = Index.open(index).entries()[42]
    body = upload(client, (corpus / e.path).read_bytes(), "copy.png", k=3).json()
    assert body["hits"][0]["id"] == 42 and body["hits"][0]["score"] == 1.0


def test_upload_of_a_resaved_copy_is_marked_a_copy_by_the_pixel_check(tmp_path):
    from simsearch.preprocess import to_display

    corpus, index = build_pictures_index(tmp_path)
    idx = Index.open(index)
    assert idx.pixel_threshold is not None  # distinct pictures: the check calibrates itself on
    e = idx.entries()[17]
    buf = io.BytesIO()
    with Image.open(corpus / e.path) as im:
        to_display(im).resize((im.width * 3 // 4, im.height * 3 // 4)).save(buf, "JPEG", quality=85)
    body = upload(make_client(create_app(index, cache_dir=tmp_path / "cache")), buf.getvalue(), "copy.jpg", k=3).json()
    assert body["hits"][0]["id"] == 17 and body["hits"][0]["pixel"] >= idx.pixel_threshold
    assert all(h["pixel"] is None for h in body["hits"][1:])


def test_the_pixel_check_is_off_where_look_alikes_match_as_well_as_copies(client, built):
    _, index = built  # three kinds of noisy shapes: a copy's pixels are no closer than a look-alike's
    idx = Index.open(index)
    assert idx.pixel_threshold is None and idx.info()["pixel_check"].startswith("off")
    body = upload(client, new_image(), "new.png", k=5).json()
    assert all(h["pixel"] is None for h in body["hits"])


def test_upload_jpeg_raw_body_and_k_as_a_form_field(client):
    jpeg = new_image(3, "square", "JPEG")
    raw = client.post("/api/query?k=4", content=jpeg, headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200 and len(raw.json()["hits"]) == 4
    form = client.post("/api/query", files={"image": ("q.jpg", jpeg, "image/jpeg")}, data={"k": "2"})
    assert form.status_code == 200 and len(form.json()["hits"]) == 2
    assert form.json()["hits"] == raw.json()["hits"][:2]


def test_more_results_extend_the_same_ranking(client):
    few = client.get("/api/neighbors/10?k=5").json()["hits"]
    more = client.get("/api/neighbors/10?k=12").json()["hits"]
    assert more[:5] == few and len(more) == 12
    everything = client.get(f"/api/neighbors/10?k={MAX_K}").json()["hits"]
    assert len(everything) == 59  # all but itself


def test_thumbnail_is_cached_on_disk_with_an_etag(built, tmp_path):
    corpus, index = built
    cache = tmp_path / "cache"
    c = make_client(create_app(index, cache_dir=cache))
    e = Index.open(index).entries()[5]
    r = c.get(f"/thumb/5?v={e.sha256[:12]}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    assert r.headers["etag"].startswith(f'"{e.sha256[:32]}') and "immutable" in r.headers["cache-control"]
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "WEBP" and img.size == (32, 32)  # small images are not enlarged
    assert [p.name for p in cache.rglob("*.webp")] == [f"{e.sha256}-256.webp"]
    assert c.get("/thumb/5", headers={"if-none-match": r.headers["etag"]}).status_code == 304
    assert c.get("/thumb/5").headers["cache-control"] == "no-cache"  # without the content version


def test_thumbnail_of_a_large_image_fits_256(tmp_path):
    from simsearch.serve.media import make_thumbnail

    big = encode(Image.new("RGBA", (1200, 600), (200, 30, 30, 128)), "PNG")
    img = Image.open(io.BytesIO(make_thumbnail(big, 256)))
    assert img.size == (256, 128) and img.mode == "RGB"


def test_original_is_served_byte_for_byte(client, built):
    corpus, index = built
    e = Index.open(index).entries()[7]
    r = client.get("/image/7")
    assert r.status_code == 200 and r.content == (corpus / e.path).read_bytes()
    assert r.headers["content-type"] == "image/png" and r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/image/7", headers={"if-none-match": r.headers["etag"]}).status_code == 304


def test_page_static_files_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css", "favicon.svg"):
        r = client.get(f"/static/{asset}")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache" and r.headers["etag"]
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/query", "/api/neighbors/{id}", "/api/images", "/api/info", "/health", "/thumb/{id}", "/image/{id}"):
        assert p in paths
    assert "multipart/form-data" in paths["/api/query"]["post"]["requestBody"]["content"]
    assert "access-control-allow-origin" not in page.headers  # no CORS


# ---------------------------------------------------------------- bad input → 4xx JSON


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("notes.txt", b"just some text, not an image\n" * 10, "not a recognised image format"),
        ("truncated.png", None, "truncated"),
        ("bomb.png", png_header_only(100_000, 100_000), "image too large: 100000x100000 pixels"),
        ("empty.png", b"", "empty file"),
        ("random.jpg", bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)), "not a recognised"),
    ],
)
def test_unreadable_uploads_are_422_with_the_reason(client, name, data, reason):
    if data is None:
        full = encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
        data = full[: len(full) // 2]
    msg = error_of(upload(client, data, name), 422)
    assert msg.startswith(f"{name}: ") and reason in msg


def test_oversized_upload_is_413_before_it_is_read(client):
    msg = error_of(upload(client, b"\0" * 300_000, "huge.png"), 413)
    assert msg.startswith("upload too large (300.") and msg.endswith("up to 200 KB")


def streamed(head: bytes, ctype: str, chunks: int = 100, size: int = 65536):
    """A request whose body arrives in ``chunks`` pieces; ``received[0]`` counts the pieces read."""
    from starlette.requests import Request

    received = [0]

    async def receive():
        received[0] += 1
        body = head if received[0] == 1 else b"\0" * size
        return {"type": "http.request", "body": body, "more_body": received[0] < chunks}

    scope = {"type": "http", "method": "POST", "path": "/api/query", "query_string": b""}
    scope["headers"] = [(b"content-type", ctype.encode())]
    return Request(scope, receive), received


@pytest.mark.parametrize("multipart", [False, True])
def test_an_upload_without_a_length_is_refused_while_it_streams(multipart):
    import asyncio

    from simsearch.serve.upload import UploadError, read_upload

    if multipart:
        head = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'
        request, received = streamed(head, "multipart/form-data; boundary=xyz")
    else:
        request, received = streamed(b"", "application/octet-stream")
    with pytest.raises(UploadError) as err:
        asyncio.run(read_upload(request, 200_000))
    assert err.value.status == 413 and "up to 200 KB" in err.value.message
    assert received[0] <= 5  # 4 chunks of 64 KiB pass 200 KB: the other 95 are never read


def test_oversized_upload_without_a_length_is_413(client):
    def chunks():
        for _ in range(10):
            yield b"\0" * 65536

    r = client.post("/api/query", content=chunks(), headers={"content-type": "application/octet-stream"})
    assert "200 KB" in error_of(r, 413)


@pytest.mark.parametrize(
    "kwargs,status,fragment",
    [
        ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415, "multipart/form-data"),
        ({"data": {"k": "3"}, "files": {"other": ("a.txt", b"x", "text/plain")}}, 200, None),
        ({"content": b"--x--\r\n", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, "no image"),
        ({"content": b"garbage", "headers": {"content-type": "multipart/form-data"}}, 400, "boundary"),
    ],
)
def test_malformed_requests(client, kwargs, status, fragment):
    r = client.post("/api/query", **kwargs)
    if status == 200:  # a file under another field name is still the one file: it is not an image
        assert error_of(r, 422).startswith("a.txt: ")
        return
    assert fragment in error_of(r, status)


def test_two_images_in_one_request_are_refused(client):
    png = new_image()
    files = [("image", ("a.png", png, "image/png")), ("image", ("b.png", png, "image/png"))]
    assert "one image" in error_of(client.post("/api/query", files=files), 400)


@pytest.mark.parametrize("k", ["0", "-1", "abc", "1.5", str(MAX_K + 1)])
def test_bad_k_is_422(client, k):
    assert "k" in error_of(client.get(f"/api/neighbors/1?k={k}"), 422)
    assert "k" in error_of(client.post(f"/api/query?k={k}", files={"image": ("a.png", new_image())}), 422)
    form = client.post("/api/query", files={"image": ("a.png", new_image())}, data={"k": k})
    assert "k must be" in error_of(form, 422)


@pytest.mark.parametrize("url", ["/api/images?offset=-1", "/api/images?limit=0", "/api/images?limit=100000"])
def test_bad_paging_is_422(client, url):
    error_of(client.get(url), 422)


@pytest.mark.parametrize("route", ["/api/neighbors/{}", "/thumb/{}", "/image/{}"])
def test_unknown_or_malformed_ids(client, route):
    assert error_of(client.get(route.format(99999)), 404) == "id 99999 is not in the index"
    assert error_of(client.get(route.format(-1)), 404) == "id -1 is not in the index"
    error_of(client.get(route.format("abc")), 422)
    error_of(client.get(route.format("1e3")), 422)


@pytest.mark.parametrize(
    "url",
    [
        "/thumb/../../etc/passwd",
        "/thumb/..%2F..%2Fetc%2Fpasswd",
        "/image/..%2F..%2F..%2Fetc%2Fpasswd",
        "/image/%2Fetc%2Fpasswd",
        "/static/../../../../etc/passwd",
        "/static/..%2F..%2Fapp.py",
        "/static/%2e%2e/app.py",
        "/image/1/../../../../etc/passwd",
        "/etc/passwd",
        "/api/neighbors/1%00",
    ],
)
def test_path_traversal_gets_a_4xx_and_nothing_outside_the_index(client, url):
    r = client.get(url)
    assert 400 <= r.status_code < 500, (url, r.status_code)
    assert r.headers["content-type"].startswith("application/json")
    assert "root:" not in r.text and "def create_app" not in r.text


def test_a_file_replaced_since_indexing_is_not_served(built, tmp_path):
    corpus, index = built
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:secret\n")
    c = make_client(create_app(index, cache_dir=None))
    e = Index.open(index).entries()[12]
    target = corpus / e.path
    saved = target.read_bytes()
    try:
        target.unlink()
        target.symlink_to(secret)  # the indexed path now points outside the corpus
        for url in ("/image/12", "/thumb/12"):
            assert "changed since it was indexed" in error_of(c.get(url), 404)
        target.unlink()
        assert "file not found" in error_of(c.get("/image/12"), 404)
    finally:
        target.unlink(missing_ok=True)
        target.write_bytes(saved)


def test_errors_are_json_for_unknown_routes_and_methods(client):
    assert error_of(client.get("/nope"), 404) == "not found: /nope"
    assert error_of(client.delete("/api/info"), 405)
    assert error_of(client.get("/api/query"), 405)


def test_a_bug_is_a_json_500_without_a_traceback(built, monkeypatch):
    from simsearch.serve.holder import IndexHolder

    _, index = built
    app = create_app(index)
    monkeypatch.setattr(IndexHolder, "get", lambda self: 1 / 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    r = TestClient(app, raise_server_exceptions=False).get("/health")
    assert "internal error (ZeroDivisionError)" in error_of(r, 500)


def test_foreign_host_header_is_refused_on_loopback(built):
    _, index = built
    c = make_client(create_app(index, allowed_hosts=loopback_names("127.0.0.1")))
    assert c.get("/health", headers={"host": "127.0.0.1:8000"}).status_code == 200
    assert c.get("/health", headers={"host": "localhost"}).status_code == 200
    assert c.get("/health", headers={"host": "[::1]:8000"}).status_code == 200
    assert "localhost" in error_of(c.get("/health", headers={"host": "evil.example:8000"}), 400)


# ---------------------------------------------------------------- start-up


def test_parse_size():
    assert parse_size("20MB") == 20_000_000
    assert parse_size("512kb") == 512_000
    assert parse_size("1GiB") == 2**30
    assert parse_size("1.5 MiB") == 1572864
    assert parse_size("1000") == 1000
    for bad in ("", "MB", "5XB", "-1MB", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_loopback():
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.com"))


def test_non_loopback_host_prints_a_warning(built, monkeypatch):
    import uvicorn

    from simsearch.serve import run

    _, index = built
    said = []
    monkeypatch.setattr(run, "bind", lambda host, port: run.socket.create_server(("127.0.0.1", 0)))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    run.serve(index, host="0.0.0.0", port=8123, say=said.append)
    assert said[0].startswith("warning: serving on 0.0.0.0, not loopback")
    said.clear()
    run.serve(index, host="127.0.0.1", port=8123, say=said.append)
    assert not any("warning" in s for s in said) and "60 images" in said[-1]


def test_open_opens_the_page_in_a_browser(built, monkeypatch):
    import time

    import uvicorn

    from simsearch.serve import run

    _, index = built
    opened = []
    monkeypatch.setattr(run.webbrowser, "open", opened.append)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: time.sleep(1.0))
    said = []
    run.serve(index, port=0, open_browser=True, say=said.append)
    url = said[-1].split(" at ")[1].split()[0]
    assert opened == [url] and url.startswith("http://127.0.0.1:")


def test_port_in_use_is_one_line():
    from simsearch.errors import SimsearchError
    from simsearch.serve.run import bind

    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(SimsearchError, match="cannot listen on 127.0.0.1:.*pick another --port"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_serve_help_loads_neither_torch_nor_the_server():
    code = (
        "import sys; from simsearch.cli import cli\n"
        "try:\n    cli(['serve', '--help'], obj={})\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('torch', 'faiss', 'numpy', 'fastapi', 'uvicorn', 'starlette') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--max-upload" in out.stdout and "Example:" in out.stdout


def test_serve_cli_errors_are_one_line(tmp_path):
    from click.testing import CliRunner

    from simsearch.cli import cli

    res = CliRunner().invoke(cli, ["serve", "--index", str(tmp_path / "none")], obj={})
    assert res.exit_code == 1 and "no index here" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["serve", "--max-upload", "lots"], obj={})
    assert res.exit_code == 2 and "not a size" in res.output


def test_hits_json_is_what_query_json_prints(built):
    from click.testing import CliRunner

    from simsearch.cli import cli

    corpus, index = built
    c = make_client(create_app(index))
    res = CliRunner().invoke(cli, ["query", "--indexed", "4", "--index", str(index), "-k", "5", "--json"], obj={})
    cli_hits = json.loads(res.stdout)["hits"]
    api_hits = c.get("/api/neighbors/4?k=5").json()["hits"]
    assert [{k: h[k] for k in HIT_KEYS} for h in api_hits] == cli_hits

"""``simsearch serve`` as a real process on a loopback port: a re-index by another process is picked up
under concurrent load with no failed request, raw-socket requests that an HTTP client library would
have cleaned up, keep-alive latency, and a short run of scripts/bench_serve.py."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from serve_helpers import Server, build_index, subprocess_env
from synth import FAST_CLI, encode, make_image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def get_json(url: str, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*address(url), timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def post_image(conn: http.client.HTTPConnection, data: bytes, k: int = 5) -> tuple[int, bytes]:
    conn.request("POST", f"/api/query?k={k}", body=data, headers={"Content-Type": "image/png"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def raw(url: str, request: bytes) -> bytes:
    """Send bytes as they are (no client-side path clean-up) and read the whole answer."""
    with socket.create_connection(address(url), timeout=30) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("live")
    _, index = build_index(base)
    with Server(index, base / "cache", "--max-upload", "100KB") as s:
        yield s


def test_a_reindex_in_another_process_is_picked_up_under_load(tmp_path):
    corpus, index = build_index(tmp_path)
    rng = np.random.default_rng(123)
    queries = [encode(make_image(kind, rng)) for kind in ("disc", "square", "stripes")]
    with Server(index, tmp_path / "cache") as server:
        assert get_json(server.url, "/health")[1]["generation"] == "gen-000001"
        stop = threading.Event()
        done: list[int] = []
        errors: list[str] = []

        def load(seed: int) -> None:  # queries by upload and by id until stopped
            conn = http.client.HTTPConnection(*address(server.url), timeout=60)
            r = np.random.default_rng(seed)
            while not stop.is_set():
                try:
                    if r.random() < 0.5:
                        status, body = post_image(conn, queries[r.integers(3)])
                    else:
                        conn.request("GET", f"/api/neighbors/{r.integers(60)}?k=5")
                        resp = conn.getresponse()
                        status, body = resp.status, resp.read()
                    if status != 200 or len(json.loads(body)["hits"]) != 5:
                        errors.append(f"{status} {body[:200]!r}")
                except (OSError, http.client.HTTPException) as e:
                    errors.append(repr(e))
                    conn = http.client.HTTPConnection(*address(server.url), timeout=60)
                done.append(1)

        clients = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(4)]
        for c in clients:
            c.start()
        new = []
        for i in range(6):
            path = corpus / "new" / f"new_{i}.png"
            path.parent.mkdir(exist_ok=True)
            make_image("disc", rng).save(path)
            new.append(path)
        reindex = subprocess.run(
            [sys.executable, "-m", "simsearch", "index", str(corpus), "--index", str(index), *FAST_CLI],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=300,
        )
        assert reindex.returncode == 0, reindex.stderr
        assert "added 6 " in reindex.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = get_json(server.url, "/health")[1]
            if health["generation"] != "gen-000001":
                break
            time.sleep(0.2)
        time.sleep(1.0)  # a little more load on the new generation
        stop.set()
        for c in clients:
            c.join(60)
        assert health == {"status": "ok", "images": 66, "generation": "gen-000002"}
        assert not errors, errors[:5]
        assert len(done) > 20

        # the new files are searchable, browsable and served
        conn = http.client.HTTPConnection(*address(server.url), timeout=30)
        status, body = post_image(conn, new[3].read_bytes(), k=3)
        top = json.loads(body)["hits"][0]
        assert status == 200 and top["relpath"] == "new/new_3.png" and top["score"] == 1.0
        assert json.loads(body)["generation"] == "gen-000002"
        assert get_json(server.url, f"/api/neighbors/{top['id']}?k=3")[0] == 200
        conn.request("GET", f"/thumb/{top['id']}")
        assert conn.getresponse().status == 200
        conn.close()
        assert get_json(server.url, "/api/images?offset=60")[1]["total"] == 66
    assert any("switched to gen-000002 (66 images)" in line for line in server.log)


@pytest.mark.parametrize(
    "path",
    [
        b"/thumb/../../etc/passwd",
        b"/image/../../../../etc/passwd",
        b"/image/..%2f..%2f..%2fetc%2fpasswd",
        b"/static/../../../../../etc/passwd",
        b"/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
        b"/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        b"/../../etc/passwd",
        b"//etc/passwd",
    ],
)
def test_traversal_on_the_raw_socket(server, path):
    answer = raw(server.url, b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:300]
    assert b"root:" not in answer and b"application/json" in answer


def test_a_foreign_host_header_is_refused(server):
    answer = raw(server.url, b"GET /api/info HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"answers only to localhost" in answer


def test_an_oversized_upload_gets_413_before_its_body_is_sent(server):
    head = (
        b"POST /api/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        b"Content-Length: 50000000\r\nConnection: close\r\n\r\n"
    )
    answer = raw(server.url, head)  # the body is never sent: the answer must not wait for it
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"upload too large (50 MB): this server accepts images up to 100 KB"' in answer


def test_keep_alive_requests_are_not_delayed(server):
    """Two writes per response on a kept-alive connection must not wait for the client's delayed ACK (40 ms)."""
    conn = http.client.HTTPConnection(*address(server.url), timeout=30)
    times = []
    for i in range(12):
        t = time.perf_counter()
        conn.request("GET", f"/api/neighbors/{i}?k=5")
        conn.getresponse().read()
        times.append(time.perf_counter() - t)
    conn.close()
    assert sorted(times)[6] < 0.035, times


def test_bench_serve_smoke(tmp_path):
    _, index = build_index(tmp_path)
    cmd = [sys.executable, str(SCRIPTS / "bench_serve.py"), "--index", str(index), "--duration", "2"]
    r = subprocess.run(cmd + ["--clients", "2", "--images", "8"], capture_output=True, text=True, env=subprocess_env())
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {line.split("|")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("| by")}
    assert set(rows) == {"by upload", "by id"}
    assert "errors: 0" in r.stdout and "2 clients" in r.stdout


def test_bench_serve_loads_only_loopback():
    r = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_serve.py"), "--url", "http://example.invalid:8000/", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "only http:// servers on a loopback address" in r.stderr

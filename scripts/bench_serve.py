#!/usr/bin/env python3
"""Load test of ``simsearch serve``: N concurrent clients query by upload and by id for a fixed time.

    python scripts/bench_serve.py --index indexes/fashion-mnist              # 8 clients, 30 s
    python scripts/bench_serve.py --url http://127.0.0.1:8000/ --clients 4 --duration 10

With ``--index`` the script starts ``simsearch serve`` on a free loopback port (thumbnails cached in a
temporary folder; the index is only read) and stops it at the end; with ``--url`` it uses a running server,
which must be on a loopback address. Each client keeps one HTTP connection and alternates a query by
upload (``POST /api/query``: an indexed image re-encoded as JPEG, so its bytes are new to the server and it
is decoded, encoded and placed like any new image) and a query by id (``GET /api/neighbors/{id}``).
The loop is bounded by ``--duration`` (at most 600 s); it prints requests/s, p50/p99 latency per kind and in
all, and the number of errors (non-200 answers or failed connections), and exits 1 if there was any.
"""

from __future__ import annotations

import argparse
import http.client
import io
import ipaddress
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

MAX_DURATION = 600.0
MAX_CLIENTS = 64


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Server:
    """``simsearch serve --port 0`` for the index, in a child process."""

    def __init__(self, index: str, cache_dir: str):
        cmd = [sys.executable, "-m", "simsearch", "serve", "--index", index, "--port", "0", "--cache-dir", cache_dir]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines = []
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            lines.append(line)
            m = re.search(r" at (http://127\.0\.0\.1:\d+/)", line)
            if m:
                self.url = m.group(1)
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.proc.wait()
        raise SystemExit("simsearch serve did not start:\n" + "".join(lines))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            sys.stderr.write(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def multipart(data: bytes, name: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def query_material(host: str, port: int, n: int, seed: int) -> tuple[list[int], list[tuple[bytes, str]], dict]:
    """Ids to query by, and upload bodies: ``n`` indexed images fetched from the server, re-encoded as JPEG."""
    from PIL import Image

    conn = http.client.HTTPConnection(host, port, timeout=60)
    status, body = request(conn, "GET", "/api/info")
    if status != 200:
        raise SystemExit(f"/api/info answered {status}: {body[:200]!r}")
    info = json.loads(body)
    status, body = request(conn, "GET", f"/api/images?limit={n}&seed={seed}")
    images = json.loads(body)["images"]
    if not images:
        raise SystemExit("the index is empty")
    uploads = []
    for im in images:
        status, data = request(conn, "GET", im["image"])
        if status != 200:
            raise SystemExit(f"{im['image']} answered {status}")
        img = Image.open(io.BytesIO(data))
        img = img.convert("L" if img.mode in ("1", "L", "I;16", "I") else "RGB")
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        uploads.append(multipart(buf.getvalue(), f"bench-{im['id']}.jpg"))
    conn.close()
    return [im["id"] for im in images], uploads, info


def client(host, port, deadline, k, ids, uploads, start_with_upload, rng, out, stop):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    upload_turn = start_with_upload
    while not stop.is_set() and time.monotonic() < deadline:
        kind = "upload" if upload_turn else "id"
        upload_turn = not upload_turn
        t = time.perf_counter()
        try:
            if kind == "upload":
                body, ctype = uploads[rng.randrange(len(uploads))]
                status, data = request(conn, "POST", f"/api/query?k={k}", body, {"Content-Type": ctype})
            else:
                status, data = request(conn, "GET", f"/api/neighbors/{ids[rng.randrange(len(ids))]}?k={k}")
            ok = status == 200 and len(json.loads(data)["hits"]) > 0
            err = None if ok else f"{kind}: HTTP {status} {data[:200]!r}"
        except (OSError, http.client.HTTPException, ValueError) as e:
            err = f"{kind}: {type(e).__name__}: {e}"
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=60)
        out.append((kind, time.perf_counter() - t, err))
    conn.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def run(url: str, clients: int, duration: float, k: int, n_images: int, seed: int) -> int:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    if parts.scheme != "http" or not is_loopback(host):
        raise SystemExit(f"{url}: only http:// servers on a loopback address (127.0.0.1, localhost, ::1) are loaded")
    ids, uploads, info = query_material(host, port, n_images, seed)
    # warm up: every connection path once, outside the timing
    warm = http.client.HTTPConnection(host, port, timeout=60)
    for body, ctype in uploads[:4]:
        request(warm, "POST", f"/api/query?k={k}", body, {"Content-Type": ctype})
    for i in ids[:4]:
        request(warm, "GET", f"/api/neighbors/{i}?k={k}")
    warm.close()

    results: list[tuple[str, float, str | None]] = []
    stop = threading.Event()
    start = time.monotonic()
    deadline = start + duration
    threads = [
        threading.Thread(
            target=client,
            args=(host, port, deadline, k, ids, uploads, i % 2 == 0, random.Random(seed + i), results, stop),
            daemon=True,
        )
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 90)
    except KeyboardInterrupt:
        stop.set()
    elapsed = time.monotonic() - start
    stop.set()

    errors = [e for _, _, e in results if e]
    print(
        f"simsearch serve under load: {clients} clients for {elapsed:.1f} s, k={k}, "
        f"index {info.get('generation')} ({info.get('images'):,} images, {info.get('faiss_factory')}), {url}"
    )
    print()
    print("| queries | requests | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, kinds in (("by upload", {"upload"}), ("by id", {"id"}), ("all", {"upload", "id"})):
        lat = [t for kind, t, e in results if kind in kinds and not e]
        n = sum(1 for kind, _, _ in results if kind in kinds)
        errs = sum(1 for kind, _, e in results if kind in kinds and e)
        print(
            f"| {label} | {n:,} | {n / elapsed:,.1f} | {percentile(lat, 50) * 1000:.1f} | "
            f"{percentile(lat, 99) * 1000:.1f} | {errs} |"
        )
    print()
    print(f"errors: {len(errors)}")
    for e in errors[:10]:
        print(f"  {e}", file=sys.stderr)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", help="start `simsearch serve` on this index (on a free loopback port)")
    where.add_argument("--url", help="a running server on a loopback address, e.g. http://127.0.0.1:8000/")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8, at most 64)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30, at most 600)")
    ap.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    ap.add_argument("--images", type=int, default=64, help="distinct indexed images to query with (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        ap.error(f"--clients must be 1..{MAX_CLIENTS}")
    if not 0 < args.duration <= MAX_DURATION:
        ap.error(f"--duration must be in (0, {MAX_DURATION:.0f}] seconds")
    if args.url:
        return run(args.url, args.clients, args.duration, args.k, args.images, args.seed)
    if not Path(args.index).is_dir():
        ap.error(f"--index {args.index}: no such folder")
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as cache:
        server = Server(os.fspath(args.index), cache)
        try:
            return run(server.url, args.clients, args.duration, args.k, args.images, args.seed)
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())

"""Starting the server: parse the limits, open the index, bind the socket, run uvicorn.

The socket is bound here (not by uvicorn) so that "address already in use" is one clear line and
``--port 0`` can print the port it got. Loopback is the default; another address is served only
when asked for, with a warning, and then the Host-header check is off.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path

from ..errors import SimsearchError

_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'20MB' → 20000000 (KB/MB/GB decimal, KiB/MiB/GiB binary, a plain number is bytes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).upper() if m else ""
    if not m or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size (e.g. 20MB, 512KB, 1GiB)")
    n = int(float(m.group(1)) * _UNITS[unit])
    if n < 1:
        raise ValueError(f"{text!r}: the limit must be at least 1 byte")
    return n


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_names(host: str) -> set[str]:
    """Host header values a loopback server answers to."""
    h = host.strip("[]").lower()
    names = {"localhost", "127.0.0.1", "[::1]"}
    names.add(f"[{h}]" if ":" in h else h)
    return names


def bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise SimsearchError(f"--host {host}: cannot resolve ({e.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only then (without it a
    # keep-alive response written in two parts waits for the client's delayed ACK, 40 ms)
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        hint = " (another server is using it: pick another --port)" if e.errno in (98, 48) else ""
        raise SimsearchError(f"cannot listen on {host}:{port}: {e.strerror or e}{hint}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if shown in ("0.0.0.0", "[::]"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}/"


def serve(
    index: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload: int = 20_000_000,
    open_browser: bool = False,
    cache_dir: str | Path | None = None,
    say: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> None:
    """Serve ``index`` until interrupted (Ctrl-C)."""
    import logging

    import uvicorn

    from .app import create_app
    from .media import default_cache_dir

    logger = logging.getLogger("simsearch.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("simsearch serve: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    loopback = is_loopback(host)
    if not loopback:
        say(
            f"warning: serving on {host}, not loopback: anyone who can reach this machine on port {port} can "
            "search this index and download every indexed image"
        )
    app = create_app(
        index,
        max_upload=max_upload,
        cache_dir=cache_dir if cache_dir is not None else default_cache_dir(),
        allowed_hosts=loopback_names(host) if loopback else None,
    )
    sock = bind(host, port)
    url = url_of(sock)
    loaded = app.state.holder.get()
    say(f"serving {index} ({len(loaded.entries)} images, {loaded.generation}) at {url}  (Ctrl-C to stop)")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()

"""Shared by the ``simsearch serve`` tests: a small built index, and a real server in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

from synth import FAST, write_corpus, write_pictures

REPO = Path(__file__).resolve().parents[1]


def build_index(base: Path) -> tuple[Path, Path]:
    """(corpus, index): 60 synthetic images in three classes, indexed with the fast test options."""
    import simsearch
    from simsearch.indexer import BuildOptions

    corpus = base / "images"
    write_corpus(corpus)
    index = base / "index"
    simsearch.Index.build(corpus, index, options=BuildOptions.of(**FAST))
    return corpus, index


def build_pictures_index(base: Path) -> tuple[Path, Path]:
    """(corpus, index): 40 distinct generated pictures (``synth.write_pictures``), where the pixel check is on."""
    import simsearch
    from simsearch.indexer import BuildOptions

    corpus = base / "pictures"
    write_pictures(corpus)
    index = base / "pictures-index"
    simsearch.Index.build(corpus, index, options=BuildOptions.of(**dict(FAST, max_epochs=6, time_budget=60)))
    return corpus, index


def make_client(app):
    """FastAPI's TestClient (Starlette >= 1 warns that it prefers httpx2 to httpx; either works)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient(app)


def subprocess_env() -> dict[str, str]:
    """The environment for a child ``python -m simsearch``: this checkout's package first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


class Server:
    """``simsearch serve --port 0`` in a child process; ``url`` once it listens."""

    def __init__(self, index: Path, cache_dir: Path, *extra: str, timeout: float = 60):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simsearch", "serve", "--index", str(index), "--port", "0"]
            + ["--cache-dir", str(cache_dir), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        self.log: list[str] = []
        deadline = time.monotonic() + timeout
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r" at (http://127\.0\.0\.1:\d+/)", line)
            if m:
                self.url = m.group(1)
                threading.Thread(target=self._drain, daemon=True).start()  # a full pipe would block the server
                return
        self.stop()
        raise AssertionError("server did not start:\n" + "".join(self.log))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

"""The index a server answers from, and how it follows a re-index done by another process.

Every request takes the current :class:`Loaded` once and uses only it, so a request never mixes two
versions of the index. At most once per ``check_interval`` seconds a request reads the index's
``CURRENT`` file (``Index.is_stale()``); when a newer generation has been committed, that one request
opens it, warms it up and publishes it, while concurrent requests go on with the previous one. The
previous generation's files stay readable for requests still using it (they are memory-mapped, and
the writer keeps the previous generation on disk). A generation that fails to open is logged and
retried after ``retry_after`` seconds; the server keeps answering from the one it has.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..api import Index
from ..store import Entry

log = logging.getLogger("simsearch.serve")


@dataclass
class Loaded:
    """One opened, warmed-up generation of the index and the lookups the routes need."""

    index: Index
    generation: str
    entries: list[Entry]  # id order (browsing)
    by_id: dict[int, Entry]
    by_sha: dict[str, int]  # file content hash → id of the first file with it
    info: dict[str, Any] = field(default_factory=dict)
    opened: float = 0.0  # time.time() when it was published

    @classmethod
    def open(cls, path: Path) -> Loaded:
        index = Index.open(path)
        entries = index.entries()
        by_sha: dict[str, int] = {}
        for e in entries:
            by_sha.setdefault(e.sha256, e.id)
        loaded = cls(
            index=index,
            generation=index.generation or "",
            entries=entries,
            by_id={e.id: e for e in entries},
            by_sha=by_sha,
        )
        loaded.warm_up()
        loaded.info = {**index.info(), "generation": loaded.generation}
        loaded.opened = time.time()
        return loaded

    def warm_up(self) -> None:
        """Load everything a query touches (encoder, FAISS, post-processing) before the first request,
        so that concurrent first requests do not race to load it."""
        index = self.index
        index.numpy_encoder()
        if not self.entries:
            return
        index.neighbors(self.entries[0].id, 1)
        pre = index.preprocess
        index.search_vectors(index.embed_pixels(np.zeros((1, pre.channels, pre.size, pre.size), np.uint8)), 1)


class IndexHolder:
    """The live :class:`Loaded` of an index directory, switched to a newer generation when one appears."""

    def __init__(self, path: str | Path, check_interval: float = 1.0, retry_after: float = 10.0):
        self.path = Path(path)
        self.check_interval = check_interval
        self.retry_after = retry_after
        self._lock = threading.Lock()  # held by the one request that checks / reloads
        self._loaded = Loaded.open(self.path)  # a SimsearchError here is the caller's to report
        self._next_check = time.monotonic() + check_interval
        self.reloads = 0

    def get(self) -> Loaded:
        """The generation to answer this request from. May open a newer one first (blocking I/O: call it
        from a worker thread)."""
        loaded = self._loaded
        if time.monotonic() < self._next_check or not self._lock.acquire(blocking=False):
            return loaded  # checked recently, or another request is checking right now
        try:
            return self._check()
        finally:
            self._lock.release()

    def _check(self) -> Loaded:
        loaded = self._loaded
        self._next_check = time.monotonic() + self.check_interval
        try:
            if not loaded.index.is_stale():
                return loaded
            new = Loaded.open(self.path)
        except Exception as e:  # a damaged or half-deleted version: keep serving the one we have
            log.warning("keeping %s of %s: the newer version cannot be opened (%s)", loaded.generation, self.path, e)
            self._next_check = time.monotonic() + self.retry_after
            return loaded
        self._loaded = new
        self.reloads += 1
        log.info("%s: switched to %s (%d images)", self.path, new.generation, len(new.entries))
        return new

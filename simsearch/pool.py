"""Decode many files for indexing in worker processes, isolating decoder crashes.

    paths ──decode_files()──▶ (i, uint8 array or None, reason or None, info), in input order
    paths ──decode_grids()──▶ (i, uint8 pixelmatch grid or None, reason or None, {}), in input order

Each worker reads a file once (its size, mtime and sha256 describe exactly the bytes
decoded) and decodes and preprocesses it as ``decode.load`` does (``decode_grids``: as
``pixelmatch.load_grid`` does, for the duplicate finder's pixel check).  A few chunks of files are
in flight at a time (bounded memory, results stream).  A worker that dies (a segfaulting
decoder) is replaced, and the chunks that were in flight are re-run one file per fresh
single-worker pool, so exactly the file that killed it is reported ("decoder crashed") and
the run goes on.  Closing the generator or Ctrl-C terminates the workers.  No torch, no
faiss: the workers stay light.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from simsearch.decode import _decode_reason, _load_bytes, _read_with_stat, open_image
from simsearch.errors import ImageError
from simsearch.preprocess import Preprocess

__all__ = ["decode_files", "decode_grids"]

_WORKER_PRE: Preprocess | None = None
_WORKER_JOB = "preprocess"  # or "grid": pixelmatch.grids_bytes of the decoded image


def _decode_path(path: str | Path, pre: Preprocess) -> tuple[np.ndarray | None, str | None, dict]:
    info: dict = {}
    try:
        data, st = _read_with_stat(path)
        info = {
            "size": len(data),
            "mtime_ns": st.st_mtime_ns,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if not data:
            return None, "empty file", info
        return _load_bytes(data, pre, path), None, info
    except ImageError as exc:
        return None, exc.reason, info
    except Exception as exc:  # belt and braces: never let one file kill the run
        return None, _decode_reason(exc), info


def _grid_path(path: str | Path) -> tuple[np.ndarray | None, str | None, dict]:
    from simsearch.pixelmatch import grids_bytes

    try:
        return grids_bytes(open_image(path)), None, {}
    except ImageError as exc:
        return None, exc.reason, {}
    except Exception as exc:  # belt and braces: never let one file kill the run
        return None, _decode_reason(exc), {}


def _job(path: str | Path) -> tuple[np.ndarray | None, str | None, dict]:
    if _WORKER_JOB == "grid":
        return _grid_path(path)
    assert _WORKER_PRE is not None
    return _decode_path(path, _WORKER_PRE)


def _worker_init(pre_dict: dict | None, job: str = "preprocess") -> None:
    global _WORKER_PRE, _WORKER_JOB
    _WORKER_PRE = None if pre_dict is None else Preprocess.from_dict(pre_dict)
    _WORKER_JOB = job
    try:  # Ctrl-C is handled by the parent, which tears the pool down
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError, AttributeError):
        pass


def _worker_chunk(paths: list) -> list:
    return [_job(p) for p in paths]


def _mp_context():
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_CRASH_REASON = "decoder crashed (worker process died)"


class _Executor:
    """A process pool that can be torn down hard (on close/KeyboardInterrupt)."""

    def __init__(self, workers: int, pre: Preprocess | None, job: str = "preprocess"):
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_mp_context(),
            initializer=_worker_init,
            initargs=(None if pre is None else pre.to_dict(), job),
        )

    def submit(self, paths: list):
        return self.pool.submit(_worker_chunk, paths)

    def shutdown(self, hard: bool) -> None:
        pool = self.pool
        if hard:
            procs = list((getattr(pool, "_processes", None) or {}).values())
            # The executor's manager thread reaps the workers too; wait for it
            # below so no waitpid() race remains once shutdown returns.
            # (shutdown() drops the executor's reference to it, so take it first.)
            manager = getattr(pool, "_executor_manager_thread", None)
            pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                try:
                    p.terminate()
                except Exception:
                    pass
            if manager is not None:
                manager.join(timeout=5)
            for p in procs:
                try:
                    p.join(timeout=5)
                except Exception:
                    pass
        else:
            pool.shutdown(wait=True)


def _isolate(chunks: list[tuple[int, list]], pre: Preprocess | None, job: str = "preprocess"):
    """Re-run chunks that were in flight when a worker died, one file per
    single-worker pool task, so the culprit is identified exactly."""
    ex: _Executor | None = None
    try:
        for start, paths in chunks:
            for k, p in enumerate(paths):
                if ex is None:
                    ex = _Executor(1, pre, job)
                try:
                    (res,) = ex.submit([p]).result()
                except concurrent.futures.process.BrokenProcessPool:
                    ex.shutdown(hard=True)
                    ex = None
                    res = (None, _CRASH_REASON, {})
                yield (start + k, *res)
    finally:
        if ex is not None:
            ex.shutdown(hard=True)


def decode_files(
    paths: Sequence[str | Path], pre: Preprocess, workers: int = 0, chunksize: int = 64
) -> Iterator[tuple[int, np.ndarray | None, str | None, dict]]:
    """Decode ``paths`` for indexing, in parallel, yielding in input order.

    Yields ``(i, array_or_None, reason_or_None, info)`` for every path, where
    ``info = {'size', 'mtime_ns', 'sha256'}`` describes the bytes actually
    decoded (stat taken on the open file before reading; partial/empty on
    failure).  ``workers=0`` → number of usable CPUs, ``workers=1`` → in-process.
    At most a few chunks are in flight (bounded memory, streams); a worker that
    dies (e.g. a decoder segfault) is replaced and the file that killed it is
    reported with a reason instead of hanging the run.  Closing the generator
    (or KeyboardInterrupt) terminates the worker processes.
    """
    return _run(paths, pre, "preprocess", workers, chunksize)


def decode_grids(
    paths: Sequence[str | Path], workers: int = 0, chunksize: int = 64
) -> Iterator[tuple[int, np.ndarray | None, str | None, dict]]:
    """``pixelmatch.grids_bytes`` of each file, as ``decode_files`` runs its decoding (in order, in
    crash-isolated workers): ``(i, uint8 grid or None, reason or None, {})``."""
    return _run(paths, None, "grid", workers, chunksize)


class _Chunks:
    """The (start, paths) chunks of ``paths``, made as they are taken (a deque's ``[0]`` and
    ``popleft``), so that a long list of paths is never copied whole."""

    def __init__(self, paths: Sequence[str | Path], size: int):
        self._paths, self._size, self._start = paths, size, 0
        self._head: tuple[int, list] | None = None

    def __bool__(self) -> bool:
        return self._start < len(self._paths)

    def __getitem__(self, i: int) -> tuple[int, list]:
        assert i == 0 and self, "only the next chunk is looked at"
        if self._head is None:
            end = min(self._start + self._size, len(self._paths))
            self._head = (self._start, [self._paths[k] for k in range(self._start, end)])
        return self._head

    def popleft(self) -> tuple[int, list]:
        head = self[0]
        self._start += len(head[1])
        self._head = None
        return head


def _run(
    paths: Sequence[str | Path], pre: Preprocess | None, job: str, workers: int, chunksize: int
) -> Iterator[tuple[int, np.ndarray | None, str | None, dict]]:
    if not isinstance(paths, Sequence):
        paths = list(paths)
    n = len(paths)  # (a Sequence is read, never copied: the indexer's is a spill.SpillList on disk)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    if workers == 0:
        workers = _cpu_count()
    workers = min(workers, n)
    if workers <= 1:
        for i, p in enumerate(paths):
            if job == "grid":
                yield (i, *_grid_path(p))
            else:
                assert pre is not None
                yield (i, *_decode_path(p, pre))
        return

    chunk = max(1, min(chunksize, math.ceil(n / (workers * 4))))
    window = workers * 2
    todo = _Chunks(paths, chunk)
    inflight: deque = deque()
    ex: _Executor | None = _Executor(workers, pre, job)
    hard = True
    try:
        while todo or inflight:
            assert ex is not None  # None only while _isolate runs
            try:
                while todo and len(inflight) < window:
                    start, group = todo[0]
                    fut = ex.submit(group)
                    todo.popleft()
                    inflight.append((start, group, fut))
                start, group, fut = inflight[0]
                results = fut.result()
            except concurrent.futures.process.BrokenProcessPool:
                suspects = [(s, g) for s, g, _ in inflight]
                inflight.clear()
                ex.shutdown(hard=True)
                ex = None
                yield from _isolate(suspects, pre, job)
                ex = _Executor(workers, pre, job)
                continue
            inflight.popleft()
            for k, res in enumerate(results):
                yield (start + k, *res)
        hard = False
    finally:
        if ex is not None:
            ex.shutdown(hard=hard)

"""Measuring and formatting, shared by every row of the speed benchmark."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class Skip(Exception):
    """A row (or part of one) that cannot run here; the message goes into the table."""


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), as simsearch's loader counts its workers."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass
class Timing:
    median: float  # seconds
    p99: float
    n: int


def timeit(fn: Callable[[int], Any], reps: int, warmup: int = 0) -> Timing:
    """Call ``fn(i)`` ``warmup`` times untimed, then ``reps`` times timed → median and p99 seconds."""
    for i in range(warmup):
        fn(i)
    ts = []
    for i in range(max(1, reps)):
        t0 = time.perf_counter()
        fn(i)
        ts.append(time.perf_counter() - t0)
    return Timing(float(np.median(ts)), float(np.percentile(ts, 99)), len(ts))


def row(
    key: str, what: str, value: float | None, unit: str, vs: str = "", ratio: float | None = None, notes: str = ""
) -> dict:
    """One table row. ``ratio``: speed relative to ``vs`` (> 1 = this one is faster)."""
    return {"row": key, "what": what, "value": value, "unit": unit, "vs": vs, "ratio": ratio, "notes": notes}


def faster(this_s: float, other_s: float) -> float | None:
    """Speed ratio of two durations (other / this): > 1 when ``this`` is faster."""
    return other_s / this_s if this_s > 0 else None


@contextlib.contextmanager
def single_thread():
    """One thread for FAISS (OpenMP) and BLAS, as simsearch searches single queries."""
    import faiss

    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            limits = contextlib.nullcontext()
        else:
            limits = threadpool_limits(1)
        with limits:
            yield
    finally:
        faiss.omp_set_num_threads(n)


def have_threadpoolctl() -> bool:
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def ms(seconds: float) -> str:
    return fmt(seconds * 1e3) + " ms"

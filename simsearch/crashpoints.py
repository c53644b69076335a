"""Crash-test hook: ``crash_point(name)`` SIGKILLs the process at a named point when asked.

The kill tests (tests/test_crash_safety.py) set ``SIMSEARCH_CRASH_AT=name[:n]`` to stop a run
at the points that train.py, embed.py, store.py and distributed.py mark with it; with ``SIMSEARCH_CRASH_ONCE=FILE``
too, only the first process to get there dies (it creates FILE), so a process that is restarted
(a Ray worker, tests/test_ray.py) gets through the second time.  Standard library only.
"""

from __future__ import annotations

import os


def crash_point(name: str) -> None:
    """Crash-test hook: ``SIMSEARCH_CRASH_AT=name[:n]`` SIGKILLs this process the n-th time
    (default 1st) execution reaches ``name``. The kill tests use it to stop a run at exact
    points (training, embedding, index write, manifest write); it costs one dict lookup otherwise."""
    spec = os.environ.get("SIMSEARCH_CRASH_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] >= int(nth or 1):
        import signal

        once = os.environ.get("SIMSEARCH_CRASH_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # another process already crashed here

        os.kill(os.getpid(), signal.SIGKILL)


_crash_counts: dict[str, int] = {}

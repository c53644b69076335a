"""A build's per-file bookkeeping on disk instead of in memory.

An index build keeps a few records per file (the discovered path, its stat, what decoding it found,
its manifest entry). In Python lists they cost about 0.8 KB a file, more than the file's 128-d vector,
and they grew the build's memory with the folder. Here each such list is a table in one scratch
SQLite file under the index's ``work/`` folder (``Spill``), so memory holds only a window of rows:

    spill = Spill(index_dir / "work")
    found = spill.list(FOUND)          # a SpillList: append, len, [i], iterate, like a list
    keys = spill.sorter()              # (key, value) pairs in any order → values sorted by key
    spill.close()                      # the file is removed

A ``SpillList`` reads rows a window (``WINDOW`` rows) at a time, so reading in order — what the
build does — costs one query per window, and a random position (the training sample) one query.
SQLite sorts on disk (``Sorter``), with its page cache as its memory. The file is scratch: no
journal, no fsync; it is deleted when the spill closes, and a run that was killed leaves one that the
next build under the write lock removes (``clean``). Standard library only.
"""

from __future__ import annotations

import operator
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar, overload

T = TypeVar("T")

WINDOW = 2048  # rows read (and buffered before writing) at a time
PREFIX = "spill-"


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How one record is stored: ``columns`` SQLite values made by ``encode`` and read by ``decode``."""

    columns: int
    encode: Callable[[T], tuple]
    decode: Callable[[tuple], T]


class SpillList(Sequence[T]):
    """An append-only list kept in a table of a ``Spill``."""

    def __init__(self, con: sqlite3.Connection, table: str, codec: Codec[T], window: int | None = None):
        self._con, self._table, self._codec = con, table, codec
        self._window = window or WINDOW
        cols = ", ".join(f"c{i}" for i in range(codec.columns))
        con.execute(f"CREATE TABLE {table} (pos INTEGER PRIMARY KEY, {cols})")
        self._insert = f"INSERT INTO {table} VALUES (?{', ?' * codec.columns})"
        self._select = f"SELECT {cols} FROM {table} WHERE pos >= ? AND pos < ? ORDER BY pos"
        self._stored = 0  # rows in the table; the rest of len(self) is in _pending
        self._pending: list[tuple] = []
        self._cache: tuple[int, list[T]] = (0, [])  # (first position, decoded rows)

    def append(self, item: T) -> None:
        self._pending.append(self._codec.encode(item))
        if len(self._pending) >= self._window:
            self.flush()

    def extend(self, items: Iterable[T]) -> None:
        for item in items:
            self.append(item)

    def flush(self) -> None:
        if self._pending:
            start = self._stored
            self._con.executemany(self._insert, ((start + k, *row) for k, row in enumerate(self._pending)))
            self._stored += len(self._pending)
            self._pending = []

    def __len__(self) -> int:
        return self._stored + len(self._pending)

    def _read(self, lo: int, hi: int) -> list[T]:
        decode = self._codec.decode
        return [decode(row) for row in self._con.execute(self._select, (lo, hi))]

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = operator.index(i)  # a numpy integer would be bound as a BLOB
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self._table}: position {i} of {n}")
        if i >= self._stored:
            return self._codec.decode(self._pending[i - self._stored])
        first, rows = self._cache
        if not first <= i < first + len(rows):
            first = i - i % self._window
            rows = self._read(first, min(first + self._window, self._stored))
            self._cache = (first, rows)
        return rows[i - first]

    def __iter__(self) -> Iterator[T]:
        self.flush()
        n = self._stored
        for lo in range(0, n, self._window):
            yield from self._read(lo, min(lo + self._window, n))

    def __bool__(self) -> bool:
        return len(self) > 0


class Sorter:
    """(key bytes, path) pairs added in any order, the paths read back ordered by key (SQLite sorts on
    disk). Paths are stored as bytes (``os.fsencode``), so names that are not UTF-8 survive."""

    def __init__(self, con: sqlite3.Connection, table: str):
        self._con, self._table = con, table
        con.execute(f"CREATE TABLE {table} (key BLOB NOT NULL, value BLOB NOT NULL)")
        self._pending: list[tuple[bytes, bytes]] = []

    def add(self, key: bytes, value: str) -> None:
        self._pending.append((key, os.fsencode(value)))
        if len(self._pending) >= WINDOW:
            self._flush()

    def _flush(self) -> None:
        self._con.executemany(f"INSERT INTO {self._table} VALUES (?, ?)", self._pending)
        self._pending = []

    def __iter__(self) -> Iterator[str]:
        self._flush()
        cur = self._con.execute(f"SELECT value FROM {self._table} ORDER BY key")
        while rows := cur.fetchmany(WINDOW):
            for (value,) in rows:
                yield os.fsdecode(value)


class Spill:
    """One scratch SQLite file in ``folder`` holding any number of ``SpillList``s and ``Sorter``s;
    ``close`` (or leaving a ``with`` block) deletes it. ``folder=None``: a private temporary folder."""

    def __init__(self, folder: str | os.PathLike | None = None):
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=PREFIX, suffix=".sqlite", dir=folder)
        os.close(fd)
        self.path = Path(name)
        # one connection, used from whichever thread drives the build; scratch: no journal, no fsync,
        # a bounded page cache (2 MiB) and sorts spilled to temporary files, not memory
        self._con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._con.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE; PRAGMA cache_size=-2048;"
        )
        self._tables = 0

    def _name(self) -> str:
        self._tables += 1
        return f"t{self._tables}"

    def list(self, codec: Codec[T], items: Iterable[T] = (), window: int | None = None) -> SpillList[T]:
        out = SpillList(self._con, self._name(), codec, window)
        out.extend(items)
        return out

    def sorter(self) -> Sorter:
        return Sorter(self._con, self._name())

    def close(self) -> None:
        try:
            self._con.close()
        finally:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def clean(folder: str | os.PathLike) -> None:
    """Remove the spill files a killed run left in ``folder`` (call it holding the index's write lock)."""
    for p in Path(folder).glob(f"{PREFIX}*.sqlite"):
        p.unlink(missing_ok=True)


def concat(*parts: Sequence[T]) -> Sequence[T]:
    """The parts one after another, without copying them (a part may be a ``SpillList``)."""
    live = [p for p in parts if len(p)]
    if len(live) <= 1:
        return live[0] if live else []
    return _Concat(live)


class _Concat(Sequence[T]):
    def __init__(self, parts: list[Sequence[T]]):
        self._parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        for p in self._parts:
            if i < len(p):
                return p[i]
            i -= len(p)
        raise IndexError(i)

    def __iter__(self) -> Iterator[T]:
        for p in self._parts:
            yield from p


def mapped(seq: Sequence[T], fn: Callable[[T], object]) -> Sequence:
    """``fn`` of each item of ``seq``, computed when read: a view, not a copy."""
    return _Mapped(seq, fn)


class _Mapped(Sequence):
    def __init__(self, seq: Sequence, fn: Callable):
        self._seq, self._fn = seq, fn

    def __len__(self) -> int:
        return len(self._seq)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return self._fn(self._seq[i])

    def __iter__(self) -> Iterator:
        return map(self._fn, self._seq)

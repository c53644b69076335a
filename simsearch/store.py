"""The index directory on disk: FAISS index + manifest + model, written atomically.

Layout (``indexes/default`` unless told otherwise)::

    CURRENT                 name of the live generation, e.g. "gen-000003" (atomically replaced)
    LOCK                    flock()ed by the one writer
    models/<sha256>.pt      model weights + config, content-addressed (+ .npz: numpy export of the encoder)
    models/<sha256>.post.npz  fitted post-processing (centring, whitening, diffusion graph)
    gen-000003/             one complete, immutable version of the index
        meta.json           format version, model hash + config, preprocessing, metric,
                            FAISS factory string, post-processing, counts, timestamps, file checksums
        manifest.sqlite     id → path (bytes), size, mtime_ns, sha256; skipped files
        vectors.npy         raw float32 embeddings, row i ↔ ids[i]
        ids.npy             int64 stable ids, ascending
        recon.npy           float32 (N, 3) reconstruction statistics per row: mse, detail, denoise_mse
                            (format 4; format 3 had the first two; reconerror.py)
        index.faiss         FAISS index over centred, L2-normalised vectors (inner product = cosine)
                            (type "sharded" instead: shards.json, trained.faiss, main-NNN.faiss,
                            delta.faiss, tombstones.npy; see shards.py)
    work/                   resumable scratch: training checkpoints, decode/embedding caches

A write builds a whole new generation in a temporary directory (every file
fsynced), renames it into place, then atomically replaces CURRENT. A crash at
any point leaves the previous generation live; readers never see a partial
write. The previous generation is kept so a reader that opened it just
before a commit can finish.

No torch here; faiss is imported only when an index is built or read.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import migrations
from .crashpoints import crash_point
from .errors import REBUILD_HINT, IndexFormatError, IndexLockedError, IndexNotFoundError, SimsearchError
from .meta import FORMAT_VERSION, Counts, FaissRecord, IndexMeta
from .reconerror import COLUMNS

if TYPE_CHECKING:
    from .postprocess import PostProcess

DEFAULT_INDEX = Path("indexes") / "default"
GEN_PREFIX = "gen-"


def manifest_path(path: str | os.PathLike, root: Path) -> str | None:
    """How the manifest names the file at ``path``: its resolved location relative to the
    indexed folder ``root``, '/'-separated; None when it lies outside ``root``."""
    try:
        rel = os.path.relpath(Path(path).resolve(), root)
    except ValueError:  # another drive (Windows)
        return None
    rel = Path(rel).as_posix()
    return None if rel == ".." or rel.startswith("../") else rel


def default_index_path() -> Path:
    env = os.environ.get("SIMSEARCH_INDEX")
    return Path(env) if env else DEFAULT_INDEX


def index_path(path: str | os.PathLike | None) -> Path:
    """``path`` as a Path, or the default index (``$SIMSEARCH_INDEX``, else indexes/default)."""
    return Path(path) if path else default_index_path()


# ---------------------------------------------------------------- atomic files


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file beside ``path``, fsync, rename over ``path``, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- writer lock


@contextmanager
def write_lock(index_dir: Path, wait: bool = False, timeout: float | None = None):
    """Exclusive writer lock on ``index_dir``; readers never take it."""
    index_dir.mkdir(parents=True, exist_ok=True)
    lock_path = index_dir / "LOCK"
    f = open(lock_path, "a+")
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if not wait or (deadline is not None and time.monotonic() > deadline):
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    raise IndexLockedError(
                        f"{index_dir}: index is being written by {holder}; try again later or pass --wait"
                    ) from None
                time.sleep(0.2)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield
    finally:
        try:
            f.seek(0)
            f.truncate()
        except OSError:
            pass
        f.close()  # closing releases the flock


# ---------------------------------------------------------------- snapshot


@dataclass(slots=True)
class Entry:
    id: int
    path: str  # relative to the corpus root, POSIX separators (surrogate-escaped if not UTF-8)
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class Snapshot:
    """One complete version of an index, in memory."""

    meta: IndexMeta
    ids: np.ndarray  # (N,) int64, ascending
    vectors: np.ndarray  # (N, D) float32 raw embeddings
    entries: Sequence[Entry]  # aligned with ids (a list when read; a build's may be a spill.SpillList)
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}
    gen_dir: Path | None = None
    _faiss: object = None
    recon: np.ndarray | None = None  # (N, 3) reconstruction statistics (reconerror.COLUMNS); None = not stored
    post: PostProcess = field(kw_only=True)  # the fitted post-processing (raw codes → search vectors)
    _rows_by_path: dict | None = None
    _rows_by_sha: dict | None = None

    def __post_init__(self):
        n = len(self.ids)
        if self.vectors.shape[0] != n or len(self.entries) != n:
            raise IndexFormatError(
                f"inconsistent index: {n} ids, {self.vectors.shape[0]} vectors, {len(self.entries)} manifest rows"
            )
        if self.recon is not None and self.recon.shape != (n, len(COLUMNS)):
            raise IndexFormatError(f"inconsistent index: {n} ids, reconstruction statistics {self.recon.shape}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.meta.embedding.dim)

    @property
    def search_dim(self) -> int:
        return int(self.meta.search.dim)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of ``ids`` (which must be present)."""
        return np.searchsorted(self.ids, ids)

    def row_of_path(self) -> dict[str, int]:
        """path → row, built once per snapshot (snapshots are immutable once read)."""
        if self._rows_by_path is None or len(self._rows_by_path) != len(self.entries):
            self._rows_by_path = {e.path: i for i, e in enumerate(self.entries)}
        return self._rows_by_path

    def row_of_sha256(self) -> dict[str, int]:
        """file content hash → row (the first row, for identical files), built once per snapshot."""
        if self._rows_by_sha is None:
            self._rows_by_sha = {}
            for i, e in enumerate(self.entries):
                self._rows_by_sha.setdefault(e.sha256, i)
        return self._rows_by_sha

    def row_of_id(self, id: int) -> int | None:
        row = int(np.searchsorted(self.ids, id))
        return row if row < len(self.ids) and self.ids[row] == id else None

    def search_vectors(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Search vectors (what FAISS holds) of all images, or of these rows."""
        assert self.post is not None, "snapshot without post-processing"
        if rows is None:
            return self.post.search_vectors(self.vectors, self.ids)
        return self.post.search_vectors(np.asarray(self.vectors[rows]), self.ids[rows])

    @property
    def faiss_index(self):
        """The FAISS index (read from disk, or built from the vectors per ``meta['faiss']``)."""
        if self._faiss is None:
            from . import ann

            spec = dataclasses.asdict(self.meta.faiss)
            vecs = self.search_vectors()
            self._faiss = ann.build(vecs, self.ids, spec)
            if self.meta.faiss.recall_at_10 is None:
                tuned = ann.tune(self._faiss, vecs, self.ids, spec)
                self.meta = self.meta.with_(faiss=FaissRecord(**tuned))
        return self._faiss


# ---------------------------------------------------------------- read


def current_generation(index_dir: Path) -> Path | None:
    try:
        name = (index_dir / "CURRENT").read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IndexFormatError(f"{index_dir / 'CURRENT'}: cannot read ({e.strerror or e})") from None
    if not name.startswith(GEN_PREFIX) or "/" in name:
        raise IndexFormatError.corrupt(index_dir / "CURRENT", f"names {name!r}")
    return index_dir / name


def _no_index(index_dir: Path) -> IndexNotFoundError:
    return IndexNotFoundError(f"{index_dir}: no index here (build one with `simsearch index DIR`)")


def exists(index_dir: Path) -> bool:
    return (Path(index_dir) / "CURRENT").exists()


def read_meta(index_dir: Path, gen: Path | None = None) -> IndexMeta:
    """meta.json of generation ``gen`` (default: the live one), migrated to the current format."""
    gen = gen or current_generation(index_dir)
    if gen is None:
        raise _no_index(index_dir)
    path = gen / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        if not gen.exists():
            raise _Vanished() from None
        raise IndexFormatError.missing(path) from None
    except (OSError, ValueError) as e:
        raise IndexFormatError.corrupt(path, e) from None
    if not isinstance(meta, dict):
        raise IndexFormatError(f"{path}: not a simsearch index (not a JSON object)")
    meta = migrations.migrate(meta, gen)
    try:
        return IndexMeta.from_json(meta)
    except (KeyError, TypeError, ValueError) as e:
        raise IndexFormatError.corrupt(path, f"bad or missing {e}") from None


def read(index_dir: str | os.PathLike, load_faiss: bool = True, _retries: int = 3) -> Snapshot:
    """Open the live generation of an index. Raises IndexNotFoundError / IndexFormatError."""
    index_dir = Path(index_dir)
    for attempt in range(_retries):
        try:
            return _read_once(index_dir, load_faiss)
        except _Vanished:
            if attempt == _retries - 1:
                raise IndexFormatError(f"{index_dir}: generation keeps changing under the reader; try again") from None
            time.sleep(0.05)
    raise AssertionError("unreachable")


class _Vanished(Exception):
    """A generation was garbage-collected while we read it (a commit raced us)."""


def _read_once(index_dir: Path, load_faiss: bool) -> Snapshot:
    gen = current_generation(index_dir)  # resolve CURRENT once: everything below reads this generation
    if gen is None:
        raise _no_index(index_dir)
    meta = read_meta(index_dir, gen)

    def need(name: str) -> Path:
        p = gen / name
        if not p.exists():
            if not gen.exists():
                raise _Vanished()
            raise IndexFormatError.missing(p)
        return p

    def corrupt(name: str, why: object) -> IndexFormatError:
        return IndexFormatError.corrupt(gen / name, why)

    try:
        ids = np.load(need("ids.npy"), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise corrupt("ids.npy", e) from None
    try:
        vectors = np.load(need("vectors.npy"), allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise corrupt("vectors.npy", e) from None
    if ids.ndim != 1 or ids.dtype != np.int64:
        raise corrupt("ids.npy", f"expected int64 (N,), got {ids.dtype} {ids.shape}")
    dim = int(meta.embedding.dim)
    if vectors.ndim != 2 or vectors.shape[1] != dim or vectors.dtype != np.float32:
        raise corrupt("vectors.npy", f"expected float32 (N, {dim}), got {vectors.dtype} {vectors.shape}")
    if len(ids) != meta.counts.vectors or len(vectors) != len(ids):
        raise corrupt("vectors.npy", f"{len(vectors)} vectors / {len(ids)} ids, meta says {meta.counts.vectors}")
    entries, skipped = _read_manifest(need("manifest.sqlite"))
    if len(entries) != len(ids) or any(e.id != i for e, i in zip(entries, ids.tolist())):
        raise corrupt("manifest.sqlite", f"{len(entries)} rows do not match the {len(ids)} ids in ids.npy")
    recon = None
    if meta.recon:
        try:
            recon = np.load(need("recon.npy"), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise corrupt("recon.npy", e) from None
        cols = list(meta.recon_columns)
        if recon.shape != (len(ids), len(cols)) or recon.dtype != np.float32:
            raise corrupt("recon.npy", f"expected float32 ({len(ids)}, {len(cols)}), got {recon.dtype} {recon.shape}")
        if cols != list(COLUMNS):  # an older generation's columns: the ones it lacks are not known
            full = np.full((len(ids), len(COLUMNS)), np.nan, np.float32)
            for j, name in enumerate(COLUMNS):
                if name in cols:
                    full[:, j] = recon[:, cols.index(name)]
            recon = full
    snap = Snapshot(
        meta=meta,
        ids=ids,
        vectors=np.asarray(vectors),
        entries=entries,
        skipped=skipped,
        gen_dir=gen,
        recon=recon,
        post=read_post(index_dir, meta),
    )
    if load_faiss and meta.faiss.type == "sharded":
        snap._faiss = _read_sharded(need("shards.json").parent, len(ids), snap.search_dim, meta.faiss.params)
    elif load_faiss:
        snap._faiss = _read_faiss(need("index.faiss"), len(ids), snap.search_dim, meta.faiss.params)
    return snap


def post_path(index_dir: Path, sha256: str) -> Path:
    return Path(index_dir) / "models" / f"{sha256}.post.npz"


def write_post(index_dir: Path, post: PostProcess | None, known: str = "") -> str:
    """Store the fitted post-processing content-addressed under ``models/``; → its sha256.
    ``known``: the hash it was read under (an update that kept it): that file is reused."""
    if known and post_path(index_dir, known).exists():
        return known
    assert post is not None, "snapshot without post-processing"
    import hashlib

    data = post.to_bytes()
    sha = hashlib.sha256(data).hexdigest()
    path = post_path(index_dir, sha)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    return sha


def read_post(index_dir: Path, meta: IndexMeta) -> PostProcess:
    """The fitted post-processing named by meta.json (hash-checked)."""
    from .postprocess import PostProcess

    sha = meta.post.sha256
    path = post_path(index_dir, sha)
    try:
        data = path.read_bytes()
    except OSError:
        raise IndexFormatError.missing(path) from None
    import hashlib

    if hashlib.sha256(data).hexdigest() != sha:
        raise IndexFormatError.corrupt(path, "hash mismatch")
    import io

    try:
        return PostProcess.from_file(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 — any unreadable npz is the same problem to a user
        raise IndexFormatError.corrupt(path, e) from None


def _read_faiss(path: Path, n: int, dim: int, params: dict | None = None):
    import faiss

    from . import ann

    try:
        # memory-mapped: a cold query pages in only what the search touches
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        why = next((line for line in first if "Error" in line or "error" in line), first[0] if first else "unreadable")
        raise IndexFormatError.rebuild(path, f"corrupt FAISS index ({why.strip()[:120]})") from None
    if index.ntotal != n or index.d != dim:
        raise IndexFormatError.rebuild(path, f"FAISS index holds {index.ntotal}×{index.d}, manifest {n}×{dim}")
    ann.apply_params(index, params or {})
    return index


def _read_sharded(gen: Path, n: int, dim: int, params: dict | None = None):
    """The sharded index of generation ``gen`` (``shards.py``), checked against the manifest."""
    from . import ann, shards

    try:
        index = shards.read(gen)
    except (ValueError, OSError) as e:  # the message names the file
        raise IndexFormatError(f"{e}; {REBUILD_HINT}") from None
    if index.ntotal != n or index.d != dim:
        raise IndexFormatError.rebuild(
            gen / shards.LAYOUT, f"sharded index holds {index.ntotal}×{index.d}, manifest {n}×{dim}"
        )
    ann.apply_params(index, params or {})
    return index


def _read_manifest(path: Path) -> tuple[list[Entry], list[dict]]:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT id, path, size, mtime_ns, sha256 FROM files ORDER BY id").fetchall()
            skipped = con.execute("SELECT path, reason FROM skipped ORDER BY path").fetchall()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise IndexFormatError.rebuild(path, f"corrupt manifest ({e})") from None
    entries = [Entry(int(i), os.fsdecode(bytes(p)), int(s), int(m), h) for i, p, s, m, h in rows]
    return entries, [{"path": os.fsdecode(bytes(p)), "reason": r} for p, r in skipped]


# ---------------------------------------------------------------- write


def _write_manifest(path: Path, entries: Iterable[Entry], skipped: list[dict]) -> None:
    con = sqlite3.connect(path)
    try:
        con.executescript(
            """
            PRAGMA journal_mode=OFF;
            PRAGMA synchronous=OFF;
            CREATE TABLE files (id INTEGER PRIMARY KEY, path BLOB NOT NULL UNIQUE,
                                size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
            CREATE TABLE skipped (path BLOB NOT NULL, reason TEXT NOT NULL);
            """
        )
        con.executemany(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?)",
            ((e.id, os.fsencode(e.path), e.size, e.mtime_ns, e.sha256) for e in entries),
        )
        crash_point("write-manifest")
        con.executemany("INSERT INTO skipped VALUES (?, ?)", ((os.fsencode(s["path"]), s["reason"]) for s in skipped))
        con.commit()
    finally:
        con.close()


def write(index_dir: str | os.PathLike, snap: Snapshot, keep: int = 2) -> Path:
    """Commit ``snap`` as the new live generation of ``index_dir`` (caller holds the write lock)."""
    import faiss

    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    cur = current_generation(index_dir)
    existing = [
        int(p.name[len(GEN_PREFIX) :]) for p in index_dir.glob(GEN_PREFIX + "*") if p.name[len(GEN_PREFIX) :].isdigit()
    ]
    n = max(existing + [int(cur.name[len(GEN_PREFIX) :]) if cur else 0]) + 1
    final = index_dir / f"{GEN_PREFIX}{n:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=index_dir))
    try:
        np.save(tmp / "ids.npy", np.ascontiguousarray(snap.ids, dtype=np.int64))
        np.save(tmp / "vectors.npy", np.ascontiguousarray(snap.vectors, dtype=np.float32))
        crash_point("write-vectors")
        _write_manifest(tmp / "manifest.sqlite", snap.entries, snap.skipped)
        names = ["ids.npy", "vectors.npy", "manifest.sqlite"]
        if snap.meta.faiss.type == "sharded":
            from . import shards

            names += shards.write(snap.faiss_index, tmp)  # (builds + tunes it if needed)
        else:
            faiss.write_index(snap.faiss_index, str(tmp / "index.faiss"))  # (builds + tunes it if needed)
            names.append("index.faiss")
        crash_point("write-index")
        if snap.recon is not None:
            np.save(tmp / "recon.npy", np.ascontiguousarray(snap.recon, dtype=np.float32))
            names.append("recon.npy")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        meta = snap.meta.with_(
            post=dataclasses.replace(snap.meta.post, sha256=write_post(index_dir, snap.post, snap.meta.post.sha256)),
            format_version=FORMAT_VERSION,
            recon=snap.recon is not None,
            recon_columns=list(COLUMNS),
            counts=Counts(vectors=len(snap.ids), skipped=len(snap.skipped)),
            updated=now,
            created=snap.meta.created or now,
            files={name: {"bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)} for name in names},
        )
        (tmp / "meta.json").write_text(json.dumps(meta.to_json(), indent=2, sort_keys=True) + "\n")
        for name in names + ["meta.json"]:
            _fsync_file(tmp / name)
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(index_dir)
        crash_point("write-renamed")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(index_dir / "CURRENT", (final.name + "\n").encode())
    snap.meta, snap.gen_dir = meta, final
    _collect_garbage(index_dir, keep)
    return final


def _collect_garbage(index_dir: Path, keep: int) -> None:
    """Drop generations older than the newest ``keep``, stale temp dirs and unreferenced models."""
    gens = sorted(p for p in index_dir.glob(GEN_PREFIX + "*") if p.is_dir() and p.name[len(GEN_PREFIX) :].isdigit())
    for old in gens[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in index_dir.glob(".tmp-" + GEN_PREFIX + "*"):
        shutil.rmtree(tmp, ignore_errors=True)  # we hold the write lock: nobody else is writing
    used: set[str] = set()
    for g in gens[-keep:]:
        try:
            meta = json.loads((g / "meta.json").read_text())
        except (OSError, ValueError):
            return  # can't tell what is referenced: delete nothing
        sha = meta["model"]["sha256"]
        used |= {model_path(index_dir, sha).name, numpy_model_path(index_dir, sha).name}
        if meta.get("post"):
            used.add(post_path(index_dir, meta["post"]["sha256"]).name)
    models = index_dir / "models"
    if models.is_dir() and used:
        for m in models.iterdir():
            if m.is_file() and m.name not in used:
                m.unlink(missing_ok=True)


def load_model(index_dir: Path, sha256: str):
    """The index's model (torch, loaded here), its file checked against ``sha256``."""
    from . import model as model_mod

    return model_mod.load(model_path(index_dir, sha256), expected_sha256=sha256)[0]


def model_path(index_dir: Path, sha256: str) -> Path:
    return Path(index_dir) / "models" / f"{sha256}.pt"


def numpy_model_path(index_dir: Path, sha256: str) -> Path:
    """The torch-free export of model ``sha256`` (``numpy_encoder``)."""
    return model_path(index_dir, sha256).with_suffix(".npz")


def disk_usage(index_dir: Path) -> int:
    total = 0
    for root, _, files in os.walk(index_dir):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def remove_index(index_dir: Path) -> None:
    if not exists(index_dir) and any(Path(index_dir).iterdir()):
        raise SimsearchError(f"{index_dir}: not a simsearch index; refusing to delete it")
    shutil.rmtree(index_dir)

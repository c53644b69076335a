"""A sharded IVF index for large corpora: one quantizer, many shards, a delta and tombstones.

- One IVF quantizer (``IVF{nlist},SQ8`` by default: 1 byte per dimension, the codec that kept
  recall@10 ≥ 0.95 against exact search in ``scripts/bench/scale_shards.py``; PQ did not) is trained
  on a *uniform random sample* of the vectors (:func:`train_rows`), not on the first N.
- Shards are copies of that trained, empty index (:func:`empty_like`), filled in parallel
  (:func:`fill_parallel`: Ray tasks when Ray is running, else a local thread pool; FAISS releases
  the GIL while it adds). Identically trained shards can be merged (:func:`merge`, FAISS
  ``merge_from``) or served as shards with a merged top-k (:class:`ShardedIndex`). Ids are the
  caller's (``add_with_ids``), so they stay stable through every step.
- An update (:func:`update`) never touches the main shards: new and replaced vectors go to a
  *delta* shard built on the same quantizer, and removed or replaced ids of the main shards
  become *tombstones*, masked at search time (``IDSelectorNot(IDSelectorBatch)`` in the search
  parameters of the main shards only, so a replaced id found in the delta is kept).
- :func:`compact` folds the delta and the tombstones into the main shards (in memory, on copies;
  the caller writes the result as a new generation: adding to an index file in place is unsafe,
  faiss #1258 / #3498).

On disk (:func:`write` / :func:`read`), in one generation directory: ``trained.faiss`` (the empty
trained index), ``main-000.faiss`` …, ``delta.faiss``, ``tombstones.npy`` and ``shards.json``
(which files, and how many vectors each holds). A write after an update links the unchanged main
shard files of the previous generation instead of copying them (generations are immutable).

numpy; faiss and ray are imported lazily.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CODEC = "SQ8"  # bytes per vector = d (+ 8 for the id); see the module docstring
TRAIN_SAMPLE = 256 * 1024  # training vectors (a uniform sample), at least 39 per cell when there are enough
SHARD_ROWS = 1_000_000  # vectors per main shard when the shard count is not given
COMPACT_FRACTION = 0.1  # compact when delta + tombstones exceed this fraction of the main shards
LAYOUT = "shards.json"

# a part to fill: (vectors, ids), or a zero-argument callable returning an iterable of
# (vectors, ids) chunks (it runs where the shard is filled: a Ray task generates or reads its own data)
Part = tuple[np.ndarray, np.ndarray] | Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def factory(n: int, d: int, nlist: int | None = None, codec: str = CODEC) -> str:
    """FAISS factory string of the shards for ``n`` vectors (``nlist`` default: ``ann.ivf_cells(n)``)."""
    from .ann import ivf_cells

    return f"IVF{nlist or ivf_cells(n)},{codec}"


def nlist_of(factory_string: str) -> int:
    head = factory_string.split(",", 1)[0]
    if not head.startswith("IVF") or not head[3:].split("_")[0].isdigit():
        raise ValueError(f"not an IVF factory string: {factory_string!r}")
    return int(head[3:].split("_")[0])


def reusable(old_factory: str, new_factory: str) -> bool:
    """Whether an index trained as ``old_factory`` still serves where ``new_factory`` would be
    chosen now: the same codec and a cell count within a factor of 4 (cells of 1/4 to 4 times
    the ideal size cost little recall per probe; beyond that, rebuild)."""
    old_codec, new_codec = old_factory.split(",", 1)[1], new_factory.split(",", 1)[1]
    ratio = nlist_of(old_factory) / nlist_of(new_factory)
    return old_codec == new_codec and 0.25 <= ratio <= 4


def shard_count(n: int) -> int:
    """Main shards for ``n`` vectors when not told: one per ``SHARD_ROWS``."""
    return max(1, -(-n // SHARD_ROWS))


def train_rows(n: int, nlist: int, size: int = TRAIN_SAMPLE, seed: int = 0) -> np.ndarray:
    """Rows of a uniform random training sample of ``n`` vectors, ascending: ``size`` of them, but
    at least 39 per cell (k-means' floor) when there are that many."""
    m = min(n, max(size, 39 * nlist))
    if m == n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False))


def train(sample: np.ndarray, factory_string: str, seed: int = 0):
    """An empty IVF index (inner product) trained on ``sample``."""
    import faiss

    x = np.ascontiguousarray(sample, dtype=np.float32)
    index = faiss.index_factory(x.shape[1], factory_string, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = seed
    if not index.is_trained:
        index.train(x)
    return index


def empty_like(trained):
    """A copy of the trained index with no vectors (same quantizer, same codec)."""
    import faiss

    index = faiss.clone_index(trained)
    index.reset()
    return index


def _chunks(part: Part) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    return part() if callable(part) else [part]


def fill(trained, part: Part, threads: int | None = None):
    """A new shard: a copy of ``trained`` with the vectors of ``part`` added under their ids."""
    import faiss

    if threads is not None:
        faiss.omp_set_num_threads(threads)  # this thread's OpenMP team (a pool thread or a Ray worker)
    index = empty_like(trained)
    for vectors, ids in _chunks(part):
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, np.int64))
    return index


def _fill_serialized(trained_bytes: np.ndarray, part: Part) -> np.ndarray:
    """Ray task body: bytes in, bytes out (FAISS indexes do not pickle)."""
    import faiss

    shard = fill(faiss.deserialize_index(np.asarray(trained_bytes)), part, threads=1)
    return faiss.serialize_index(shard)


def ray_running() -> bool:
    """Whether this process is connected to Ray (``ray.init`` was called): then shards fill as Ray tasks."""
    try:
        import ray
    except ImportError:
        return False
    return bool(ray.is_initialized())


def fill_parallel(trained, parts: Sequence[Part], workers: int | None = None, pool: str = "auto") -> list:
    """One shard per part, filled in parallel; → the shards, in the order of ``parts``.

    ``pool``: ``ray`` (tasks on the connected cluster, one CPU each), ``thread`` (``workers``
    threads here, one OpenMP thread each; FAISS releases the GIL), ``serial`` (one after the
    other, FAISS using every core) or ``auto`` (ray if connected, else thread)."""
    if pool == "auto":
        pool = "ray" if ray_running() else "thread"
    if pool == "ray":
        import faiss
        import ray

        task = ray.remote(num_cpus=1, max_retries=3)(_fill_serialized)
        ref = ray.put(faiss.serialize_index(trained))
        futures = [task.remote(ref, p) for p in parts]
        return [faiss.deserialize_index(np.asarray(ray.get(f))) for f in futures]
    workers = workers or os.cpu_count() or 1
    if pool == "serial" or workers == 1 or len(parts) == 1:
        return [fill(trained, p) for p in parts]
    if pool != "thread":
        raise ValueError(f"unknown pool {pool!r} (ray, thread, serial or auto)")
    with ThreadPoolExecutor(max_workers=min(workers, len(parts))) as ex:
        return list(ex.map(lambda p: fill(trained, p, threads=1), parts))


def merge(shards: Sequence):
    """One index holding every shard's vectors (``merge_from``: the shards must be identically
    trained; their vectors move, the inputs are left empty). → the first shard, grown."""
    if not shards:
        raise ValueError("nothing to merge")
    out = shards[0]
    for s in shards[1:]:
        out.merge_from(s, 0)  # 0: keep the ids as they are
    return out


def split_rows(n: int, parts: int) -> list[np.ndarray]:
    """``parts`` contiguous, near-equal row ranges of ``n`` rows."""
    return [r for r in np.array_split(np.arange(n), max(1, parts))]


# ---------------------------------------------------------------- the index


@dataclass
class ShardedIndex:
    """Main shards (served with a merged top-k), a delta shard and tombstones, one quantizer.

    Quacks like the parts of a FAISS index that simsearch uses: ``search``, ``ntotal``, ``d``,
    ``nlist``, ``set_params`` (``nprobe``), ``live_ids``."""

    trained: Any  # the empty trained index every shard is a copy of
    main: list  # IVF indexes over the same quantizer
    delta: Any  # IVF index over the same quantizer: vectors added since the last compaction
    tombstones: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ids masked in main
    nprobe: int = 1
    sources: list = field(default_factory=list)  # per main shard: the file it was read from (None: changed)
    _selector: Any = field(default=None, repr=False)
    _main_ids: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        self.tombstones = np.unique(np.asarray(self.tombstones, dtype=np.int64))
        if len(self.sources) != len(self.main):
            self.sources = [None] * len(self.main)

    @property
    def d(self) -> int:
        return int(self.trained.d)

    @property
    def nlist(self) -> int:
        import faiss

        return int(faiss.extract_index_ivf(self.trained).nlist)

    @property
    def ntotal(self) -> int:
        """Live vectors: main minus tombstones, plus the delta."""
        return sum(int(s.ntotal) for s in self.main) - len(self.tombstones) + int(self.delta.ntotal)

    def set_params(self, params: dict) -> None:
        for k, v in params.items():
            if k != "nprobe":
                raise ValueError(f"a sharded index has no search parameter {k!r}")
            self.nprobe = max(1, min(int(v), self.nlist))

    def main_ids(self) -> np.ndarray:
        """Ids held by the main shards (tombstoned ones included), sorted."""
        if self._main_ids is None:
            from .ann import index_ids

            parts = [index_ids(s) for s in self.main]
            self._main_ids = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        return self._main_ids

    def live_ids(self) -> np.ndarray:
        from .ann import index_ids

        main = self.main_ids()
        return np.concatenate([main[~np.isin(main, self.tombstones)], index_ids(self.delta)])

    def _params(self, masked: bool):
        import faiss

        p = faiss.SearchParametersIVF()
        p.nprobe = self.nprobe
        if masked and len(self.tombstones):
            if self._selector is None:
                batch = faiss.IDSelectorBatch(self.tombstones)
                self._selector = (faiss.IDSelectorNot(batch), batch)  # keep the inner selector alive
            p.sel = self._selector[0]
        return p

    def search(self, q: np.ndarray, k: int):
        """Top ``k`` by inner product over every shard, the lists merged; → (scores, ids) like FAISS.
        The shards share one quantizer, so the ``nprobe`` nearest cells are found once and every
        shard scans those cells (``search_preassigned``; the main shards with the tombstones masked)."""
        import faiss

        q = np.ascontiguousarray(q, dtype=np.float32)
        parts = [(s, True) for s in self.main if s.ntotal] + ([(self.delta, False)] if self.delta.ntotal else [])
        if not parts:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        quantizer = faiss.extract_index_ivf(self.trained).quantizer
        assert quantizer is not None  # a trained IVF index has its quantizer
        cell_d, cells = quantizer.search(q, self.nprobe)
        results = [_search_preassigned(s, q, k, cells, cell_d, self._params(masked)) for s, masked in parts]
        return merge_topk([r[0] for r in results], [r[1] for r in results], k)


def _search_preassigned(index, q: np.ndarray, k: int, cells: np.ndarray, cell_d: np.ndarray, params):
    """``IndexIVF::search_preassigned`` with search parameters (its Python wrapper takes none)."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    n = len(q)
    scores, ids = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    cells, cell_d = np.ascontiguousarray(cells, np.int64), np.ascontiguousarray(cell_d, np.float32)
    # stub gap: the SWIG-level method (the wrapper renames it *_c) takes raw pointers
    ivf.search_preassigned_c(  # type: ignore[attr-defined]
        n,
        faiss.swig_ptr(q),
        k,
        faiss.swig_ptr(cells),
        faiss.swig_ptr(cell_d),
        faiss.swig_ptr(scores),
        faiss.swig_ptr(ids),
        False,
        params,
    )
    return scores, ids


def merge_topk(scores: Sequence[np.ndarray], ids: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (Q, k) result lists (higher score first, id -1 = empty) into one top ``k``."""
    s = np.concatenate(scores, axis=1)
    i = np.concatenate(ids, axis=1)
    s = np.where(i < 0, -np.inf, s)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    s, i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    if s.shape[1] < k:  # fewer candidates than k in all: pad as FAISS does
        pad = k - s.shape[1]
        s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
        i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
    return s.astype(np.float32), i.astype(np.int64)


# ---------------------------------------------------------------- build, update, compact


def build(
    vectors: np.ndarray,
    ids: np.ndarray,
    factory_string: str,
    shards: int | None = None,
    workers: int | None = None,
    pool: str = "auto",
    seed: int = 0,
) -> ShardedIndex:
    """Train the quantizer on a uniform sample of ``vectors``, fill ``max(shards, workers)`` parts
    in parallel, and merge them into ``shards`` main shards (default :func:`shard_count`)."""
    n = len(vectors)
    if n == 0:
        raise ValueError("a sharded index needs vectors to train its quantizer on")
    shards = shards or shard_count(n)
    trained = train(vectors[train_rows(n, nlist_of(factory_string), seed=seed)], factory_string, seed)
    workers = workers or os.cpu_count() or 1
    n_parts = max(shards, min(workers, max(1, n // 1000)))
    parts = [(vectors[r], ids[r]) for r in split_rows(n, n_parts)]
    filled = fill_parallel(trained, parts, workers, pool)
    groups = np.array_split(np.arange(n_parts), shards)
    main = [merge([filled[j] for j in g]) for g in groups]
    return ShardedIndex(trained, main, empty_like(trained))


def update(index: ShardedIndex, add_vectors: np.ndarray, add_ids: np.ndarray, remove_ids: np.ndarray) -> ShardedIndex:
    """A new ShardedIndex: ``remove_ids`` gone (dropped from the delta, tombstoned in the main
    shards), then ``add_vectors`` added to a copy of the delta. A replaced vector is a remove and an
    add of the same id. The main shards are shared with ``index``, unchanged."""
    import faiss

    from .ann import index_ids

    remove_ids = np.unique(np.asarray(remove_ids, dtype=np.int64))
    add_ids = np.asarray(add_ids, dtype=np.int64)
    delta = faiss.clone_index(index.delta)
    in_delta = np.isin(remove_ids, index_ids(delta))
    if in_delta.any():
        delta.remove_ids(faiss.IDSelectorBatch(remove_ids[in_delta]))
    main_ids = index.main_ids()
    tomb = np.union1d(index.tombstones, remove_ids[np.isin(remove_ids, main_ids)])
    live_main = main_ids[~np.isin(main_ids, tomb)]
    clash = np.intersect1d(add_ids, np.concatenate([live_main, index_ids(delta)]))
    if len(clash):
        raise ValueError(f"ids already in the index: {clash[:5].tolist()}")
    if len(add_ids):
        delta.add_with_ids(np.ascontiguousarray(add_vectors, dtype=np.float32), np.ascontiguousarray(add_ids))
    out = ShardedIndex(index.trained, list(index.main), delta, tomb, index.nprobe, list(index.sources))
    out._main_ids = main_ids
    return out


def needs_compaction(index: ShardedIndex, fraction: float = COMPACT_FRACTION) -> bool:
    """Whether the delta and tombstones outgrew ``fraction`` of the main shards."""
    main = sum(int(s.ntotal) for s in index.main)
    return int(index.delta.ntotal) + len(index.tombstones) > fraction * max(main, 1)


def compact(
    index: ShardedIndex, shards: int | None = None, writable: Callable[[int], Any] | None = None
) -> ShardedIndex:
    """Fold the delta and the tombstones into the main shards: tombstoned ids removed from each
    shard, the delta appended to the smallest shard (``merge_from``: its codes move as they are,
    no original vectors needed). ``shards``: redistribute into this many main shards (all vectors
    merged, then split by list position). ``writable(i)``: a writable copy of main shard ``i``
    (default: a clone; :func:`read` offers one that reads the file again instead of cloning a
    memory map). → a new ShardedIndex with an empty delta and no tombstones."""
    import faiss

    get = writable or (lambda i: faiss.clone_index(index.main[i]))
    main = [get(i) for i in range(len(index.main))]
    if len(index.tombstones):
        sel = faiss.IDSelectorBatch(index.tombstones)
        for s in main:
            s.remove_ids(sel)
    delta = faiss.clone_index(index.delta)
    if delta.ntotal:
        smallest = min(range(len(main)), key=lambda i: main[i].ntotal)
        main[smallest].merge_from(delta, 0)
    if shards is not None and shards != len(main):
        main = _reshard(index.trained, merge(main), shards)
    return ShardedIndex(index.trained, main, empty_like(index.trained), nprobe=index.nprobe)


def _reshard(trained, whole, shards: int) -> list:
    """Split one IVF index into ``shards`` by position within each inverted list (codes copied as
    they are), so every shard keeps a share of every cell."""
    import faiss

    src = faiss.extract_index_ivf(whole)
    inv = src.invlists
    assert inv is not None  # an IVF index always owns inverted lists
    out = [empty_like(trained) for _ in range(shards)]
    for lst in range(src.nlist):
        size = inv.list_size(lst)
        if not size:
            continue
        ids = faiss.rev_swig_ptr(inv.get_ids(lst), size).copy()
        codes = faiss.rev_swig_ptr(inv.get_codes(lst), size * inv.code_size).copy()
        for j, r in enumerate(np.array_split(np.arange(size), shards)):
            if len(r):
                dst = faiss.extract_index_ivf(out[j])
                assert dst.invlists is not None
                part_ids = np.ascontiguousarray(ids[r])  # named: swig_ptr must not outlive the array
                part_codes = np.ascontiguousarray(codes[r[0] * inv.code_size : (r[-1] + 1) * inv.code_size])
                dst.invlists.add_entries(lst, len(r), faiss.swig_ptr(part_ids), faiss.swig_ptr(part_codes))
                dst.ntotal += len(r)
    return out


# ---------------------------------------------------------------- on disk


def write(index: ShardedIndex, directory: Path) -> list[str]:
    """Write ``index`` into ``directory`` (a new generation being assembled); → the file names.
    Main shards read unchanged from an earlier generation are hard-linked (copied where links are
    not possible), the rest written; the caller fsyncs and renames the directory."""
    import faiss

    directory = Path(directory)
    names = ["trained.faiss", "delta.faiss", "tombstones.npy", LAYOUT]
    faiss.write_index(index.trained, str(directory / "trained.faiss"))
    faiss.write_index(index.delta, str(directory / "delta.faiss"))
    np.save(directory / "tombstones.npy", index.tombstones)
    main: list[dict] = []
    for i, (shard, src) in enumerate(zip(index.main, index.sources)):
        name = f"main-{i:03d}.faiss"
        if src is not None and Path(src).exists():
            try:
                os.link(src, directory / name)
            except OSError:
                shutil.copyfile(src, directory / name)
        else:
            faiss.write_index(shard, str(directory / name))
        main.append({"file": name, "vectors": int(shard.ntotal)})
    layout = {
        "main": main,
        "delta": {"file": "delta.faiss", "vectors": int(index.delta.ntotal)},
        "tombstones": {"file": "tombstones.npy", "ids": int(len(index.tombstones))},
        "trained": "trained.faiss",
    }
    (directory / LAYOUT).write_text(json.dumps(layout, indent=2) + "\n")
    return names + [str(m["file"]) for m in main]


def read(directory: Path, mmap: bool = True) -> ShardedIndex:
    """The sharded index stored in ``directory`` (main shards memory-mapped unless ``mmap=False``).
    Raises ValueError / OSError / RuntimeError (FAISS) with the file's name on a bad file."""
    import faiss

    directory = Path(directory)
    try:
        layout = json.loads((directory / LAYOUT).read_text())
        files = [m["file"] for m in layout["main"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{directory / LAYOUT}: unreadable layout ({e})") from None
    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
    trained = _read_one(directory / "trained.faiss", 0)
    main = [_read_one(directory / f, flags) for f in files]
    delta = _read_one(directory / "delta.faiss", 0)
    tomb = np.load(directory / "tombstones.npy", allow_pickle=False)
    if tomb.ndim != 1 or tomb.dtype != np.int64:
        raise ValueError(f"{directory / 'tombstones.npy'}: expected int64 (N,), got {tomb.dtype} {tomb.shape}")
    for f, s, m in zip(files, main, layout["main"]):
        if s.ntotal != m.get("vectors"):
            raise ValueError(f"{directory / f}: holds {s.ntotal} vectors, {LAYOUT} says {m.get('vectors')}")
        if s.d != trained.d:
            raise ValueError(f"{directory / f}: dimension {s.d}, the quantizer's is {trained.d}")
    return ShardedIndex(trained, main, delta, tomb, sources=[directory / f for f in files])


def _read_one(path: Path, flags: int):
    import faiss

    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as e:
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing") from None
        lines = str(e).strip().splitlines()
        raise ValueError(f"{path}: unreadable FAISS index ({(lines[0] if lines else 'corrupt')[:120]})") from None


def reopen_writable(index: ShardedIndex) -> Callable[[int], Any]:
    """For :func:`compact`: main shard ``i`` read again from its file into memory (writable), or a
    clone when it has no file."""
    import faiss

    def get(i: int):
        src = index.sources[i]
        return faiss.read_index(str(src)) if src is not None else faiss.clone_index(index.main[i])

    return get

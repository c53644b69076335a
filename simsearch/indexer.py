"""Building and updating an index: files → decode → (train) → embed → store.

``update()`` is the one entry point; a first run is an update of nothing.
It diffs the folder against the manifest (size + mtime, confirmed by content
hash), decodes only new and changed files, trains a model only when the
index has none (or ``retrain``), embeds, and commits a new generation
atomically under the writer lock.

Memory does not grow with the folder, apart from the vectors: a new model trains
on a bounded, uniformly drawn sample (``train_sample``: ``TrainConfig.max_images``
and ``max_sample_bytes``), and the files are decoded and embedded a chunk at a
time (``embed_files``, or ``simsearch.distributed.ray_embed_files`` with
``BuildOptions.ray``). Only the codes (4·D bytes an image) and reconstruction
statistics (12 bytes) are kept in memory; the per-file records — the discovered
paths (sorted on disk), their stat, what decoding found, the new manifest entries —
are ``spill.SpillList``s in a scratch SQLite file under ``INDEX/work/``, read a
window at a time and removed when the build ends. (An update of an existing index
also reads that index's manifest into memory, as ``store.read`` does.)
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import __version__, configs, reconerror, spill, store
from .discover import discover, walk
from .errors import SimsearchError
from .formats import IMAGE_EXTENSIONS
from .meta import EmbeddingRecord, FaissRecord, IndexMeta, ModelRecord, PostRecord, SearchRecord
from .pool import decode_files
from .preprocess import Preprocess, preprocess, probe
from .store import Entry, Snapshot
from .views import tta_views_for

if TYPE_CHECKING:
    from .postprocess import PostConfig
from .settings import ModelConfig, TrainConfig, corruption_config

Progress = Callable[..., None]


@dataclass(frozen=True)
class BuildOptions:
    """What ``simsearch index`` / ``Index.build`` may be told; None = choose from the corpus.

    The training and the model's architecture are their own configs (``settings.TrainConfig``,
    ``settings.ModelConfig``); the model's input size and channels come from ``size`` /
    ``channels`` or the corpus, and ``variational`` from the objective. ``BuildOptions.of``
    takes the flat names the command line uses (``objective``, ``max_epochs``, ``width`` …)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    architecture: ModelConfig = field(default_factory=ModelConfig)
    size: int | None = None  # model input side; None = probe the corpus
    channels: int | None = None  # 1 or 3; None = probe the corpus
    fit: str | None = None  # how a non-square image becomes square (constants.FITS); None = the default
    device: str = "auto"
    workers: int = 0  # decode processes; 0 = one per core
    embed_batch: int | None = None  # images per embedding batch; None = by device
    model: str | None = None  # use this saved model instead of training
    retrain: bool = False  # train a new model even if the index has one
    rebuild: bool = False  # ignore the existing index entirely (fresh build)
    wait: bool = False  # wait for another writer instead of failing
    index_type: str | None = None  # auto | flat | ivf | hnsw | ivfpq | sharded; None = keep the index's (auto at first)
    shards: int | None = None  # main shards of a sharded index at its next build or compaction; None = by size
    post: PostConfig | None = None  # None = the default (whitening + diffusion)
    tta: bool | None = None  # embed as the mean over 5 shifted views; None = keep the index's (on at first)
    chunk_size: int | None = None  # images decoded and embedded at a time; None = by size (``chunk_for``)
    ray: bool = False  # embed on a Ray cluster (``simsearch.distributed``, the ``simsearch[ray]`` extra)
    ray_address: str | None = None  # the cluster to join; None = start a local one
    # seconds a build that trains a model aims to finish in (``training_budget``); None = settings.BUILD_BUDGET,
    # 0 = no aim (train for the training config's time_budget). ``of`` turns it off when time_budget is given.
    build_budget: float | None = None

    TRAIN_NAMES = {"objective", "max_epochs", "time_budget", "batch_size", "seed", "max_images", "precision"}
    MODEL_NAMES = {"width": "width", "depth": "depth", "dim": "latent_dim"}

    @classmethod
    def of(cls, train: dict | None = None, **kw) -> BuildOptions:
        """From flat names as on the command line: ``objective``, ``max_epochs``, ``time_budget``,
        ``batch_size``, ``seed`` go to the training config (with any ``train`` dict of further
        TrainConfig fields), ``width``, ``depth``, ``dim`` to the architecture; the rest are fields.
        A bad value raises SimsearchError; an unknown name, TypeError."""
        if "train_sample" in kw:  # the command line's name for TrainConfig.max_images
            kw["max_images"] = kw.pop("train_sample")
        tkw = {k: kw.pop(k) for k in list(kw) if k in cls.TRAIN_NAMES}
        mkw = {cls.MODEL_NAMES[k]: kw.pop(k) for k in list(kw) if k in cls.MODEL_NAMES}
        if "batch_size" in tkw:
            kw.setdefault("embed_batch", tkw["batch_size"])
        if tkw.get("time_budget") is not None:  # a training budget asked for is kept as given
            kw.setdefault("build_budget", 0.0)
        try:
            return cls(train=TrainConfig(**tkw, **(train or {})), architecture=ModelConfig(**mkw), **kw)
        except ValueError as e:
            raise SimsearchError(str(e)) from None

    def __post_init__(self):
        if self.chunk_size is not None and self.chunk_size < 1:
            raise SimsearchError(f"chunk_size must be ≥ 1, got {self.chunk_size}")
        if self.build_budget is not None and self.build_budget < 0:
            raise SimsearchError(f"build_budget must be ≥ 0 seconds (0 = none), got {self.build_budget}")


@dataclass
class UpdateReport:
    index: str
    root: str
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[dict] = field(default_factory=list)
    trained: dict | None = None  # epochs, seconds, stopped_by when a model was trained
    timings: dict[str, float] = field(default_factory=dict)
    total: int = 0
    faiss: dict | None = None  # index type, factory, search params, measured recall@10

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["skipped_count"] = len(self.skipped)
        return d


def relpath(path: str | Path, root: Path) -> str:
    rel = os.path.relpath(path, root) if root.is_dir() else os.path.basename(path)
    return Path(rel).as_posix()


class _Timer:
    def __init__(self):
        self.t = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.t[name] = round(timer.t.get(name, 0.0) + time.perf_counter() - self.t0, 3)

        return _Ctx()


def _decode(paths: list[Path], pre: Preprocess, workers: int, progress: Progress | None):
    """Decode ``paths``: (pixels (M,C,S,S) uint8 of the good ones, their positions, infos, problems)."""
    pixels = np.empty((len(paths), pre.channels, pre.size, pre.size), np.uint8)
    good: list[int] = []
    infos: dict[int, dict] = {}
    problems: list[tuple[int, str]] = []
    for i, arr, reason, info in decode_files(paths, pre, workers=workers):
        if arr is None:
            problems.append((i, reason or "unreadable"))
        else:
            pixels[len(good)] = arr
            good.append(i)
            infos[i] = info
        if progress:
            progress("decode", i + 1, len(paths))
    return pixels[: len(good)], good, infos, problems


@dataclass(frozen=True, slots=True)
class Found:
    """A file in the folder, as ``plan`` sees it (``stat`` is None when it could not be read).
    One per file for the whole build: slots and a ``str`` path keep it small (``scan``)."""

    path: str | Path
    rel: str  # relative to the indexed folder, as the manifest names it
    size: int | None = None
    mtime_ns: int | None = None


class FileInfo(NamedTuple):
    """What reading a file found (``pool.decode_files``' info, kept per embedded file as a tuple,
    not a dict: a fifth of the memory)."""

    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of(cls, info: dict) -> FileInfo:
        return cls(int(info["size"]), int(info["mtime_ns"]), info["sha256"])


# how the per-file records are stored in a build's spill (``spill.Spill``: on disk, not in memory)
# (paths as bytes: a name that is not UTF-8 is a surrogate-escaped str, which SQLite's text refuses)
_b, _s = os.fsencode, os.fsdecode
FOUND = spill.Codec(
    4, lambda f: (_b(f.path), _b(f.rel), f.size, f.mtime_ns), lambda r: Found(_s(r[0]), _s(r[1]), r[2], r[3])
)
TEXT = spill.Codec(1, lambda t: (_b(t),), lambda r: _s(r[0]))
DONE = spill.Codec(  # (Found, FileInfo): an embedded file and what reading it found
    7, lambda d: (*FOUND.encode(d[0]), *d[1]), lambda r: (FOUND.decode(r[:4]), FileInfo(*r[4:]))
)
ENTRY = spill.Codec(
    5, lambda e: (e.id, _b(e.path), e.size, e.mtime_ns, e.sha256), lambda r: Entry(r[0], _s(r[1]), *r[2:])
)


@dataclass
class Plan:
    """What an update will do: a pure diff of the folder against the manifest (``plan``). The lists
    may be ``spill.SpillList``s (the build's records on disk)."""

    unchanged: Sequence[str]  # manifest paths kept as they are (same size and mtime)
    added: Sequence[Found]  # not in the manifest: decode and embed
    changed: Sequence[Found]  # size or mtime differ: decode; embed again only if the content differs
    removed: list[str]  # in the manifest, gone from the folder
    retrain: bool  # train a new model on the decoded images
    reembed: bool  # every image is decoded and embedded again (new model or test-time views)
    views: list  # the test-time views the new generation embeds with

    @property
    def to_decode(self) -> Sequence[Found]:
        return spill.concat(self.added, self.changed)


def plan(
    found: Sequence[Found],
    old: Snapshot | None,
    *,
    only: bool = False,
    retrain: bool = False,
    model_sha: str | None = None,
    views: list | None = None,
    tta: bool | None = None,
    new_list: Callable[[spill.Codec], Any] | None = None,
) -> Plan:
    """Diff ``found`` against ``old``'s manifest. No I/O, no torch.

    ``only``: ``found`` is a list of files to add or refresh; nothing else is removed
    (``Index.add``). ``retrain``: train a new model. ``model_sha``: the hash of a model
    the user supplied (``--model``); a different one from the index's re-embeds everything.
    ``views``: the test-time views a fresh embedding uses; ``tta``: None keeps the index's
    setting, True/False asks for views or none. ``new_list(codec)``: where the per-file lists go
    (``Spill.list``; default: Python lists)."""
    views = list(views or [])
    if old is None:
        return Plan([], found, [], [], retrain=retrain, reembed=True, views=views)
    new_model = retrain or (model_sha is not None and model_sha != old.meta.model.sha256)
    have = list(old.meta.embedding.views)
    keep_views = not new_model and (tta is None or bool(views) == bool(have))
    reembed = new_model or not keep_views
    if reembed and only:
        raise SimsearchError(
            "adding files cannot re-embed the index (new model or test-time views); "
            "index the whole folder with `simsearch index`"
        )
    by_path = {e.path: e for e in old.entries}
    make = new_list or (lambda codec: [])
    unchanged, added, changed, seen = make(TEXT), make(FOUND), make(FOUND), set()
    for f in found:
        seen.add(f.rel)
        e = by_path.get(f.rel)
        if e is None:
            added.append(f)
        elif reembed or (f.size, f.mtime_ns) != (e.size, e.mtime_ns):
            changed.append(f)
        else:
            unchanged.append(f.rel)
    if only:
        unchanged.extend(e.path for e in old.entries if e.path not in seen)
        removed = []
    else:
        removed = [e.path for e in old.entries if e.path not in seen]
    return Plan(
        unchanged, added, changed, removed, retrain=retrain, reembed=reembed, views=views if not keep_views else have
    )


def scan(files: Iterable[str | Path], root: Path, root_abs: Path, into: Any = None) -> Any:
    """Stat the discovered files (a file that vanished since discovery has no stat: decoded, it fails),
    appending a ``Found`` for each to ``into`` (a ``spill.SpillList``; default a new list), in order."""
    out = [] if into is None else into
    # ``discover`` returns ``root/…``, so a string prefix cut gives the relative path (os.path.relpath
    # on 60k paths costs seconds); anything else falls back
    prefix = os.fspath(root) + "/"
    for p in files:
        p = os.fspath(p)
        rel = p[len(prefix) :] if p.startswith(prefix) and os.sep == "/" else relpath(p, root_abs)
        try:
            st = os.stat(p)
            out.append(Found(p, rel, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(Found(p, rel))
    return out


@dataclass
class Changes:
    """What the embedded files mean for the manifest (``sort_embedded``)."""

    refreshed: dict[str, Entry]  # touched, same content: keep the vector, new size/mtime
    embed: Sequence[tuple[str, FileInfo]]  # (rel, info), aligned with Embedded.codes: new content, embedded
    lost: list[str]  # indexed files that now fail to decode: dropped


# ---------------------------------------------------------------- streaming: bounded memory

CHUNK_BYTES = 64 << 20  # decoded pixels per streamed chunk when BuildOptions.chunk_size is None
CHUNK_IMAGES = (64, 4096)  # … and at least / at most this many images


def image_bytes(pre: Preprocess) -> int:
    """Bytes of one decoded model input (uint8 C×S×S)."""
    return pre.channels * pre.size * pre.size


def chunk_for(pre: Preprocess, options: BuildOptions) -> int:
    """Images decoded and embedded at a time: ``options.chunk_size``, else 64 MiB of pixels
    (4,096 images of 28 px, 5,461 → 4,096 of 64 px RGB, 341 of 256 px RGB)."""
    if options.chunk_size:
        return options.chunk_size
    lo, hi = CHUNK_IMAGES
    return max(lo, min(hi, CHUNK_BYTES // image_bytes(pre)))


def train_sample(n: int, cfg: TrainConfig, nbytes: int) -> np.ndarray:
    """Positions (ascending) of the images a new model trains on, out of ``n`` images of ``nbytes``
    bytes each: all of them, or a uniform random sample without replacement of at most
    ``cfg.max_images`` images and ``cfg.max_sample_bytes`` bytes, seeded by ``cfg.seed`` (the same
    folder gives the same sample, so an interrupted training resumes)."""
    cap = n
    if cfg.max_images:
        cap = min(cap, cfg.max_images)
    if cfg.max_sample_bytes:
        cap = min(cap, max(2, cfg.max_sample_bytes // max(1, nbytes)))
    if cap >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(cfg.seed).choice(n, size=cap, replace=False))


Decodes = Iterator[tuple[int, "np.ndarray | None", "str | None", dict]]  # as pool.decode_files yields


def _decode_sample(todo: Sequence[Found], pre: Preprocess, options: BuildOptions, progress, log):
    """Decode the training sample of ``todo`` (``train_sample``); → (its pixels, and when the sample
    is all of ``todo``, the decoded folder to embed from without decoding it again, else None)."""
    pos = train_sample(len(todo), options.train, image_bytes(pre))
    pixels, good, infos, problems = _decode([todo[i].path for i in pos], pre, options.workers, progress)
    if len(pos) < len(todo):
        log(f"training sample: {len(pos)} of {len(todo)} images, uniformly drawn (seed {options.train.seed})")
        return pixels, None
    return pixels, _replay(pixels, good, infos, problems)


def _replay(pixels: np.ndarray, good: list[int], infos: dict[int, dict], problems: list[tuple[int, str]]) -> Decodes:
    """Already decoded files, yielded as ``pool.decode_files`` yields them (in input order)."""
    row = {i: k for k, i in enumerate(good)}
    bad = dict(problems)
    for i in range(len(good) + len(bad)):
        if i in row:
            yield i, pixels[row[i]], None, infos[i]
        else:
            yield i, None, bad[i], {}


@dataclass
class Embedded:
    """What an embedder (``embed_files``, ``distributed.ray_embed_files``) returns. ``done`` and
    ``same`` may be ``spill.SpillList``s (``DONE`` records)."""

    done: Sequence[tuple[Found, FileInfo]]  # embedded files with what reading them found, in input order
    codes: np.ndarray  # (len(done), D) float32 raw codes
    recon: np.ndarray  # (len(done), 3) float32 reconstruction statistics (reconerror.COLUMNS)
    same: Sequence[tuple[Found, FileInfo]]  # decoded, content sha256 equals old_sha[rel]: not embedded (stat refresh)
    failed: list[tuple[Found, str]]  # could not be read: one-line reason
    timings: dict[str, float] = field(default_factory=dict)  # optional: seconds spent waiting for decoding ("decode")


def embed_files(
    todo: Sequence[Found],
    pre: Preprocess,
    model_path: Path,
    views: list,
    old_sha: dict[str, str],
    options: BuildOptions,
    progress: Progress | None,
    *,
    model: Any = None,
    corruption: TrainConfig | None = None,
    new_list: Callable[[spill.Codec], Any] | None = None,
) -> Embedded:
    """The local, streaming embedder (decode pool + encoder, chunk by chunk).

    ``todo`` is decoded in worker processes (``pool.decode_files``, ``options.workers``) and
    embedded a chunk (``chunk_for``) at a time: codes and reconstruction statistics of each chunk
    (one encoder pass, test-time ``views`` averaged, then the denoising error of the chunk's
    corrupted copies: ``embed.embed`` with ``recon``, ``corruption`` = the model's training
    corruptions, ``settings.corruption_config``) before the next chunk's pixels are kept, so the
    pixels held at a time are one chunk's, whatever ``len(todo)`` is. A file whose content sha256
    equals ``old_sha[rel]`` is not embedded (``same``). The model at ``model_path`` (and torch) is
    loaded only once something needs embedding; ``model``: the same model, already loaded.
    ``new_list(codec)``: where the embedded and unchanged files' records go (``Spill.list``; default
    Python lists)."""
    decoded = decode_files(spill.mapped(todo, lambda f: f.path), pre, workers=options.workers)
    load = lambda: model if model is not None else _load_model_file(model_path)  # noqa: E731
    return _embed_stream(todo, decoded, pre, load, views, old_sha, options, progress, corruption, new_list)


def _load_model_file(path: Path):
    from . import model as model_mod

    sha = Path(path).stem
    expected = sha if len(sha) == 64 and all(c in "0123456789abcdef" for c in sha) else None
    return model_mod.load(path, expected_sha256=expected)[0]


def _embed_stream(
    todo: Sequence[Found],
    decoded: Decodes,
    pre: Preprocess,
    load_model: Callable[[], Any],
    views: list,
    old_sha: dict[str, str],
    options: BuildOptions,
    progress: Progress | None,
    corruption: TrainConfig | None = None,
    new_list: Callable[[spill.Codec], Any] | None = None,
) -> Embedded:
    """``embed_files`` on a stream of decoded files (``decoded`` yields as ``pool.decode_files``)."""
    n, chunk = len(todo), chunk_for(pre, options)
    bs = options.embed_batch and max(options.embed_batch, 1)
    buf = np.empty((min(chunk, n), pre.channels, pre.size, pre.size), np.uint8)
    pending: list[tuple[Found, FileInfo]] = []  # aligned with buf[: len(pending)]
    make = new_list or (lambda codec: [])
    embedded, unchanged = make(DONE), make(DONE)  # appended to here, returned in ``out``
    out = Embedded(embedded, np.zeros((0, 0), np.float32), reconerror.unknown(0), unchanged, [])
    state: dict[str, Any] = {"model": None, "codes": None, "recon": None}
    waited = 0.0

    def embed_pending() -> None:
        if not pending:
            return
        from . import embed as embed_mod

        if state["model"] is None:
            state["model"] = load_model()
        codes, recon = embed_mod.embed(
            state["model"], buf[: len(pending)], options.device, bs, None, views, recon=True, corruption=corruption
        )
        if state["codes"] is None:  # every row is written once: the vectors, and nothing that grows with n
            state["codes"] = np.empty((n, codes.shape[1]), np.float32)
            state["recon"] = np.empty((n, recon.shape[1]), np.float32)
        k = len(out.done)
        state["codes"][k : k + len(codes)] = codes
        state["recon"][k : k + len(codes)] = recon
        for d in pending:
            embedded.append(d)
        pending.clear()

    it = iter(decoded)
    try:
        for done in range(1, n + 1):
            t0 = time.perf_counter()
            i, arr, reason, info = next(it)
            waited += time.perf_counter() - t0
            f = todo[i]
            if arr is None:
                out.failed.append((f, reason or "unreadable"))
            elif old_sha.get(f.rel) == info["sha256"]:
                unchanged.append((f, FileInfo.of(info)))
            else:
                buf[len(pending)] = arr
                pending.append((f, FileInfo.of(info)))
                if len(pending) == len(buf):
                    embed_pending()
            if progress and done % chunk == 0 and done < n:
                progress("embed", done, n)
        embed_pending()
        if progress and n:
            progress("embed", n, n)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # stops the decode workers when embedding failed
    if state["codes"] is not None:
        out.codes, out.recon = state["codes"][: len(out.done)], state["recon"][: len(out.done)]
    out.timings["decode"] = round(waited, 3)
    return out


def _embed(
    index_dir: Path,
    model,
    info: ModelRecord,
    pre: Preprocess,
    todo: Plan,
    old,
    replay,
    options,
    progress,
    new_list=None,
):
    """Embed the files the plan decodes: on Ray (``options.ray``), from the training sample's pixels
    when they are the whole folder (``replay``), else streamed (``embed_files``). → ``Embedded``
    (``new_list``: as ``embed_files``)."""
    path = store.model_path(index_dir, info.sha256)  # the model is in the index before anything is embedded
    old_sha = {} if todo.reembed or old is None else {e.path: e.sha256 for e in old.entries}
    files = todo.to_decode
    corruption = corruption_config(info.train)  # the denoising error's corruptions: the model's training ones
    if options.ray:
        import importlib

        distributed = importlib.import_module("simsearch.distributed")  # the simsearch[ray] extra
        return distributed.ray_embed_files(
            files, pre, path, todo.views, old_sha, options, progress, corruption=corruption
        )
    if replay is not None:
        load = lambda: model or _load_model_file(path)  # noqa: E731
        return _embed_stream(files, replay, pre, load, todo.views, old_sha, options, progress, corruption, new_list)
    return embed_files(
        files, pre, path, todo.views, old_sha, options, progress, model=model, corruption=corruption, new_list=new_list
    )


def _split_timings(timer: _Timer, emb: Embedded) -> None:
    """Time an embedder spent waiting for decoded pixels counts as decoding, not embedding."""
    waited = emb.timings.get("decode")
    if waited:
        timer.t["decode"] = round(timer.t.get("decode", 0.0) + waited, 3)
        timer.t["embed"] = round(max(0.0, timer.t.get("embed", 0.0) - waited), 3)


def sort_embedded(emb: Embedded, old: Snapshot | None) -> Changes:
    """What an embedder's result means for the manifest. A changed mtime with identical content is not
    an update: the old entry with the new stat (``same``; the embedder compared the content hashes);
    embedded → to assemble (row = its row in ``emb.codes``); an indexed file that failed → dropped."""
    by_path = {e.path: e for e in old.entries} if old is not None else {}
    refreshed = {f.rel: replace(by_path[f.rel], size=info.size, mtime_ns=info.mtime_ns) for f, info in emb.same}
    embed = spill.mapped(emb.done, lambda d: (d[0].rel, d[1]))
    lost = [f.rel for f, _ in emb.failed if f.rel in by_path]
    return Changes(refreshed, embed, lost)


def update(
    root: str | os.PathLike,
    index_dir: str | os.PathLike | None = None,
    options: BuildOptions = BuildOptions(),
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    files: list[Path] | None = None,
) -> UpdateReport:
    """Index ``root`` into ``index_dir`` (create, or update incrementally). See the module docstring.

    ``files``: only look at these files (inside ``root``) and remove nothing — ``Index.add``.
    Steps: discover → plan → decode → train → embed → assemble → fit → commit."""
    started = time.perf_counter()
    root = Path(root)
    index_dir = store.index_path(index_dir)
    log = log or (lambda msg: None)
    timer = _Timer()
    with store.write_lock(index_dir, wait=options.wait):
        spill.clean(index_dir / "work")  # what a killed run left
        with spill.Spill(index_dir / "work") as records:
            return _update(root, index_dir, options, progress, log, files, started, timer, records)


def _update(root: Path, index_dir: Path, options, progress, log, files, started: float, timer, records: spill.Spill):
    """``update``'s steps, under the write lock; the per-file records go to ``records`` (on disk)."""
    root_abs = root.resolve() if root.is_dir() else root.resolve().parent
    only = files is not None
    with timer("discover"):
        if files is not None:  # only
            paths, problems = _check_inside(files, root_abs)
            found = scan(paths, root, root_abs, into=records.list(FOUND))
        else:
            sorted_paths = records.sorter()
            problems = walk(root, sorted_paths.add)
            found = scan(sorted_paths, root, root_abs, into=records.list(FOUND))
    old = _read_old(index_dir, root_abs, options)
    report = UpdateReport(index=str(index_dir), root=str(root_abs))
    report.skipped = [{"path": relpath(p, root_abs), "reason": r} for p, r in problems]
    for s in report.skipped:
        _log_skip(log, s["path"], s["reason"])
    if not found and old is None:
        raise SimsearchError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS)[:8])}, …)")

    source = _choose_model(index_dir, old, spill.mapped(found, lambda f: f.path), options)
    todo = plan(
        found,
        old,
        only=only,
        retrain=source.train,
        model_sha=source.info.sha256 if source.info is not None and options.model else None,
        views=tta_views_for(source.pre.size) if options.tta is not False else [],
        tta=options.tta,
        new_list=records.list,
    )
    if old is not None and todo.reembed and not source.train:
        if source.info is not None and source.info.sha256 != old.meta.model.sha256:
            log(f"model {source.info.sha256[:12]} differs from the index's model: re-embedding every image")
        else:
            log("test-time views changed: re-embedding every image")

    pixels, replay = None, None
    with timer("decode"):  # only the training sample, when a model is trained; the rest streams
        if source.train:
            pixels, replay = _decode_sample(todo.to_decode, source.pre, options, progress, log)
    budget = None
    if source.train and pixels is not None:
        decode_s = timer.t.get("decode", 0.0) / max(1, len(pixels)) if replay is None else 0.0
        spent = time.perf_counter() - started
        budget = training_budget(options, source.pre, pixels, len(todo.to_decode), decode_s, spent, todo.views, log)
    model, model_info = _model_step(index_dir, old, source, pixels, options, progress, timer, report, log, budget)
    pixels = None  # training is done: only ``replay`` (the whole folder when it was the sample) keeps them
    with timer("embed"):
        emb = _embed(index_dir, model, model_info, source.pre, todo, old, replay, options, progress, records.list)
    replay = None
    _split_timings(timer, emb)
    for f, reason in emb.failed:
        report.skipped.append({"path": f.rel, "reason": reason})
        _log_skip(log, f.rel, reason)
    changes = sort_embedded(emb, old)
    new_vecs, new_recon = emb.codes, emb.recon
    if not len(new_vecs):
        new_vecs = np.zeros((0, int(model_info.config["latent_dim"])), np.float32)

    report.removed = len(todo.removed) + len(changes.lost)
    if old is not None and _nothing_changed(old, todo, changes, report, only, options):
        report.unchanged, report.total, report.timings = len(old), len(old), timer.t
        return report  # an unchanged folder writes nothing

    rows = assemble(old, todo, changes, new_vecs, report, new_recon, records.list)
    emb = new_vecs = new_recon = None  # the codes live on in ``rows`` only
    with timer("fit"):
        if todo.reembed or old is None:
            model = model or _load_model(index_dir, model_info)
            post, post_record = _fit_post(rows, index_dir, options, log, (root_abs, source.pre, model, todo.views))
        else:
            post, post_record = old.post, old.meta.post
    with timer("write"):
        carried = [x for x in old.skipped if x["path"] not in {f.rel for f in found}] if only and old else []
        faiss_record, faiss_index = _plan_faiss(
            rows, post, old if not todo.reembed else None, options.index_type, changes.embed, options.shards
        )
        meta = _meta(old, rows, model_info, source.pre, root_abs, todo, post, post_record, faiss_record)
        snap = Snapshot(
            meta, rows.ids, rows.vectors, rows.entries, carried + report.skipped, post=post, recon=rows.recon
        )
        snap._faiss = faiss_index
        store.write(index_dir, snap)
    (index_dir / "work" / "train.ckpt").unlink(missing_ok=True)  # committed: no resume needed
    shutil.rmtree(index_dir / "work" / "ray-parts", ignore_errors=True)  # a --ray run's parts, likewise
    report.faiss = configs.to_dict(snap.meta.faiss)
    report.total = len(snap)
    report.timings = timer.t
    return report


def _read_old(index_dir: Path, root_abs: Path, options: BuildOptions) -> Snapshot | None:
    """The live generation (None for a first build or ``--rebuild``); it must index ``root_abs``."""
    if not store.exists(index_dir) or options.rebuild:
        return None
    old = store.read(index_dir, load_faiss=False)
    if Path(old.meta.corpus_root) != root_abs:
        raise SimsearchError(
            f"{index_dir}: index was built from {old.meta.corpus_root}, not {root_abs}; "
            "use another --index or pass --rebuild to replace it"
        )
    return old


def _nothing_changed(old: Snapshot, todo: Plan, changes: Changes, report: UpdateReport, only: bool, options) -> bool:
    return (
        not todo.reembed
        and not changes.embed
        and not changes.refreshed
        and not report.removed
        and _same_skips(old.skipped, report.skipped, only)
        and options.index_type in (None, old.meta.faiss.requested)
    )


# ---------------------------------------------------------------- the build budget

FIT_SECONDS_PER_IMAGE = 0.55e-3  # fit + write after embedding: 31.2 s for the 60k Fashion-MNIST build (2 cores)
# per image of 64×64×3 (and in proportion to the pixels above that): more than twice what the probe has
# measured for that input on 2 cores (≈8 ms)
PESSIMISTIC_EMBED_SECONDS = 0.02
PROBE_IMAGES = 512  # images embedded to time the embedding pass: one CPU batch (256 read 20% slow per image)
MIN_TRAINING_SHARE = 0.5  # the build budget never cuts training below this share of its time budget


def training_budget(
    options: BuildOptions, pre: Preprocess, pixels, n_embed: int, decode_s: float, spent: float, views, log
) -> float | None:
    """Seconds of training that let a build end within ``options.build_budget`` (``settings.BUILD_BUDGET``
    when None), or None: train for the training config's ``time_budget``. The time still to come
    after training is estimated on this machine: embedding ``n_embed`` images, timed on up to
    ``PROBE_IMAGES`` of the decoded ``pixels`` with an untrained model of the same shape (the same
    work as the trained one: views, reconstruction, denoising error), decoding them again
    (``decode_s`` per image; 0 when the training sample is the whole folder) and fitting the
    search (``FIT_SECONDS_PER_IMAGE``). ``spent``: seconds the build has run. Never below
    ``MIN_TRAINING_SHARE`` of the time budget (a folder too large for the build budget trains on);
    never above it. Off for ``--ray`` (embedding runs elsewhere) and without a time budget."""
    from .settings import BUILD_BUDGET

    tcfg = options.train
    target = BUILD_BUDGET if options.build_budget is None else options.build_budget
    if not target or not tcfg.time_budget or options.ray or not len(pixels):
        return None
    fit_s = FIT_SECONDS_PER_IMAGE * n_embed
    slow = PESSIMISTIC_EMBED_SECONDS * max(1.0, image_bytes(pre) / (3 * 64 * 64))
    if spent + tcfg.time_budget + n_embed * (slow + decode_s) + fit_s <= target:
        return None  # even a slow embedding pass leaves the whole training budget: nothing to measure
    embed_s = n_embed * (_embed_seconds(options, pre, pixels[:PROBE_IMAGES], views) + decode_s)
    budget = min(tcfg.time_budget, max(MIN_TRAINING_SHARE * tcfg.time_budget, target - spent - embed_s - fit_s))
    if budget < tcfg.time_budget:
        log(
            f"training budget {budget:.0f} s of {tcfg.time_budget:.0f}: the build aims to finish within "
            f"{target:.0f} s, and embedding {n_embed} images is estimated at {embed_s:.0f} s on this machine, "
            f"fitting at {fit_s:.0f} s"
        )
    return budget


def _embed_seconds(options: BuildOptions, pre: Preprocess, probe: np.ndarray, views) -> float:
    """Seconds per image of the embedding pass on ``probe`` (uint8 pixels), with an untrained model of the
    configured shape (after a warm-up on a few images)."""
    from . import embed as embed_mod
    from . import model as model_mod

    model = model_mod.build(_model_config(options, pre)).eval()
    run = lambda x: embed_mod.embed(  # noqa: E731
        model, x, options.device, options.embed_batch, None, views, recon=True, corruption=options.train
    )
    run(probe[:16])
    t0 = time.perf_counter()
    run(probe)
    return (time.perf_counter() - t0) / len(probe)


def _model_step(index_dir: Path, old, source, pixels, options, progress, timer, report, log, budget=None):
    """Train a model when the plan says so (for ``budget`` seconds when given, else the training config's
    time budget), or copy in a user-supplied one; → (model or None, record)."""
    if source.train:
        model, trained = _train(index_dir / "work", pixels, source.pre, options, progress, timer, report, log, budget)
        return model, _save_model(model, trained, index_dir)
    if options.model and (old is None or old.meta.model.sha256 != source.info.sha256):
        return source.model, _adopt_model(source.model, source.info, Path(options.model), index_dir)
    return source.model, source.info


def _load_model(index_dir: Path, info: ModelRecord):
    return store.load_model(index_dir, info.sha256)


def _log_skip(log: Callable[[str], None], path, reason: str) -> None:
    log(f"skipped {path}: {reason}")  # (cli's progress display recognises this prefix)


def _input_for(files: Sequence[str | Path], options: BuildOptions) -> Preprocess:
    """The model input for a new model: what the options fix, the rest probed from the corpus."""
    probed = probe(files)
    return Preprocess(options.size or probed.size, options.channels or probed.channels, options.fit or probed.fit)


def _fit_post(snap: Rows, index_dir: Path, options: BuildOptions, log, calibration=None):
    """Fit the post-processing on the gallery and calibrate its near-copy threshold
    (``calibration``: (corpus root, preprocess, model, views) to make and embed the copies);
    → (PostProcess, PostRecord)."""
    from . import postprocess

    cfg = options.post or postprocess.PostConfig()
    post = postprocess.fit(snap.vectors, snap.ids, cfg, log)
    record = None
    if calibration is not None and cfg.copies and len(snap) >= 2:
        root, pre, model, views = calibration
        # one key per file content, equal for identical files (Python's hash of the sha256, compared only
        # within this call: 8 bytes a file instead of a 64-character string's 256)
        keys = np.fromiter((hash(e.sha256) for e in snap.entries), np.int64, len(snap.entries))
        originals, copy_raw, pixel_pairs = _copy_codes(snap, root, pre, model, views, options, post, keys)
        record = postprocess.calibrate(post, snap.vectors, keys, originals, copy_raw)
        if record.get("placement"):
            log(f"near-copy threshold {record['threshold']} (base cosine; from {record['copies']} transformed copies)")
        elif record["copies"]:
            log(
                f"near-copy placement off: {record['copies']} transformed copies are no closer to their originals"
                " than images are to their nearest neighbours"
            )
        if len(originals):
            record["pixel"] = px = postprocess.calibrate_pixels(*pixel_pairs)
            if px["threshold"] is not None:
                log(f"pixel check of query results at similarity {px['threshold']} (from the same copies)")
            else:
                log("pixel check of query results off: pixels do not tell copies from their nearest neighbours here")
    return post, PostRecord(
        sha256="",  # store.write fills it in when it stores the fitted post-processing
        config=cfg.to_dict(),
        diffusion=post.diffusion,
        whitened=post.whitener is not None,
        anchors=0 if post.anchor_ids is None else int(len(post.anchor_ids)),
        copies=record,
    )


COPY_SAMPLE = 200  # gallery images copied to calibrate the near-copy threshold
CALIBRATION_CHUNK = 25  # of them compared by pixels at a time (their grids in memory together)


def _copy_codes(
    snap: Rows,
    root: Path,
    pre: Preprocess,
    model,
    views,
    options: BuildOptions,
    post,
    keys: np.ndarray,
    n: int = COPY_SAMPLE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Transformed copies (``copies.make_copy``, default strength) of a deterministic sample of gallery
    images: → (their gallery rows, the copies' raw codes, and for the pixel check's calibration the
    pixel similarity (``pixelmatch``) of each copy to its original and of each original to its nearest
    distinct gallery image). Unreadable files are left out. The pictures are compared a chunk at a
    time, so the memory this takes does not grow with the sample."""
    from . import copies, pixelmatch, postprocess
    from . import embed as embed_mod

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(snap), size=min(n, len(snap)), replace=False))
    (at, nearest), _ = postprocess.nearest_distinct(post.base(snap.vectors), keys, rows)
    near = dict(zip(at.tolist(), nearest.tolist()))  # position in rows → its nearest distinct row
    side = max(256, 4 * pre.size)  # copies made from an original reduced to 4× the model input: fast enough
    kept: list[int] = []
    codes: list[np.ndarray] = []
    copy_px: list[np.ndarray] = []
    near_px: list[np.ndarray] = []
    for start in range(0, len(rows), CALIBRATION_CHUNK):
        chunk = np.arange(start, min(start + CALIBRATION_CHUNK, len(rows)))
        got, made = copies.copies_of(
            [root / snap.entries[rows[i]].path for i in chunk], snap.ids[rows[chunk]].tolist(), max_side=side
        )
        if not made:
            continue
        pixels = np.stack([preprocess(img, pre) for img in made])
        codes.append(embed_mod.embed(model, pixels, options.device, views=views))
        grids: dict = {}
        pos, neg = [], []
        for i, img in zip(chunk[got].tolist(), made):
            kept.append(i)
            grids[("copy", i)] = pixelmatch.grids_bytes(img)
            grids[("row", int(rows[i]))] = pixelmatch.load_grid(root / snap.entries[rows[i]].path, as_bytes=True)
            pos.append((("row", int(rows[i])), ("copy", i)))
            if i in near:
                j = near[i]
                if ("row", j) not in grids:
                    grids[("row", j)] = pixelmatch.load_grid(root / snap.entries[j].path, as_bytes=True)
                neg.append((("row", int(rows[i])), ("row", j)))
        sims = pixelmatch.similarities(pos + neg, grids.get, threads=1)
        copy_px.append(sims[: len(pos)])
        near_px.append(sims[len(pos) :])
    pairs = (np.concatenate(copy_px), np.concatenate(near_px)) if copy_px else (np.zeros(0), np.zeros(0))
    if not kept:
        return np.zeros(0, np.int64), np.zeros((0, snap.vectors.shape[1]), np.float32), pairs
    return rows[np.asarray(kept)], np.concatenate(codes), pairs


def _plan_faiss(snap: Rows, post, old: Snapshot | None, requested: str | None, new_items, shards: int | None = None):
    """Choose the FAISS index for ``snap``; for IVF types with the same layout as ``old``,
    update the old index in place (remove + add, no retraining) instead of rebuilding it
    (→ (record, that index)); a sharded index is updated or built here (``_plan_sharded``);
    otherwise → (record, None) and ``store.write`` builds it."""
    from . import ann

    if requested is None:
        requested = old.meta.faiss.requested if old is not None else "auto"
    try:
        prev = old.meta.faiss if old is not None else None
        spec = ann.choose(requested, len(snap), post.dim, current=prev.type if prev is not None else None)
    except ValueError as e:
        raise SimsearchError(str(e)) from None
    spec.update(metric="inner_product", requested=requested)
    if spec["type"] == "sharded":
        return _plan_sharded(snap, post, old, spec, new_items, shards)
    if prev is not None and spec["type"] in ("ivf", "ivfpq") and prev.factory == spec["factory"]:
        import faiss

        assert old is not None and old.gen_dir is not None  # prev is old's record; old was read from disk
        index = faiss.read_index(str(old.gen_dir / "index.faiss"))  # writable copy, not the mmap
        stale, fresh = _id_changes(old, snap, new_items)
        if stale:
            # stub gap: faiss's Python wrapper also takes an id array (the stubs: only an IDSelector)
            index.remove_ids(np.array(sorted(stale), dtype=np.int64))  # type: ignore[arg-type]
        if fresh:
            rows = np.searchsorted(snap.ids, np.array(sorted(fresh), dtype=np.int64))
            index.add_with_ids(post.search_vectors(snap.vectors[rows], snap.ids[rows]), snap.ids[rows])
        ann.apply_params(index, prev.params)
        spec.update(params=prev.params, recall_at_10=prev.recall_at_10, recall_sample=prev.recall_sample)
        return configs.from_dict(FaissRecord, spec), index
    return configs.from_dict(FaissRecord, spec), None


def _id_changes(old: Snapshot, snap: Rows, new_items) -> tuple[set[int], set[int]]:
    """Ids whose vectors leave the index (removed or re-embedded) and ids whose vectors enter it
    (new or re-embedded), between ``old`` and ``snap``."""
    old_ids, new_ids = set(old.ids.tolist()), set(snap.ids.tolist())
    new_paths = {rel for rel, _ in new_items}
    updated = {e.id for e in snap.entries if e.path in new_paths and e.id in old_ids}
    return (old_ids - new_ids) | updated, (new_ids - old_ids) | updated


def _plan_sharded(snap: Rows, post, old: Snapshot | None, spec: dict, new_items, count: int | None):
    """A sharded index (``shards.py``). When ``old`` is one whose quantizer still fits, the update
    goes to its delta shard and tombstones (the main shards untouched), compacted when they outgrow
    ``shards.COMPACT_FRACTION`` of it or ``count`` asks for another number of main shards;
    otherwise it is built (``count`` main shards). Recall@10 is measured against exact search
    and ``nprobe`` tuned again either way. → (record, index)."""
    from . import ann
    from . import shards as shards_mod

    vecs = post.search_vectors(snap.vectors, snap.ids)
    prev = old.meta.faiss if old is not None else None
    if prev is not None and prev.type == "sharded" and shards_mod.reusable(prev.factory, spec["factory"]):
        assert old is not None and old.gen_dir is not None  # prev is old's record; old was read from disk
        spec["factory"] = prev.factory  # the quantizer is kept until a rebuild
        index = shards_mod.read(old.gen_dir)
        stale, fresh = _id_changes(old, snap, new_items)
        rows = np.searchsorted(snap.ids, np.array(sorted(fresh), dtype=np.int64))
        index = shards_mod.update(index, vecs[rows], snap.ids[rows], np.array(sorted(stale), dtype=np.int64))
        if shards_mod.needs_compaction(index) or (count and count != len(index.main)):
            index = shards_mod.compact(index, count, writable=shards_mod.reopen_writable(index))
    else:
        index = shards_mod.build(vecs, snap.ids, spec["factory"], shards=count)
    return configs.from_dict(FaissRecord, ann.tune(index, vecs, snap.ids, spec)), index


def _same_skips(old: list[dict], new: list[dict], only: bool) -> bool:
    if only:
        return not new
    key = lambda xs: sorted((x["path"], x["reason"]) for x in xs)  # noqa: E731
    return key(old) == key(new)


def _check_inside(files: list[Path], root_abs: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    inside = []
    for p in files:
        rel = os.path.relpath(Path(p).resolve(), root_abs)
        if rel.startswith(".."):
            raise SimsearchError(f"{p}: not inside the indexed folder {root_abs}")
        inside.append(Path(p))
    return inside, []


def remove(index_dir: str | os.PathLike, rel_paths: list[str], wait: bool = False) -> int:
    """Drop these manifest paths from the index; returns how many were present. The FAISS index
    follows as in an update (``_plan_faiss``): an IVF index drops the ids from a copy of itself
    (no retraining), a sharded one tombstones them (its main shards are linked, not rewritten),
    other types are rebuilt from the kept vectors."""
    index_dir = Path(index_dir)
    drop = set(rel_paths)
    with store.write_lock(index_dir, wait=wait):
        old = store.read(index_dir, load_faiss=False)
        keep = [i for i, e in enumerate(old.entries) if e.path not in drop]
        n = len(old) - len(keep)
        if n:
            rows = Rows(
                old.ids[keep],
                np.asarray(old.vectors[keep]),
                [old.entries[i] for i in keep],
                old.meta.next_id,
                None if old.recon is None else old.recon[keep],
            )
            faiss_record, faiss_index = _plan_faiss(rows, old.post, old, None, [])
            snap = Snapshot(
                meta=old.meta.with_(faiss=faiss_record),
                ids=rows.ids,
                vectors=rows.vectors,
                entries=rows.entries,
                skipped=old.skipped,
                post=old.post,
                recon=rows.recon,
            )
            snap._faiss = faiss_index
            store.write(index_dir, snap)
        return n


@dataclass
class Source:
    """Where the model comes from: the index's own, a user-supplied file, or one to train."""

    pre: Preprocess  # the model input the images are decoded to
    train: bool  # train a new one on the decoded images
    info: ModelRecord | None = None  # None when training
    model: Any = None  # the loaded model, when it already had to be loaded (--model)


def _choose_model(index_dir: Path, old: Snapshot | None, files, options: BuildOptions) -> Source:
    if options.model:
        from . import model as model_mod

        model, info = model_mod.load(options.model)
        size, channels = model.config.image_size, model.config.channels  # a model file does not record a fit
        pre = Preprocess(size, channels, options.fit) if options.fit else Preprocess(size, channels)
        return Source(pre, False, _model_info(model, info["sha256"], info["extra"], Path(options.model)), model)
    if old is not None and not options.retrain:
        # the index's own model: loaded (torch and all) only if something needs embedding
        path = store.model_path(index_dir, old.meta.model.sha256)
        if not path.exists():
            raise SimsearchError(f"{path}: the index's model is missing; rebuild with --retrain")
        return Source(Preprocess.from_dict(old.meta.preprocess), False, old.meta.model)
    if not files:
        raise SimsearchError("no images to train a model on")
    return Source(_input_for(files, options), True)


def _model_info(model, sha256: str, extra: dict, source: Path | None = None) -> ModelRecord:
    return ModelRecord(
        sha256=sha256,
        config=model.config.to_dict(),
        train=extra.get("train"),
        source=str(source) if source is not None else None,
    )


def _train(work: Path, pixels, pre, options: BuildOptions, progress, timer, report, log, budget=None):
    """Train on ``pixels``; checkpoints go to ``work`` (a re-run resumes). ``budget``: seconds of
    training instead of the config's ``time_budget`` (``training_budget``). → (model, trained-summary)."""
    from . import train as train_mod

    if len(pixels) < 2:
        raise SimsearchError(f"need at least 2 readable images to train a model, found {len(pixels)}")
    tcfg = options.train
    mcfg = _model_config(options, pre)
    work.mkdir(parents=True, exist_ok=True)
    log(f"training a {tcfg.objective} autoencoder on {len(pixels)} images ({pre.channels}×{pre.size}×{pre.size})")
    with timer("train"):
        res = train_mod.train(
            pixels, mcfg, tcfg, options.device, progress, checkpoint=work / "train.ckpt", time_budget=budget
        )
    if res.resumed_from:
        log(f"resumed training from epoch {res.resumed_from}")
    trained = {
        "epochs": res.epochs,
        "seconds": round(res.seconds, 1),
        "stopped_by": res.stopped_by,
        "precision": res.precision,
        "objective": tcfg.objective,
        "config": tcfg.to_dict(),
        "history": res.history[-3:],
    }
    if budget is not None:
        trained["time_budget"] = round(budget, 1)  # shortened for the build budget (``training_budget``)
    report.trained = {k: trained[k] for k in ("epochs", "seconds", "stopped_by", "objective", "precision")}
    return res.model, trained


def _model_config(options: BuildOptions, pre: Preprocess) -> ModelConfig:
    """The architecture a new model gets: the configured one, at the input ``pre`` makes."""
    try:
        return replace(
            options.architecture,
            image_size=pre.size,
            channels=pre.channels,
            variational=options.train.objective == "vae",
        )
    except ValueError as e:
        raise SimsearchError(str(e)) from None


def _save_model(model, trained: dict, index_dir: Path) -> ModelRecord:
    """Store a freshly trained model content-addressed under ``index_dir/models``; → model info."""
    from . import model as model_mod

    tmp = index_dir / "work" / "model.pt"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    sha = model_mod.save(model, tmp, extra={"train": trained})
    final = store.model_path(index_dir, sha)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    store.fsync_dir(final.parent)
    return _export_numpy(model, _model_info(model, sha, {"train": trained}), index_dir)


def _adopt_model(model, info: ModelRecord, source: Path, index_dir: Path) -> ModelRecord:
    """Copy a user-supplied model file (``--model``) into the index, so the index is self-contained."""
    final = store.model_path(index_dir, info.sha256)
    if not final.exists():
        store.atomic_write_bytes(final, source.read_bytes())
    return _export_numpy(model, info, index_dir)


def _export_numpy(model, info: ModelRecord, index_dir: Path) -> ModelRecord:
    """The encoder with BatchNorm folded, for torch-free cold queries (``numpy_encoder``)."""
    from .numpy_encoder import export

    data = export(model)
    store.atomic_write_bytes(store.numpy_model_path(index_dir, info.sha256), data)
    import hashlib

    return replace(info, numpy_sha256=hashlib.sha256(data).hexdigest())


def train_model(
    root: str | os.PathLike,
    out: str | os.PathLike,
    options: BuildOptions = BuildOptions(),
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """``simsearch train``: train a reusable model on the images under ``root`` and save it to ``out``."""
    from . import model as model_mod

    log = log or (lambda msg: None)
    out = Path(out)
    timer = _Timer()
    report = UpdateReport(index="", root=str(Path(root).resolve()))
    files, problems = discover(root)
    for p, r in problems:
        _log_skip(log, p, r)
    if not files:
        raise SimsearchError(f"{root}: no images found")
    pre = _input_for(files, options)
    pos = train_sample(len(files), options.train, image_bytes(pre))
    if len(pos) < len(files):
        log(f"training sample: {len(pos)} of {len(files)} images, uniformly drawn (seed {options.train.seed})")
    with timer("decode"):
        pixels, _good, _infos, bad = _decode([files[i] for i in pos], pre, options.workers, progress)
    for i, reason in bad:
        _log_skip(log, files[pos[i]], reason)
    work = out.parent / f".{out.name}.work"
    model, trained = _train(work, pixels, pre, options, progress, timer, report, log)
    sha = model_mod.save(model, out, extra={"train": trained})
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    assert report.trained is not None  # set by _train
    return {
        "path": str(out),
        "sha256": sha,
        "images": len(pixels),
        "skipped": len(problems) + len(bad),
        "input": f"{pre.channels}×{pre.size}×{pre.size}",
        **report.trained,
        "timings": timer.t,
    }


@dataclass
class Rows:
    """The new generation's rows, in id order (``assemble``)."""

    ids: np.ndarray  # (N,) int64, ascending
    vectors: np.ndarray  # (N, D) float32 raw codes
    entries: Sequence[Entry]  # a list, or a spill.SpillList
    next_id: int
    recon: np.ndarray | None = None  # (N, 3) reconstruction statistics (reconerror.COLUMNS), NaN where unknown

    def __len__(self) -> int:
        return len(self.ids)


def assemble(
    old: Snapshot | None,
    todo: Plan,
    changes: Changes,
    new_vecs: np.ndarray,
    report: UpdateReport,
    new_recon: np.ndarray | None = None,
    new_list: Callable[[spill.Codec], Any] | None = None,
) -> Rows:
    """The new generation's rows: kept and refreshed entries with their vectors (and reconstruction
    statistics: NaN for kept rows of an index that had none), then the new content with its codes
    and statistics (``new_recon``; None = NaN), in id order. A path that was indexed keeps its id
    (even with new content); a new path gets the next id; ids of removed files are never reused.
    ``new_list(codec)``: where the entries go (``Spill.list``; default a Python list)."""
    make = new_list or (lambda codec: [])
    dim = new_vecs.shape[1] if len(new_vecs) or old is None else old.vectors.shape[1]
    entries = make(ENTRY)
    vec_parts: list[np.ndarray] = []
    recon_parts: list[np.ndarray] = []
    next_id = old.meta.next_id if old is not None else 0
    old_rows = old.row_of_path() if old is not None else {}
    if old is not None and not todo.reembed:
        keep = set(todo.unchanged) | set(changes.refreshed)
        rows = sorted(old_rows[p] for p in keep)
        entries.extend(changes.refreshed.get(old.entries[r].path, old.entries[r]) for r in rows)
        if rows:
            vec_parts.append(np.asarray(old.vectors[rows], dtype=np.float32))
            recon_parts.append(old.recon[rows] if old.recon is not None else reconerror.unknown(len(rows)))
        report.unchanged = len(rows)
    for rel, info in changes.embed:
        prev = old_rows.get(rel)
        if prev is not None:  # same path, new content: keep its id
            assert old is not None  # old_rows is empty without it
            report.updated += 1
            eid = int(old.entries[prev].id)
        else:
            report.added += 1
            eid, next_id = next_id, next_id + 1
        entries.append(Entry(eid, rel, info.size, info.mtime_ns, info.sha256))
    if len(new_vecs):
        vec_parts.append(np.asarray(new_vecs, np.float32))
        recon_parts.append(
            reconerror.unknown(len(new_vecs)) if new_recon is None else np.asarray(new_recon, np.float32)
        )
    # one part (a first build, or a re-embedding) is used as it is: no second copy of the codes
    vectors = _joined(vec_parts, np.zeros((0, dim), np.float32))
    recon = _joined(recon_parts, reconerror.unknown(0))
    ids = np.fromiter((e.id for e in entries), np.int64, len(entries))
    order = np.argsort(ids, kind="stable")
    if np.all(order == np.arange(len(order))):  # a first build's entries are in id order already
        return Rows(ids, vectors, entries, next_id, recon)
    unsorted, entries = entries, make(ENTRY)
    entries.extend(unsorted[i] for i in order.tolist())
    return Rows(ids[order], vectors[order], entries, next_id, recon[order])


def _joined(parts: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else empty


def _meta(old, rows: Rows, model: ModelRecord, pre, root_abs: Path, todo: Plan, post, post_record, faiss):
    return IndexMeta(
        corpus_root=str(root_abs),
        preprocess=pre.to_dict(),
        model=model,
        embedding=EmbeddingRecord(dim=int(rows.vectors.shape[1]), views=todo.views),
        post=post_record,
        search=SearchRecord(dim=post.dim, diffusion=post.diffusion),
        faiss=faiss,
        next_id=rows.next_id,
        simsearch_version=__version__,
        created=old.meta.created if old is not None else "",
        migrations=old.meta.migrations if old is not None else [],
    )

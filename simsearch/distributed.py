"""Embedding on a Ray cluster: ``simsearch index DIR --ray [--ray-address ADDR]`` (the ``simsearch[ray]`` extra).

    todo files ──parts──▶ Ray Data: decode tasks ──▶ embedding actor pool ──▶ driver ──▶ parquet parts ──▶ Embedded

``ray_embed_files`` is the Ray twin of ``indexer.embed_files``: same arguments, same result. The files to
embed are cut into *parts* at content-defined boundaries (a file ends a part when a hash of its path says so,
so adding or removing a file changes only its own part). Each part is keyed by a hash of its files (path,
size, mtime), the old content hashes it is compared against, the model's sha256, the preprocessing, the
test-time views and the corruptions of the denoising error. A finished part is a parquet file (path, size,
mtime_ns, sha256, vector, reconstruction statistics (``reconerror.COLUMNS``), and which files were unchanged
or unreadable) written atomically under the index's work
directory; a re-run reads finished parts back instead of embedding them, so an interrupted run resumes, and
when every part is finished no cluster is needed at all. A batch that Ray gives up on (its decode task or
actor died past its retries, as a file that kills the decoder makes it) is left out of the dataset, and the
driver decodes and embeds its files itself, crash-isolated as the single-process path does (``_finish_here``).

Ray Data reads and decodes the files in parallel tasks (``decode.read_file`` and ``decode.load``, as the
single-process path decodes them) and a pool of actors embeds them with ``embed.embed`` (same views, same
eval-mode BatchNorm, so the vectors match the single-process ones). Each actor loads the model once, from
bytes put in Ray's object store by the driver: the model file need not be on a shared filesystem. The
image files are read by path on whichever node runs the decode task: every node must see the indexed folder
at the same path (a shared or replicated filesystem), and must have simsearch installed. Actors take one GPU
each when the cluster has GPUs, else one CPU. Training stays on the driver (``indexer``).

Ray, pyarrow and torch are imported lazily: ``simsearch --help`` and single-process indexing never load them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import configs, store
from .crashpoints import crash_point
from .errors import ImageError, SimsearchError, one_line, oserror_reason
from .indexer import Embedded, FileInfo, Found
from .preprocess import Preprocess
from .reconerror import COLUMNS
from .settings import TrainConfig

__all__ = ["PART_FILES", "Pool", "RunStats", "embed_parts", "parts_dir", "plan_pool", "ray_embed_files", "split_parts"]

PART_FILES = 2048  # expected files per part (parts end at content-defined boundaries)
PART_FORMAT = 2  # bump when what a part stores changes: old parts are then ignored (2: the denoising error)
DECODE_BATCH = 64  # files per decode task batch
DECODE_MEMORY = 256 * 2**20  # memory a decode task asks Ray for, besides its batch's pixels
DECODE_RETRIES = 2  # retries of a decode task whose worker died

Progress = Callable[..., None]
_log = logging.getLogger(__name__)

# the statuses a part records for each of its files
EMBEDDED, SAME, FAILED = "embedded", "same", "failed"


@dataclass
class RunStats:
    """What one ``embed_parts`` call did (for tests, benchmarks and the log)."""

    parts: int = 0  # parts the files fell into
    reused: int = 0  # parts read back from disk (finished by an earlier run)
    computed: int = 0  # parts computed on the cluster in this run
    embedded: int = 0  # files the actors embedded in this run
    local: int = 0  # files whose Ray batch died past its retries, finished (decoded, embedded) here instead
    nodes: set[str] = field(default_factory=set)  # node ids the decode tasks and actors ran on
    removed_stale: int = 0  # finished parts of earlier runs that no longer match, deleted


# ---------------------------------------------------------------- parts


def _boundary(rel: str, target: int) -> bool:
    """Does ``rel`` end a part? True for about one path in ``target``, by a hash of the path alone."""
    h = int.from_bytes(hashlib.blake2b(rel.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")
    return h % max(1, target) == 0


def split_parts(rels: list[str], target: int = PART_FILES) -> list[range]:
    """Cut a list of paths into consecutive parts of about ``target`` files at content-defined
    boundaries (a path ends a part when its hash says so; at most 4 × ``target`` files a part),
    so that adding or removing a file changes only the part it falls in."""
    parts, start = [], 0
    for i, rel in enumerate(rels):
        if _boundary(rel, target) or i + 1 - start >= 4 * target:
            parts.append(range(start, i + 1))
            start = i + 1
    if start < len(rels):
        parts.append(range(start, len(rels)))
    return parts


def part_key(
    files: list[Found], old_sha: dict[str, str], model_sha: str, pre: Preprocess, views, corruption: dict | None = None
) -> str:
    """A deterministic hash of what a part's result depends on: its files (path, size, mtime), the
    content hashes they are compared against, the model, the preprocessing, the test-time views and
    the denoising error's corruptions (``corruption``: a ``TrainConfig`` as a dict)."""
    h = hashlib.sha256()
    head = {
        "format": PART_FORMAT,
        "model": model_sha,
        "pre": pre.to_dict(),
        "views": [list(v) for v in views or []],
        "corruption": corruption or {},
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    for f in files:
        h.update(json.dumps([f.rel, f.size, f.mtime_ns, old_sha.get(f.rel, "")]).encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def parts_dir(model_path: Path) -> Path:
    """Where the parts of a run go: ``INDEX/work/ray-parts`` for a model stored in an index
    (``INDEX/models/<sha>.pt``, as ``indexer`` passes it), else ``ray-parts`` beside the model file."""
    model_path = Path(model_path)
    if model_path.parent.name == "models":
        return model_path.parent.parent / "work" / "ray-parts"
    return model_path.parent / f".{model_path.name}.ray-parts"


def _part_path(work: Path, key: str) -> Path:
    return work / f"part-{key[:40]}.parquet"


def _write_part(path: Path, files: list[Found], rows: dict[int, dict], start: int, dim: int) -> None:
    """Write one finished part (``rows``: position in todo → the row the actors returned) atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = [rows[start + k] for k in range(len(files))]
    vec = np.stack([r["vector"] for r in order]).astype(np.float32) if order else np.zeros((0, dim), np.float32)
    rec = np.stack([r["recon"] for r in order]).astype(np.float32) if order else np.zeros((0, len(COLUMNS)), np.float32)
    table = pa.table(
        {
            "rel": pa.array([os.fsencode(f.rel) for f in files], pa.binary()),  # names need not be UTF-8
            "status": pa.array([r["status"] for r in order], pa.string()),
            "reason": pa.array([r["reason"] for r in order], pa.string()),
            "size": pa.array([int(r["size"]) for r in order], pa.int64()),
            "mtime_ns": pa.array([int(r["mtime_ns"]) for r in order], pa.int64()),
            "sha256": pa.array([r["sha256"] for r in order], pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1), pa.float32()), dim),
            "recon": pa.FixedSizeListArray.from_arrays(pa.array(rec.reshape(-1), pa.float32()), len(COLUMNS)),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.atomic_write_bytes(path, buf.getvalue())


def _read_part(path: Path, files: list[Found], dim: int) -> dict | None:
    """A finished part as columns, or None when it is missing or does not describe ``files``
    (a damaged or foreign file is recomputed, never trusted)."""
    import pyarrow.parquet as pq

    if not path.exists():
        return None
    try:
        t = pq.read_table(path)
        cols = {name: t.column(name).to_pylist() for name in ("rel", "status", "reason", "size", "mtime_ns", "sha256")}
        vec = t.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        rec = t.column("recon").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    except Exception:
        return None
    n = len(files)
    k = len(COLUMNS)
    if cols["rel"] != [os.fsencode(f.rel) for f in files] or vec.size != n * dim or rec.size != n * k:
        return None
    cols["vector"] = vec.astype(np.float32).reshape(n, dim)
    cols["recon"] = rec.astype(np.float32).reshape(n, k)
    return cols


# ---------------------------------------------------------------- the Ray side (runs on the workers)


def decode_batch(batch: dict[str, np.ndarray], pre: dict) -> dict[str, np.ndarray]:
    """A Ray Data task: read and decode a batch of files (``path``, ``old``: the content hash an
    unchanged file has, or ''), as ``pool`` does it for the single-process path. → per file: status,
    reason, size, mtime_ns, sha256, and the model-input pixels (zeros unless status is 'embedded')."""
    from . import decode

    crash_point("ray-decode")
    p = Preprocess.from_dict(pre)
    n = len(batch["i"])
    pixels = np.zeros((n, p.channels, p.size, p.size), np.uint8)
    status, reason, sha = [], [], []
    size, mtime = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for k in range(n):
        path, old = os.fsdecode(bytes(batch["path"][k])), str(batch["old"][k])
        state, why, digest = FAILED, "", ""
        try:
            st = os.stat(path)  # before the read: a file changed meanwhile looks changed next time too
            data = decode.read_file(path)
            digest = hashlib.sha256(data).hexdigest()
            size[k], mtime[k] = len(data), st.st_mtime_ns
            if digest == old:
                state = SAME
            else:
                pixels[k] = decode.load(data, p, name=path)
                state = EMBEDDED
        except ImageError as e:
            why = e.reason
        except OSError as e:
            why = oserror_reason(e)
        status.append(state)
        reason.append(why)
        sha.append(digest)
    return {
        "i": np.asarray(batch["i"], np.int64),
        "status": np.array(status, dtype=object),
        "reason": np.array(reason, dtype=object),
        "size": size,
        "mtime_ns": mtime,
        "sha256": np.array(sha, dtype=object),
        "pixels": pixels,
        "node": np.array([_node_id()] * n, dtype=object),
    }


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class Embedder:
    """A Ray Data actor: loads the model once (from bytes in the object store, checked against its
    sha256) and embeds the batches that reach it with ``embed.embed`` (codes and reconstruction
    statistics, the denoising error with the ``corruption`` config, a ``TrainConfig`` as a dict)."""

    def __init__(
        self,
        model_ref: list,
        sha256: str,
        device: str,
        views,
        batch_size: int | None,
        threads: int,
        corruption: dict | None = None,
    ):
        import ray
        import torch

        from . import model as model_mod

        torch.set_num_threads(max(1, threads))
        data = ray.get(model_ref[0])
        with tempfile.TemporaryDirectory(prefix="simsearch-model-") as tmp:
            path = Path(tmp) / "model.pt"
            path.write_bytes(data)
            self.model, _ = model_mod.load(path, expected_sha256=sha256)
        self.device, self.views, self.batch_size = device, views, batch_size
        self.corruption = TrainConfig.from_dict(corruption or {})
        self.node = _node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from . import embed as embed_mod

        n = len(batch["i"])
        dim = int(self.model.config.latent_dim)
        vec, rec = np.zeros((n, dim), np.float32), np.zeros((n, len(COLUMNS)), np.float32)
        todo = np.flatnonzero(np.asarray(batch["status"]) == EMBEDDED)
        if len(todo):
            vec[todo], rec[todo] = embed_mod.embed(
                self.model,
                np.asarray(batch["pixels"])[todo],
                self.device,
                self.batch_size,
                views=self.views,
                recon=True,
                corruption=self.corruption,
            )
        out = {k: batch[k] for k in ("i", "status", "reason", "size", "mtime_ns", "sha256")}
        nodes = [f"{d}|{self.node}" for d in batch["node"]]  # decode node | embed node
        return {**out, "vector": vec, "recon": rec, "node": np.array(nodes, dtype=object)}


# ---------------------------------------------------------------- the driver


def _require() -> None:
    """A one-line error where the ``simsearch[ray]`` extra is not installed."""
    try:
        import pyarrow.parquet  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as e:
        raise SimsearchError(
            f"--ray needs the ray extra: pip install 'simsearch[ray]' ({one_line(str(e), 80)})"
        ) from None


def _connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (None: RAY_ADDRESS, else a local one); → whether it was started here."""
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kw["include_dashboard"] = False
    try:
        ray.init(address=address, **kw)
    except Exception as e:
        where = f"the Ray cluster at {address}" if address else "a Ray cluster"
        hint = ""
        if address and os.environ.get("RAY_AUTH_MODE", "disabled") == "disabled":
            # a head started by `ray start` (Ray 2.60) asks for a token, and says so only in its log lines
            hint = "; if the cluster uses token authentication, set RAY_AUTH_MODE=token (token: ~/.ray/auth_token)"
        raise SimsearchError(f"cannot connect to {where}: {one_line(str(e), 200)}{hint}") from None
    return True


@dataclass(frozen=True)
class Pool:
    """How a run uses the cluster (``plan_pool``)."""

    decode_cpus: float  # CPUs per decode task
    actor: dict  # Ray resources per embedding actor
    size: int  # the actor pool's largest size (it starts at one actor and grows as inputs queue up)
    device: str  # what the actors embed on


@dataclass
class _Job:
    """One run's fixed inputs and its results so far: what the steps of ``_run`` share."""

    todo: list[Found]  # the files, in input order
    ranges: list[range]  # each part's positions in ``todo``
    keys: list[str]  # each part's key (``part_key``): its file name under ``work``
    results: list[dict | None]  # each part's columns once finished (read back from its file), else None
    pre: Preprocess
    model_bytes: bytes
    model_sha: str
    views: list
    old_sha: dict[str, str]
    work: Path  # where finished parts are written
    dim: int  # the model's latent size
    corruption: dict  # the denoising error's corruptions (a TrainConfig as a dict)
    stats: RunStats

    def files(self, j: int) -> list[Found]:
        r = self.ranges[j]
        return self.todo[r.start : r.stop]

    def part_path(self, j: int) -> Path:
        return _part_path(self.work, self.keys[j])


def plan_pool(cpus: float, gpus: float, workers: int = 0, device: str = "auto") -> Pool:
    """The decode tasks' and embedding actors' resources on a cluster of ``cpus`` CPUs and ``gpus`` GPUs.

    One actor per GPU where the cluster has GPUs (unless ``device`` is cpu). Else CPU actors, as many as
    CPUs less one (room for the decode tasks). ``workers`` > 0 sets the pool's size instead. Where the
    actors would leave no CPU for the decode tasks, each gets a fraction of one (a 1-CPU cluster runs one
    actor and one decode task on half a CPU each)."""
    device = (device or "auto").split(":")[0]
    if device == "cuda" and gpus < 1:
        raise SimsearchError("--device cuda: the Ray cluster has no GPUs")
    if gpus >= 1 and device in ("auto", "cuda"):
        return Pool(1.0, {"num_gpus": 1, "num_cpus": 1}, workers or int(gpus), "cuda")
    decode_cpus = 1.0 if cpus >= 2 else cpus / 2
    size = workers or max(1, int(cpus) - 1)
    return Pool(decode_cpus, {"num_cpus": min(1.0, (cpus - decode_cpus) / size)}, size, "cpu")


def _crash_env() -> dict[str, str]:
    """The crash-test hook's settings (``crashpoints``), passed on to the Ray workers."""
    return {k: v for k, v in os.environ.items() if k in ("SIMSEARCH_CRASH_AT", "SIMSEARCH_CRASH_ONCE")}


def embed_parts(
    todo: list[Found],
    pre: Preprocess,
    model_path: Path,
    views: list,
    old_sha: dict[str, str],
    options,
    progress: Progress | None = None,
    work: Path | None = None,
    part_files: int = PART_FILES,
    corruption: TrainConfig | None = None,
) -> tuple[Embedded, RunStats]:
    """``ray_embed_files`` with its parts directory (``work``, default ``parts_dir(model_path)``) and
    part size as arguments; → (the result, what this run did)."""
    corrupt = configs.to_dict(corruption or TrainConfig())
    _require()
    model_path = Path(model_path)
    try:
        model_bytes = model_path.read_bytes()
    except OSError as e:
        raise SimsearchError(f"{model_path}: cannot read model file ({e.strerror or e})") from None
    model_sha = hashlib.sha256(model_bytes).hexdigest()
    work = Path(work) if work is not None else parts_dir(model_path)
    ranges = split_parts([f.rel for f in todo], part_files)
    keys = [part_key(todo[r.start : r.stop], old_sha, model_sha, pre, views, corrupt) for r in ranges]
    stats = RunStats(parts=len(ranges))
    dim = _latent_dim(model_bytes)

    results: list[dict | None] = [
        _read_part(_part_path(work, k), todo[r.start : r.stop], dim) for r, k in zip(ranges, keys)
    ]
    stats.reused = sum(r is not None for r in results)
    missing = [j for j, r in enumerate(results) if r is None]
    if missing:
        work.mkdir(parents=True, exist_ok=True)
        job = _Job(todo, ranges, keys, results, pre, model_bytes, model_sha, views, old_sha, work, dim, corrupt, stats)
        _run(job, missing, options, progress)
    stats.removed_stale = _remove_stale(work, {_part_path(work, k).name for k in keys})
    _log.info(
        "ray: %d part(s): %d finished by an earlier run, %d computed on %d node(s); %d file(s) embedded there,"
        " %d finished here after their batch failed there",
        stats.parts,
        stats.reused,
        stats.computed,
        len(stats.nodes),
        stats.embedded,
        stats.local,
    )
    return _gather(todo, ranges, results, dim), stats


def ray_embed_files(
    todo: list[Found],
    pre: Preprocess,
    model_path: Path,
    views: list,
    old_sha: dict[str, str],
    options,
    progress: Progress | None,
    *,
    corruption: TrainConfig | None = None,
) -> Embedded:
    """Decode and embed ``todo`` on a Ray cluster (``options.ray_address``; None = RAY_ADDRESS or a
    local one); the Ray twin of ``indexer.embed_files`` (``corruption`` as there). Finished parts are
    kept under the index's work directory (``parts_dir``) and a re-run reuses them;
    ``SIMSEARCH_RAY_PART_FILES`` sets the files per part (default ``PART_FILES``: smaller parts lose
    less to an interruption, and cost more files). See the module docstring."""
    part_files = int(os.environ.get("SIMSEARCH_RAY_PART_FILES") or PART_FILES)
    return embed_parts(
        todo, pre, model_path, views, old_sha, options, progress, part_files=part_files, corruption=corruption
    )[0]


def _latent_dim(model_bytes: bytes) -> int:
    import torch

    from .settings import ModelConfig

    ckpt = torch.load(io.BytesIO(model_bytes), map_location="cpu", weights_only=True)
    return int(ModelConfig.from_dict(ckpt["config"]).latent_dim)


def _run(job: _Job, missing: list[int], options, progress) -> None:
    """Compute the ``missing`` parts of ``job`` on the cluster; each is written as soon as all its files are back."""
    todo, ranges, pre, old_sha = job.todo, job.ranges, job.pre, job.old_sha
    started = _connect(getattr(options, "ray_address", None))
    import ray
    import ray.data

    try:
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # its plan and progress lines: we report progress
        # a batch whose task died past its retries (a file that kills the decoder …) is logged by Ray Data and
        # left out instead of failing the run; its files are finished here, crash-isolated (``_finish_here``)
        ray_state_log = logging.getLogger("ray.data._internal.execution.streaming_executor_state")
        ray_state_log.setLevel(logging.CRITICAL)  # its traceback per lost batch: _finish_here says it in one line
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.max_errored_blocks = -1
        part_of = np.full(len(todo), -1, np.int64)
        items = []
        for j in missing:
            r = ranges[j]
            part_of[r.start : r.stop] = j
            # paths as bytes: a file name need not be UTF-8, and Arrow strings must be
            items += [{"i": i, "path": os.fsencode(todo[i].path), "old": old_sha.get(todo[i].rel, "")} for i in r]
        total = len(items)
        res = ray.cluster_resources()
        pool = plan_pool(res.get("CPU", 1), res.get("GPU", 0), int(options.workers or 0), options.device)
        env = _crash_env()
        extra: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
        model_ref = ray.put(job.model_bytes)
        blocks = max(1, min(len(items) // DECODE_BATCH, 512))
        ds: Any = ray.data.from_items(items, override_num_blocks=blocks)  # a Dataset through each stage
        with warnings.catch_warnings():
            # max_retries has no named parameter in Ray 2.60 (it warns that ray_remote_args are deprecated)
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ds.map_batches(
                decode_batch,
                fn_kwargs={"pre": pre.to_dict()},
                batch_size=DECODE_BATCH,
                batch_format="numpy",
                num_cpus=pool.decode_cpus,
                # a task's working set: one file's bytes and decoder state, and the batch's pixels. Asking
                # for it also keeps decoding in its own tasks: Ray Data fuses a task stage into the next
                # actor stage only when their resource requests agree, and the (GPU) actors are not to decode.
                memory=DECODE_MEMORY + DECODE_BATCH * pre.channels * pre.size**2,
                # a worker that dies is retried, but not forever (Ray Data's default): a batch with a file
                # that crashes the decoder is given up after that, and its files are finished by the driver
                max_retries=DECODE_RETRIES,
                **extra,
            )
        bs = options.embed_batch and max(int(options.embed_batch), 1)
        ds = ds.map_batches(
            Embedder,
            fn_constructor_kwargs={
                "model_ref": [model_ref],
                "sha256": job.model_sha,
                "device": pool.device,
                "views": job.views,
                "batch_size": bs,
                "threads": max(1, int(pool.actor.get("num_cpus", 1))),
                "corruption": job.corruption,
            },
            batch_size=max(DECODE_BATCH, bs or (2048 if pool.device == "cuda" else 256)),  # rows per actor call
            batch_format="numpy",
            # Ray Data restarts a dead actor and retries its batch (max_restarts=-1, max_task_retries=-1)
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, pool.size)),
            **pool.actor,
            **extra,
        )
        pending: dict[int, dict[int, dict]] = {j: {} for j in missing}
        try:
            _collect(job, ds, part_of, pending, progress, total)
        except SimsearchError:
            raise
        except Exception as e:  # a task failed past its retries, the cluster went away …
            kept = sum(r is not None for r in job.results)
            raise SimsearchError(
                f"the Ray run failed ({one_line(_root_cause(e), 200)}); {kept} finished part(s) are kept"
                f" in {job.work}: run the command again to resume"
            ) from None
        if pending:
            job.stats.local = _finish_here(job, part_of, pending)
            for j in sorted(pending):
                _write_if_complete(job, j, pending)
        if pending:
            raise SimsearchError(f"the Ray run ended with {len(pending)} part(s) incomplete; run it again to resume")
    finally:
        if started:
            ray.shutdown()


def _finish_here(job: _Job, part_of: np.ndarray, pending: dict[int, dict[int, dict]]) -> int:
    """The files of batches that Ray gave up on (their decode task or actor died past its retries: a
    file that kills the decoder, a node that keeps failing), decoded and embedded on this machine the way
    the single-process indexer does it (``indexer.embed_files``): decoding in worker processes, so that a
    file that kills its decoder is reported as skipped ("decoder crashed") and the rest are embedded.
    Their rows go into ``pending``; → how many files."""
    from . import indexer
    from .indexer import BuildOptions

    todo = job.todo
    lost = [i for j in sorted(pending) for i in job.ranges[j] if i not in pending[j]]
    if not lost:
        return 0
    _log.warning(
        "ray: %d file(s) in batches that failed on the cluster past their retries: decoding and embedding them here",
        len(lost),
    )
    with tempfile.TemporaryDirectory(prefix="simsearch-model-") as tmp:
        path = Path(tmp) / "model.pt"
        path.write_bytes(job.model_bytes)
        files = [todo[i] for i in lost]  # denoising error with the corruptions the actors use
        corruption = TrainConfig.from_dict(job.corruption)
        emb = indexer.embed_files(
            files, job.pre, path, job.views, job.old_sha, BuildOptions(), None, corruption=corruption
        )
    at = {todo[i].rel: i for i in lost}
    no_vector, no_recon = np.zeros(job.dim, np.float32), np.zeros(len(COLUMNS), np.float32)

    def put(f: Found, status: str, reason: str, info: FileInfo | None, vector, recon) -> None:
        i = at[f.rel]
        size, mtime, sha = (info.size, info.mtime_ns, info.sha256) if info is not None else (0, 0, "")
        row = {"status": status, "reason": reason, "size": size, "mtime_ns": mtime, "sha256": sha}
        pending[int(part_of[i])][i] = {**row, "vector": vector, "recon": recon}

    for k, (f, info) in enumerate(emb.done):
        put(f, EMBEDDED, "", info, emb.codes[k], emb.recon[k])
    for f, info in emb.same:
        put(f, SAME, "", info, no_vector, no_recon)
    for f, reason in emb.failed:
        put(f, FAILED, reason, None, no_vector, no_recon)
    return len(lost)


def _root_cause(e: BaseException) -> str:
    """What a Ray failure says: the first error in its chain that says anything (Ray Data adds an empty
    SystemException beneath a worker's crash), as its type and first line."""
    seen: BaseException | None = e
    while seen is not None:
        text = str(seen).strip().splitlines()
        if text:
            return f"{type(seen).__name__}: {text[0]}"
        seen = seen.__cause__ if seen.__cause__ is not seen else None
    return type(e).__name__


def _collect(job: _Job, ds, part_of: np.ndarray, pending: dict[int, dict[int, dict]], progress, total: int) -> None:
    """Gather the actors' rows into their parts; write each part as soon as all its files are back."""
    done = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for k, i in enumerate(np.asarray(batch["i"]).tolist()):
            j = int(part_of[i])
            pending[j][i] = {
                name: batch[name][k] for name in ("status", "reason", "size", "mtime_ns", "sha256", "vector", "recon")
            }
            job.stats.nodes.update(str(batch["node"][k]).split("|"))
            if batch["status"][k] == EMBEDDED:
                job.stats.embedded += 1
            _write_if_complete(job, j, pending)
        done += len(batch["i"])
        if progress:
            progress("embed", done, total)


def _write_if_complete(job: _Job, j: int, pending: dict[int, dict[int, dict]]) -> None:
    """Part ``j`` has every file's row: write it (atomically), read it back into ``job.results``."""
    if len(pending[j]) < len(job.ranges[j]):
        return
    _write_part(job.part_path(j), job.files(j), pending.pop(j), job.ranges[j].start, job.dim)
    job.results[j] = _read_part(job.part_path(j), job.files(j), job.dim)
    job.stats.computed += 1
    crash_point("ray-part")


def _remove_stale(work: Path, keep: set[str]) -> int:
    """Delete finished parts that no part of this run uses (files since changed, another model …)."""
    n = 0
    if work.is_dir():
        for p in work.glob("part-*.parquet"):
            if p.name not in keep:
                p.unlink(missing_ok=True)
                n += 1
    return n


def _gather(todo: list[Found], ranges: list[range], results: list, dim: int) -> Embedded:
    """All parts' rows, in input order, as ``Embedded``."""
    done: list[tuple[Found, FileInfo]] = []
    same: list[tuple[Found, FileInfo]] = []
    failed: list[tuple[Found, str]] = []
    codes, recon = [], []
    for r, cols in zip(ranges, results):
        assert cols is not None
        for k, i in enumerate(r):
            status = cols["status"][k]
            if status == FAILED:
                failed.append((todo[i], cols["reason"][k]))
                continue
            info = FileInfo(int(cols["size"][k]), int(cols["mtime_ns"][k]), cols["sha256"][k])
            if status == SAME:
                same.append((todo[i], info))
            else:
                done.append((todo[i], info))
                codes.append(cols["vector"][k])
                recon.append(cols["recon"][k])
    return Embedded(
        done=done,
        codes=np.stack(codes).astype(np.float32) if codes else np.zeros((0, dim), np.float32),
        recon=np.stack(recon).astype(np.float32) if recon else np.zeros((0, len(COLUMNS)), np.float32),
        same=same,
        failed=failed,
    )

"""Building and updating an index: files → decode → (train) → embed → store.

``update()`` is the one entry point; a first run is an update of nothing.
It diffs the folder against the manifest (size + mtime, confirmed by content
hash), decodes only new and changed files, trains a model only when the
index has none (or ``retrain``), embeds, and commits a new generation
atomically under the writer lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import __version__, store
from .discover import discover
from .errors import SimsearchError
from .formats import IMAGE_EXTENSIONS
from .pool import decode_files
from .preprocess import Preprocess, preprocess, probe
from .store import Entry, Snapshot
from .views import tta_views_for

Progress = Callable[..., None]


@dataclass(frozen=True)
class BuildOptions:
    """What ``simsearch index`` / ``Index.build`` may be told; None = choose from the corpus."""

    objective: str | None = None  # None = TrainConfig default
    dim: int = 128
    size: int | None = None  # model input side; None = probe the corpus
    channels: int | None = None  # 1 or 3; None = probe the corpus
    fit: str | None = None  # how a non-square image becomes square (preprocess.FITS); None = the default
    width: int | None = None
    depth: int | None = None
    max_epochs: int | None = None
    time_budget: float | None = None  # seconds of training
    batch_size: int | None = None
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # decode processes; 0 = one per core
    model: str | None = None  # use this saved model instead of training
    retrain: bool = False  # train a new model even if the index has one
    rebuild: bool = False  # ignore the existing index entirely (fresh build)
    wait: bool = False  # wait for another writer instead of failing
    index_type: str | None = None  # auto | flat | ivf | hnsw | ivfpq; None = keep the index's (auto at first)
    post: object = None  # postprocess.PostConfig; None = the default (whitening + diffusion)
    tta: bool | None = None  # embed as the mean over 5 shifted views; None = keep the index's (on at first)
    train: dict | None = None  # further TrainConfig fields (e.g. {"invariance": 0.5}); research and ablations


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


def relpath(path: Path, root: Path) -> str:
    rel = os.path.relpath(path, root) if root.is_dir() else path.name
    return Path(rel).as_posix()


def relpaths(files: list[Path], root: Path, root_abs: Path) -> list[str]:
    """Paths relative to the indexed folder. ``discover`` returns ``root/…``, so a string
    prefix cut does it (os.path.relpath on 60k paths costs seconds); anything else falls back."""
    prefix = os.fspath(root) + "/"
    out = []
    for p in files:
        s = os.fspath(p)
        out.append(s[len(prefix) :] if s.startswith(prefix) and os.sep == "/" else relpath(p, root_abs))
    return out


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
    good, infos, problems = [], {}, []
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
    """
    root = Path(root)
    index_dir = Path(index_dir) if index_dir else store.default_index_path()
    log = log or (lambda msg: None)
    timer = _Timer()
    with store.write_lock(index_dir, wait=options.wait):
        root_abs = root.resolve() if root.is_dir() else root.resolve().parent
        only = files is not None
        with timer("discover"):
            if only:
                files, problems = _check_inside(files, root_abs)
            else:
                files, problems = discover(root)
        old: Snapshot | None = None
        if store.exists(index_dir) and not options.rebuild:
            old = store.read(index_dir, load_faiss=False)
            old_root = old.meta.get("corpus_root")
            if old_root and Path(old_root) != root_abs:
                raise SimsearchError(
                    f"{index_dir}: index was built from {old_root}, not {root_abs}; "
                    "use another --index or pass --rebuild to replace it"
                )
        report = UpdateReport(index=str(index_dir), root=str(root_abs))
        report.skipped = [{"path": relpath(p, root_abs), "reason": r} for p, r in problems]
        for s in report.skipped:
            log(f"skipped {s['path']}: {s['reason']}")
        if not files and old is None:
            raise SimsearchError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS)[:8])}, …)")

        model, model_info, pre, need_train, reembed_all = _choose_model(index_dir, old, files, options, log)
        views, tta_changed = _tta_views(old, pre, options, need_train or reembed_all)
        if tta_changed:
            log("test-time views changed: re-embedding every image")
            reembed_all = True

        # ---- diff the folder against the manifest
        by_path = {e.path: e for e in old.entries} if old is not None else {}
        rels = relpaths(files, root, root_abs)
        todo, keep_rows, seen = [], [], set()
        for p, rel in zip(files, rels):
            seen.add(rel)
            e = by_path.get(rel)
            if e is not None and not reembed_all:
                try:
                    st = os.stat(p)
                except OSError:
                    st = None
                if st is not None and st.st_size == e.size and st.st_mtime_ns == e.mtime_ns:
                    keep_rows.append(rel)
                    continue
            todo.append((p, rel))
        removed = [] if old is None or only else [e for e in old.entries if e.path not in seen]
        if only:
            keep_rows += [e.path for e in old.entries if e.path not in seen] if old is not None else []

        # ---- decode what is new or changed
        with timer("decode"):
            pixels, good, infos, bad = _decode([p for p, _ in todo], pre, options.workers, progress)
        for i, reason in bad:
            rel = todo[i][1]
            report.skipped.append({"path": rel, "reason": reason})
            log(f"skipped {rel}: {reason}")
        # a changed mtime with identical content is not an update: keep the vector, refresh the stat
        refreshed: dict[str, Entry] = {}
        new_items: list[tuple[str, dict, int]] = []  # (rel, info, row in pixels)
        for row, i in enumerate(good):
            rel, info = todo[i][1], infos[i]
            e = by_path.get(rel)
            if e is not None and not reembed_all and e.sha256 == info["sha256"]:
                refreshed[rel] = replace(e, size=info["size"], mtime_ns=info["mtime_ns"])
            else:
                new_items.append((rel, info, row))
        # a file that was indexed but now fails to decode is dropped (and reported as skipped)
        failed_rels = {todo[i][1] for i, _ in bad}

        # ---- train
        if need_train:
            model, trained = _train(index_dir / "work", pixels, pre, options, progress, timer, report, log)
            model_info = _save_model(model, trained, index_dir)
        elif options.model and (old is None or old.meta["model"]["sha256"] != model_info["sha256"]):
            model_info = _adopt_model(model, model_info, Path(options.model), index_dir)

        # ---- embed (torch is imported only now, and only if there is something to embed)
        with timer("embed"):
            rows = np.array([r for _, _, r in new_items], dtype=np.int64)
            if len(rows):
                from . import embed as embed_mod
                from . import model as model_mod

                if model is None:
                    sha = model_info["sha256"]
                    model, _ = model_mod.load(store.model_path(index_dir, sha), expected_sha256=sha)
                bs = options.batch_size and max(options.batch_size, 1)
                new_vecs = embed_mod.embed(model, pixels[rows], options.device, bs, progress, views)
            else:
                new_vecs = np.zeros((0, model_info["config"]["latent_dim"] if model_info else options.dim), np.float32)

        lost = [e for e in (old.entries if old is not None else []) if e.path in failed_rels]
        report.removed = len(removed) + len(lost)
        nothing_changed = (
            old is not None
            and not need_train
            and not reembed_all
            and not new_items
            and not refreshed
            and not report.removed
            and _same_skips(old.skipped, report.skipped, only)
            and options.index_type in (None, old.meta["faiss"].get("requested"))
        )
        if nothing_changed:  # an unchanged folder writes nothing
            report.unchanged, report.total, report.timings = len(old), len(old), timer.t
            return report

        # ---- assemble the new snapshot
        snap = _assemble(old, reembed_all, keep_rows, refreshed, new_items, new_vecs, failed_rels, removed, report)
        snap.meta = _meta(old, snap, model_info, pre, root_abs, reembed_all, need_train)
        snap.meta["embedding"]["views"] = views
        # ---- post-processing: fitted with the model, kept across incremental updates
        with timer("fit"):
            if need_train or reembed_all or old is None or "post" not in old.meta:
                if model is None and len(snap):
                    from . import model as model_mod

                    sha = model_info["sha256"]
                    model, _ = model_mod.load(store.model_path(index_dir, sha), expected_sha256=sha)
                _fit_post(snap, index_dir, options, log, calibration=(root_abs, pre, model, views))
            else:
                snap.post, snap.meta["post"] = old.post, old.meta["post"]
            snap.meta["search"] = {"dim": snap.post.dim, "diffusion": snap.post.diffusion}
        with timer("write"):
            carried = [x for x in old.skipped if x["path"] not in seen] if only and old is not None else []
            snap.skipped = carried + report.skipped
            fresh_vectors = need_train or reembed_all
            _plan_faiss(snap, old if not fresh_vectors else None, options.index_type, new_items)
            store.write(index_dir, snap)
        (index_dir / "work" / "train.ckpt").unlink(missing_ok=True)  # committed: no resume needed
        report.faiss = snap.meta["faiss"]
        report.total = len(snap)
        report.timings = timer.t
        return report


def _fit_post(snap: Snapshot, index_dir: Path, options: BuildOptions, log, calibration=None) -> None:
    """Fit the post-processing on the gallery and calibrate its near-copy threshold
    (``calibration``: (corpus root, preprocess, model, views) to make and embed the copies)."""
    from . import postprocess

    cfg = options.post or postprocess.PostConfig()
    post = postprocess.fit(snap.vectors, snap.ids, cfg, log)
    record = None
    if calibration is not None and cfg.copies and len(snap) >= 2:
        originals, copy_raw = _copy_codes(snap, *calibration, options)
        keys = np.array([e.sha256 for e in snap.entries])
        record = postprocess.calibrate(post, snap.vectors, keys, originals, copy_raw)
        if record.get("placement"):
            log(f"near-copy threshold {record['threshold']} (base cosine; from {record['copies']} transformed copies)")
        elif record["copies"]:
            log(
                f"near-copy placement off: {record['copies']} transformed copies are no closer to their originals"
                " than images are to their nearest neighbours"
            )
    data = post.to_bytes()
    sha = postprocess.digest(data)
    path = store.post_path(index_dir, sha)
    if not path.exists():
        store.atomic_write_bytes(path, data)
    snap.post = post
    snap.meta["post"] = {
        "sha256": sha,
        "config": cfg.to_dict(),
        "diffusion": post.diffusion,
        "whitened": post.whitener is not None,
        "anchors": 0 if post.anchor_ids is None else int(len(post.anchor_ids)),
        "copies": record,
    }


COPY_SAMPLE = 200  # gallery images copied to calibrate the near-copy threshold


def _copy_codes(
    snap: Snapshot,
    root: Path,
    pre: Preprocess,
    model,
    views,
    options: BuildOptions,
    n: int = COPY_SAMPLE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw codes of transformed copies (``copies.make_copy``, default strength) of a deterministic
    sample of gallery images; → (their gallery rows, the copies' codes). Unreadable files are left out."""
    from . import copies
    from . import embed as embed_mod

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(snap), size=min(n, len(snap)), replace=False))
    side = max(256, 4 * pre.size)  # copies made from an original reduced to 4× the model input: fast enough
    kept, made = copies.copies_of([root / snap.entries[r].path for r in rows], snap.ids[rows], max_side=side)
    if not made:
        return np.zeros(0, np.int64), np.zeros((0, snap.vectors.shape[1]), np.float32)
    pixels = np.stack([preprocess(img, pre) for img in made])
    return rows[kept], embed_mod.embed(model, pixels, options.device, views=views)


def _plan_faiss(snap: Snapshot, old: Snapshot | None, requested: str | None, new_items) -> None:
    """Choose the FAISS index for ``snap``; for IVF types with the same layout as ``old``,
    update the old index in place (remove + add, no retraining) instead of rebuilding it."""
    from . import ann

    if requested is None:
        requested = (old.meta["faiss"].get("requested") if old is not None else None) or "auto"
    try:
        spec = ann.choose(requested, len(snap), snap.post.dim)
    except ValueError as e:
        raise SimsearchError(str(e)) from None
    spec.update(metric="inner_product", requested=requested)
    prev = old.meta["faiss"] if old is not None else {}
    if old is not None and spec["type"] in ("ivf", "ivfpq") and prev.get("factory") == spec["factory"]:
        import faiss

        index = faiss.read_index(str(old.gen_dir / "index.faiss"))  # writable copy, not the mmap
        old_ids, new_ids = set(old.ids.tolist()), set(snap.ids.tolist())
        new_paths = {rel for rel, _, _ in new_items}
        updated = {e.id for e in snap.entries if e.path in new_paths and e.id in old_ids}
        stale = (old_ids - new_ids) | updated  # vectors to drop
        fresh = (new_ids - old_ids) | updated  # vectors to add
        if stale:
            index.remove_ids(np.array(sorted(stale), dtype=np.int64))
        if fresh:
            rows = snap.rows_of(np.array(sorted(fresh), dtype=np.int64))
            index.add_with_ids(snap.search_vectors(rows), snap.ids[rows])
        ann.apply_params(index, prev.get("params", {}))
        spec.update(
            params=prev.get("params", {}),
            recall_at_10=prev.get("recall_at_10"),
            recall_sample=prev.get("recall_sample"),
        )
        snap._faiss = index
    snap.meta["faiss"] = spec


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
    """Drop these manifest paths from the index; returns how many were present."""
    index_dir = Path(index_dir)
    drop = set(rel_paths)
    with store.write_lock(index_dir, wait=wait):
        old = store.read(index_dir, load_faiss=False)
        keep = [i for i, e in enumerate(old.entries) if e.path not in drop]
        n = len(old) - len(keep)
        if n:
            snap = Snapshot(
                meta=old.meta,
                ids=old.ids[keep],
                vectors=np.asarray(old.vectors[keep]),
                entries=[old.entries[i] for i in keep],
                skipped=old.skipped,
                post=old.post,
            )
            store.write(index_dir, snap)
        return n


def _choose_model(index_dir: Path, old: Snapshot | None, files, options: BuildOptions, log):
    """→ (model or None, model_info or None, preprocess, need_train, reembed_all)."""
    if options.model:
        from . import model as model_mod

        model, info = model_mod.load(options.model)
        pre = Preprocess(model.config.image_size, model.config.channels)
        reembed = old is not None and old.meta["model"]["sha256"] != info["sha256"]
        if reembed:
            log(f"model {info['sha256'][:12]} differs from the index's model: re-embedding every image")
        return (
            model,
            _model_info(model, info["sha256"], info["extra"], Path(options.model)),
            pre,
            False,
            reembed or old is None,
        )
    if old is not None and not options.retrain:
        # the index's own model: loaded (torch and all) only if something needs embedding
        sha = old.meta["model"]["sha256"]
        if not store.model_path(index_dir, sha).exists():
            raise SimsearchError(
                f"{store.model_path(index_dir, sha)}: the index's model is missing; rebuild with --retrain"
            )
        pre = Preprocess.from_dict(old.meta["preprocess"])
        return None, old.meta["model"], pre, False, False
    if not files:
        raise SimsearchError("no images to train a model on")
    probed = probe(files)
    pre = Preprocess(options.size or probed.size, options.channels or probed.channels, options.fit or probed.fit)
    return None, None, pre, True, True


def _tta_views(old: Snapshot | None, pre, options: BuildOptions, fresh: bool) -> tuple[list, bool]:
    """→ (test-time views for this build, whether they differ from the index's).

    A new or fully re-embedded index follows ``options.tta`` (default on); an existing index
    keeps its setting (indexes from before test-time views have none) unless told otherwise."""
    wanted = tta_views_for(pre.size) if options.tta is not False else []
    if old is None or fresh:
        return wanted, False
    have = list(old.meta.get("embedding", {}).get("views", []))
    if options.tta is None or bool(wanted) == bool(have):
        return have, False
    return wanted, True


def _model_info(model, sha256: str, extra: dict, source: Path | None = None) -> dict:
    info = {"sha256": sha256, "config": model.config.to_dict(), "train": extra.get("train")}
    if source is not None:
        info["source"] = str(source)
    return info


def _train(work: Path, pixels, pre, options: BuildOptions, progress, timer, report, log):
    """Train on ``pixels``; checkpoints go to ``work`` (a re-run resumes). → (model, trained-summary)."""
    from . import train as train_mod

    if len(pixels) < 2:
        raise SimsearchError(f"need at least 2 readable images to train a model, found {len(pixels)}")
    tkw = {
        k: v
        for k, v in dict(
            objective=options.objective,
            max_epochs=options.max_epochs,
            time_budget=options.time_budget,
            batch_size=options.batch_size,
            seed=options.seed,
        ).items()
        if v is not None
    }
    tkw.update(options.train or {})
    try:
        tcfg = train_mod.TrainConfig(**tkw)
        mkw = {k: v for k, v in dict(width=options.width, depth=options.depth).items() if v is not None}
        mcfg = train_mod.model_config_for(
            tcfg.objective, image_size=pre.size, channels=pre.channels, latent_dim=options.dim, **mkw
        )
    except ValueError as e:
        raise SimsearchError(str(e)) from None
    work.mkdir(parents=True, exist_ok=True)
    log(f"training a {tcfg.objective} autoencoder on {len(pixels)} images ({pre.channels}×{pre.size}×{pre.size})")
    with timer("train"):
        res = train_mod.train(pixels, mcfg, tcfg, options.device, progress, checkpoint=work / "train.ckpt")
    if res.resumed_from:
        log(f"resumed training from epoch {res.resumed_from}")
    trained = {
        "epochs": res.epochs,
        "seconds": round(res.seconds, 1),
        "stopped_by": res.stopped_by,
        "objective": tcfg.objective,
        "config": tcfg.to_dict(),
        "history": res.history[-3:],
    }
    report.trained = {k: trained[k] for k in ("epochs", "seconds", "stopped_by", "objective")}
    return res.model, trained


def _save_model(model, trained: dict, index_dir: Path) -> dict:
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


def _adopt_model(model, info: dict, source: Path, index_dir: Path) -> dict:
    """Copy a user-supplied model file (``--model``) into the index, so the index is self-contained."""
    final = store.model_path(index_dir, info["sha256"])
    if not final.exists():
        store.atomic_write_bytes(final, source.read_bytes())
    return _export_numpy(model, info, index_dir)


def _export_numpy(model, info: dict, index_dir: Path) -> dict:
    """The encoder with BatchNorm folded, for torch-free cold queries (``numpy_encoder``)."""
    from .numpy_encoder import export

    data = export(model)
    store.atomic_write_bytes(store.model_path(index_dir, info["sha256"]).with_suffix(".npz"), data)
    import hashlib

    return {**info, "numpy_sha256": hashlib.sha256(data).hexdigest()}


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
        log(f"skipped {p}: {r}")
    if not files:
        raise SimsearchError(f"{root}: no images found")
    probed = probe(files)
    pre = Preprocess(options.size or probed.size, options.channels or probed.channels, options.fit or probed.fit)
    with timer("decode"):
        pixels, _good, _infos, bad = _decode(files, pre, options.workers, progress)
    for i, reason in bad:
        log(f"skipped {files[i]}: {reason}")
    work = out.parent / f".{out.name}.work"
    model, trained = _train(work, pixels, pre, options, progress, timer, report, log)
    sha = model_mod.save(model, out, extra={"train": trained})
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return {
        "path": str(out),
        "sha256": sha,
        "images": len(pixels),
        "skipped": len(problems) + len(bad),
        "input": f"{pre.channels}×{pre.size}×{pre.size}",
        **report.trained,
        "timings": timer.t,
    }


def _assemble(old, reembed_all, keep_rows, refreshed, new_items, new_vecs, failed_rels, removed, report) -> Snapshot:
    dim = new_vecs.shape[1] if len(new_vecs) or old is None else old.vectors.shape[1]
    entries: list[Entry] = []
    vec_parts: list[np.ndarray] = []
    next_id = int(old.meta.get("next_id", int(old.ids.max()) + 1 if len(old.ids) else 0)) if old is not None else 0
    old_rows = old.row_of_path() if old is not None else {}
    if old is not None and not reembed_all:
        keep = set(keep_rows) | set(refreshed)
        rows = [old_rows[p] for p in sorted(keep, key=old_rows.get)]
        for r in rows:
            e = old.entries[r]
            entries.append(refreshed.get(e.path, e))
        if rows:
            vec_parts.append(np.asarray(old.vectors[rows], dtype=np.float32))
        report.unchanged = len(rows)
    for rel, info, _row in new_items:
        prev = old_rows.get(rel)
        if prev is not None:  # same path, new content: keep its id
            report.updated += 1
            eid = old.entries[prev].id
        else:
            report.added += 1
            eid = next_id
            next_id += 1
        entries.append(Entry(eid, rel, info["size"], info["mtime_ns"], info["sha256"]))
    if len(new_vecs):
        vec_parts.append(new_vecs.astype(np.float32))
    vectors = np.concatenate(vec_parts) if vec_parts else np.zeros((0, dim), np.float32)
    ids = np.array([e.id for e in entries], dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    snap = Snapshot(
        meta={"next_id": next_id}, ids=ids[order], vectors=vectors[order], entries=[entries[i] for i in order]
    )
    snap.meta["next_id"] = next_id
    return snap


def _meta(old, snap, model_info, pre, root_abs: Path, reembed_all: bool, trained: bool) -> dict:
    meta = dict(old.meta) if old is not None and not trained else {}
    if old is not None:
        meta.setdefault("created", old.meta.get("created"))
    meta.update(
        {
            "format_version": store.FORMAT_VERSION,
            "simsearch_version": __version__,
            "corpus_root": str(root_abs),
            "metric": "cosine",
            "preprocess": pre.to_dict(),
            "model": model_info,
            "next_id": snap.meta["next_id"],
        }
    )
    emb = dict(meta.get("embedding", {})) if not (trained or reembed_all) else {}
    emb.update({"dim": int(snap.vectors.shape[1])})
    meta["embedding"] = emb
    return {k: v for k, v in meta.items() if v is not None}

"""``simsearch verify``: check an index end to end and list every problem found.

Checks, in order: the live generation and its format; every file's size and
sha256 against meta.json; ids ↔ vectors ↔ manifest ↔ FAISS (counts, ids,
dimensions); the model file's hash; that the indexed image files still exist
unchanged; and leftovers of interrupted writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import store
from .errors import SimsearchError, rebuild_hint


@dataclass
class Problem:
    where: str
    what: str
    severity: str = "error"  # "error": the index is damaged; "warning": the corpus drifted / leftovers

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.what}"


def verify(index_dir: str | os.PathLike, check_files: bool = True) -> tuple[dict, list[Problem]]:
    """→ (summary, problems). Raises only when there is no index at all."""
    index_dir = Path(index_dir)
    problems: list[Problem] = []
    summary: dict = {"index": str(index_dir)}
    try:
        gen = store.current_generation(index_dir)
        meta = store.read_meta(index_dir, gen)  # this generation's meta (not a newer one's)
    except SimsearchError as e:
        if isinstance(e, store.IndexNotFoundError):
            raise
        return summary, [Problem(str(index_dir), str(e))]
    assert gen is not None  # without one, read_meta raised IndexNotFoundError
    summary["generation"] = gen.name

    # 1. checksums recorded at write time
    for name, rec in meta.files.items():
        p = gen / name
        if not p.exists():
            problems.append(Problem(str(p), "missing"))
            continue
        if p.stat().st_size != rec["bytes"]:
            problems.append(
                Problem(str(p), f"size {p.stat().st_size} bytes, expected {rec['bytes']} (truncated or replaced)")
            )
        elif store.file_sha256(p) != rec["sha256"]:
            problems.append(Problem(str(p), "content does not match its recorded sha256 (corrupted)"))
    if problems:
        return summary, problems + [Problem(str(index_dir), rebuild_hint("FOLDER"))]

    # 2. structure: ids ↔ vectors ↔ manifest ↔ FAISS
    try:
        snap = store.read(index_dir)
    except SimsearchError as e:
        return summary, [Problem(str(gen), str(e))]
    n = len(snap)
    summary["images"] = n
    if len(np.unique(snap.ids)) != n or (n and not np.all(np.diff(snap.ids) > 0)):
        problems.append(Problem(str(gen / "ids.npy"), "ids are not unique and ascending"))
    if n and int(snap.ids.max()) >= meta.next_id:
        problems.append(Problem(str(gen / "meta.json"), "next_id is not above every id (ids could be reused)"))
    if not np.isfinite(snap.vectors).all():
        problems.append(Problem(str(gen / "vectors.npy"), "contains NaN or infinite values"))
    fi = snap.faiss_index
    fi_file = gen / ("shards.json" if meta.faiss.type == "sharded" else "index.faiss")
    if n:
        from .ann import index_ids

        if not np.array_equal(np.sort(index_ids(fi)), snap.ids):
            problems.append(Problem(str(fi_file), "ids differ from the manifest's"))
        allv = snap.search_vectors()
        probe = allv[: min(n, 64)]
        _, got = fi.search(probe, 1)
        exact = snap.ids[np.argmax(probe @ allv.T, axis=1)]
        if np.mean(got[:, 0] == exact) < 0.9:
            problems.append(Problem(str(fi_file), "does not answer like the stored vectors (stale or wrong index)"))
    paths = [e.path for e in snap.entries]
    if len(set(paths)) != len(paths):
        problems.append(Problem(str(gen / "manifest.sqlite"), "the same path appears twice"))

    # 3. model
    sha = meta.model.sha256
    mp = store.model_path(index_dir, sha)
    if not mp.exists():
        problems.append(Problem(str(mp), "model file missing: queries by image cannot be encoded"))
    elif store.file_sha256(mp) != sha:
        problems.append(Problem(str(mp), "model file does not match its hash (corrupted)"))
    npz = store.numpy_model_path(index_dir, sha)
    if meta.model.numpy_sha256 and (not npz.exists() or store.file_sha256(npz) != meta.model.numpy_sha256):
        problems.append(
            Problem(
                str(npz),
                "numpy export of the encoder missing or damaged: cold queries fall back to torch "
                "(`simsearch index --retrain` or re-index with --model to re-create it)",
                "warning",
            )
        )
    summary["model_sha256"] = sha

    # 4. the corpus itself
    if check_files:
        root = Path(meta.corpus_root)
        missing = changed = 0
        for entry in snap.entries:
            try:
                st = (root / entry.path).stat()
            except OSError:
                missing += 1
                continue
            if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
                changed += 1
        summary["files_missing"], summary["files_changed"] = missing, changed
        if missing:
            problems.append(
                Problem(
                    str(root),
                    f"{missing} indexed files no longer exist (re-run `simsearch index` to drop them)",
                    "warning",
                )
            )
        if changed:
            problems.append(
                Problem(
                    str(root), f"{changed} indexed files changed since indexing (re-run `simsearch index`)", "warning"
                )
            )

    # 5. leftovers of interrupted writes (harmless; removed by the next write)
    leftovers = list(index_dir.glob(".tmp-*"))
    if leftovers:
        problems.append(
            Problem(
                str(index_dir),
                f"{len(leftovers)} leftover temporary generation(s) from an interrupted write",
                "warning",
            )
        )
    return summary, problems

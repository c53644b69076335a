"""Querying: turn each query (file, PIL image, array, indexed id) into a vector
and return its nearest neighbours from the FAISS index as ``Hit``s.

A file that is already in the index (same path, size and mtime) reuses its
stored vector instead of being re-encoded, and is left out of its own results
unless ``include_self``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from .decode import load, read_file
from .errors import ImageError, SimsearchError
from .preprocess import Preprocess, from_array, preprocess
from .store import Snapshot, manifest_path


@dataclass(frozen=True)
class Hit:
    """One neighbour: its stable id, path (relative to the indexed folder), cosine score and rank (1-based);
    ``pixel``: its pixel similarity to the query when the fine check found it a copy (``finecheck``)."""

    id: int
    path: str
    score: float
    rank: int
    root: str = ""
    pixel: float | None = None

    @property
    def abspath(self) -> Path:
        return Path(self.root) / self.path

    def to_dict(self) -> dict:
        d = asdict(self)
        d["abspath"] = str(self.abspath)
        return d


@dataclass
class _Resolved:
    vector: np.ndarray | None = None  # raw code (already embedded)
    pixels: np.ndarray | None = None  # (C,S,S) uint8 to embed
    self_id: int | None = None  # this query's own id in the index
    source: Any = None  # what the fine check reads the query's pixels from: its file, PIL image or array


def describe(item: Any) -> str:
    """Short label of a query for tables, JSON and errors."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
        return f"id:{int(item)}"
    if isinstance(item, np.ndarray):
        return f"<array {'×'.join(map(str, item.shape))}>"
    try:
        from PIL import Image

        if isinstance(item, Image.Image):
            return f"<image {item.width}×{item.height} {item.mode}>"
    except ImportError:  # pragma: no cover
        pass
    return f"<{type(item).__name__}>"


def resolve(snap: Snapshot, item: Any, root: Path, pre: Preprocess, by_path: dict[str, int]) -> _Resolved:
    if isinstance(item, bool):
        raise SimsearchError(f"cannot query by {item!r}")
    if isinstance(item, (int, np.integer)):
        i = int(item)
        row = snap.row_of_id(i)
        if row is None:
            raise SimsearchError(f"id {i} is not in the index")
        return _Resolved(vector=np.asarray(snap.vectors[row]), self_id=i)
    if isinstance(item, (str, os.PathLike)):
        p = Path(item)
        if p.is_dir():
            raise ImageError(p, "is a directory, not an image")
        if not p.exists():
            raise ImageError(p, "file not found")
        row = _indexed_row(p, root, snap, by_path)
        if row is not None:
            return _Resolved(vector=np.asarray(snap.vectors[row]), self_id=int(snap.ids[row]))
        data = read_file(p)
        row = snap.row_of_sha256().get(hashlib.sha256(data).hexdigest())
        if row is not None:  # the same bytes as an indexed file elsewhere: its stored vector, exactly
            return _Resolved(vector=np.asarray(snap.vectors[row]))
        return _Resolved(pixels=load(data, pre, name=p), source=p)  # (the check reads it again: no bytes held)
    if isinstance(item, np.ndarray):
        try:
            return _Resolved(pixels=from_array(item, pre), source=item)
        except ValueError as e:
            raise SimsearchError(f"query array: {e}") from None
    from PIL import Image

    if isinstance(item, Image.Image):
        try:
            return _Resolved(pixels=preprocess(item, pre), source=item)
        except Exception as e:
            raise ImageError(describe(item), f"cannot convert image ({e})") from None
    raise SimsearchError(f"cannot query by a {type(item).__name__}: pass a path, PIL image, numpy array or indexed id")


def _indexed_row(p: Path, root: Path, snap: Snapshot, by_path: dict[str, int]) -> int | None:
    rel = manifest_path(p, root)
    row = by_path.get(rel) if rel is not None else None
    if row is None:
        return None
    e = snap.entries[row]
    st = p.stat()
    return row if (st.st_size, st.st_mtime_ns) == (e.size, e.mtime_ns) else None


# a score this close to 1 is an identical image (to the model: same input pixels), reported as 1.0
IDENTICAL = 1 - 1e-5
COPY_SHORTLIST = 10  # candidates for a query's original, re-scored by exact base cosine


def place_copies(snap: Snapshot, q: np.ndarray, self_ids: Sequence[int | None]) -> np.ndarray:
    """Near-copy placement (``postprocess`` step 4): each new query whose nearest gallery image by base
    cosine reaches the index's calibrated copy threshold takes that image's diffusion coordinates."""
    post = snap.post
    todo = np.array([i for i, s in enumerate(self_ids) if s is None], dtype=np.int64)
    if not post.diffusion or post.copy_threshold is None or len(todo) == 0 or len(snap) == 0:
        return q
    from .ann import search as ann_search

    # a short list by (nearly) base cosine from the main index, then the exact base cosine
    probe = np.ascontiguousarray(post.base_part(q[todo]))
    _, nn = ann_search(snap.faiss_index, probe, min(COPY_SHORTLIST, len(snap)))
    d = len(post.mean)
    best_rows = np.full(len(todo), -1, np.int64)
    for j, cand in enumerate(nn):
        cand = cand[cand >= 0]
        if len(cand):
            rows = snap.rows_of(cand)
            cos = post.base(np.asarray(snap.vectors[rows])) @ (q[todo[j], :d] / np.linalg.norm(q[todo[j], :d]))
            if cos.max() >= post.copy_threshold:
                best_rows[j] = rows[int(np.argmax(cos))]
    hit = best_rows >= 0
    if hit.any():
        sel = todo[hit]
        q = q.copy()
        q[sel] = post.with_coords(q[sel], snap.search_vectors(best_rows[hit]))
    return q


# hits fetched past k, so that images with equal scores at the cut (the same picture in several files,
# flat pictures) are ordered as a group: by id, the same first hits whatever k is
TIE_MARGIN = 8


def search(
    snap: Snapshot, queries: np.ndarray, k: int, exclude: Sequence[int | None] = (), root: str = ""
) -> list[list[Hit]]:
    """Batched FAISS search of normalised query vectors (Q, D); drops each query's own id. Hits with
    equal scores come in id order (FAISS returns them in an order that changes with k), so a larger k
    extends a ranking and never reorders it, for ties of up to ``TIE_MARGIN`` + 1 images."""
    if k <= 0:
        raise SimsearchError(f"k must be a positive number of neighbours, got {k}")
    n = len(snap)
    if n == 0 or len(queries) == 0:
        return [[] for _ in range(len(queries))]
    extra = 1 if any(x is not None for x in exclude) else 0
    kk = min(k + extra + TIE_MARGIN, n)
    from .ann import search as ann_search

    scores, ids = ann_search(snap.faiss_index, np.ascontiguousarray(queries, dtype=np.float32), kk)
    out = []
    for qi in range(len(queries)):
        skip = exclude[qi] if qi < len(exclude) else None
        found = [
            (1.0 if s >= IDENTICAL else float(s), int(i))  # float rounding must not hide an exact copy
            for s, i in zip(scores[qi], ids[qi])
            if i >= 0 and i != skip
        ]
        found.sort(key=lambda t: (-t[0], t[1]))
        hits: list[Hit] = []
        for score, i in found[:k]:
            row = int(np.searchsorted(snap.ids, i))
            hits.append(Hit(i, snap.entries[row].path, score, len(hits) + 1, root))
        out.append(hits)
    return out


def vectors_for(
    snap: Snapshot,
    items: Sequence[Any],
    root: Path,
    pre: Preprocess,
    encoder: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, list[int | None]]:
    """Cosine-ready vectors (Q, D) for ``items`` (images encoded in one batch) and each item's own id, if indexed."""
    q, resolved = _vectors(snap, items, root, pre, encoder)
    return q, [r.self_id for r in resolved]


def _vectors(
    snap: Snapshot,
    items: Sequence[Any],
    root: Path,
    pre: Preprocess,
    encoder: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, list[_Resolved]]:
    by_path = snap.row_of_path() if any(isinstance(x, (str, os.PathLike)) for x in items) else {}
    resolved = [resolve(snap, it, root, pre, by_path) for it in items]
    raw = np.zeros((len(items), snap.dim), np.float32)
    todo = [i for i, r in enumerate(resolved) if r.vector is None]
    if todo:
        # a query resolved without a vector has pixels
        raw[todo] = encoder(np.stack([cast(np.ndarray, resolved[i].pixels) for i in todo]))
    for i, r in enumerate(resolved):
        if r.vector is not None:
            raw[i] = r.vector
    self_ids = [r.self_id for r in resolved]
    ids = np.array([-1 if i is None else i for i in self_ids], dtype=np.int64)
    return place_copies(snap, snap.post.search_vectors(raw, ids), self_ids), resolved


def query_batch(
    snap: Snapshot,
    items: Sequence[Any],
    k: int,
    root: Path,
    pre: Preprocess,
    encoder: Callable[[np.ndarray], np.ndarray],
    include_self: bool = False,
    check: Callable[[Any, list[Hit]], list[Hit]] | None = None,
) -> list[list[Hit]]:
    """Resolve, embed (in one batch) and search ``items``. ``check(image, hits)``: the fine check
    (``Index.pixel_check``), given each new query image's first ``finecheck.SHORTLIST`` hits."""
    if k <= 0:
        raise SimsearchError(f"k must be a positive number of neighbours, got {k}")
    q, resolved = _vectors(snap, items, root, pre, encoder)
    self_ids = [r.self_id for r in resolved]
    exclude = [None] * len(items) if include_self else self_ids
    if check is None:
        return search(snap, q, k, exclude, str(root))
    from .finecheck import SHORTLIST

    out = search(snap, q, max(k, SHORTLIST), exclude, str(root))
    return [(hits if r.source is None else check(r.source, hits))[:k] for r, hits in zip(resolved, out)]

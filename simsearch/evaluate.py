"""Retrieval quality on labelled images (label = name of the parent folder).

Labels are used here and nowhere else: training, embedding and search never
see them. Every query ranks the *whole* gallery by cosine similarity:

- P@k       fraction of the top k that share the query's label
- R@k       fraction of all the query's relevant gallery images found in the top k
- AP        mean over the relevant images of the precision at each one's rank
- mAP       mean AP over queries (full ranking: every relevant image counts)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_KS = (1, 10, 100)


def label_of(path: str | os.PathLike) -> str:
    return Path(path).parent.name


def encode_labels(*label_lists: Sequence[str]) -> list[np.ndarray]:
    names = sorted(set().union(*[set(labels) for labels in label_lists]))
    code = {n: i for i, n in enumerate(names)}
    return [np.array([code[x] for x in labels], dtype=np.int64) for labels in label_lists]


def rank_metrics(
    queries: np.ndarray,
    gallery: np.ndarray,
    q_labels: np.ndarray,
    g_labels: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    exclude: np.ndarray | None = None,
    block: int = 256,
) -> dict:
    """Metrics of ranking ``gallery`` (N, D) by inner product with each of ``queries`` (Q, D).

    ``exclude[i]``: a gallery row to leave out of query i's ranking (itself), or -1.
    Returns means over queries; queries with no relevant gallery image are left out of
    R@k and mAP (and counted in ``no_relevant``).
    """
    import torch

    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    g = torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32))
    ql = torch.from_numpy(np.asarray(q_labels, dtype=np.int64))
    gl = torch.from_numpy(np.asarray(g_labels, dtype=np.int64))
    n = g.shape[0]
    ks = [k for k in ks if k <= n] or [n]
    sums = {f"P@{k}": 0.0 for k in ks} | {f"R@{k}": 0.0 for k in ks} | {"mAP": 0.0}
    n_rel_queries = 0
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    for s in range(0, len(q), block):
        sim = q[s : s + block] @ g.T  # (B, N)
        rel_all = gl[None, :] == ql[s : s + block, None]  # (B, N)
        if exclude is not None:
            ex = torch.from_numpy(np.asarray(exclude[s : s + block], dtype=np.int64))
            rows = torch.nonzero(ex >= 0).squeeze(1)
            sim[rows, ex[rows]] = -torch.inf
            rel_all[rows, ex[rows]] = False
        order = torch.sort(sim, dim=1, descending=True, stable=True).indices
        rel = torch.gather(rel_all, 1, order)
        cum = torch.cumsum(rel, dim=1, dtype=torch.int64)
        total = cum[:, -1].to(torch.float64)
        has = total > 0
        for k in ks:
            hits = cum[:, k - 1].to(torch.float64)
            sums[f"P@{k}"] += float((hits / k).sum())
            sums[f"R@{k}"] += float((hits[has] / total[has]).sum())
        prec = cum.to(torch.float64) / ranks
        ap = (prec * rel).sum(1)[has] / total[has]
        sums["mAP"] += float(ap.sum())
        n_rel_queries += int(has.sum())
    out = {}
    for k in ks:
        out[f"P@{k}"] = sums[f"P@{k}"] / len(q)
    for k in ks:
        out[f"R@{k}"] = sums[f"R@{k}"] / max(n_rel_queries, 1)
    out["mAP"] = sums["mAP"] / max(n_rel_queries, 1)
    out["queries"], out["gallery"], out["no_relevant"] = len(q), n, len(q) - n_rel_queries
    return out


def evaluate_index(
    index,
    queries_dir: str | None = None,
    gallery_dir: str | None = None,
    split: float | None = None,
    seed: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
    limit: int | None = None,
    progress=None,
) -> dict:
    """Evaluate an open ``simsearch.Index``.

    - ``queries_dir`` given: its images (labels from folders) query the gallery.
    - gallery: ``gallery_dir`` embedded with the index's model, else the index's own images.
    - ``split``: no queries_dir; a random fraction of the gallery queries the rest (each query
      is left out of its own ranking).
    """
    from .discover import discover

    g_paths = None
    if gallery_dir is not None and Path(gallery_dir).resolve() != index.root:
        g_paths, problems = discover(gallery_dir)
        g_vecs = _embed_paths(index, g_paths, progress)
        g_labels = [label_of(p) for p in g_paths]
    else:
        g_vecs = index.vectors()
        g_labels = [label_of(p) for p in index.paths()]
    exclude = None
    if queries_dir is not None:
        q_paths, _ = discover(queries_dir)
        if limit:
            q_paths = _sample(q_paths, limit, seed)
        q_vecs = _embed_paths(index, q_paths, progress)
        q_labels = [label_of(p) for p in q_paths]
    else:
        frac = split if split is not None else 0.1
        rng = np.random.default_rng(seed)
        n_q = max(1, int(round(len(g_labels) * frac)))
        if limit:
            n_q = min(n_q, limit)
        rows = np.sort(rng.choice(len(g_labels), size=n_q, replace=False))
        q_vecs, q_labels, exclude = g_vecs[rows], [g_labels[i] for i in rows], rows
    q_vecs = index.prepare_queries(q_vecs)
    ql, gl = encode_labels(q_labels, g_labels)
    res = rank_metrics(q_vecs, g_vecs, ql, gl, ks, exclude)
    res["classes"] = len(set(g_labels))
    return res


def _sample(paths, limit, seed):
    if len(paths) <= limit:
        return paths
    rng = np.random.default_rng(seed)
    return [paths[i] for i in np.sort(rng.choice(len(paths), size=limit, replace=False))]


def _embed_paths(index, paths, progress=None) -> np.ndarray:
    """Search vectors of image files (as queries), decoded in parallel and embedded in batches."""
    from .pool import decode_files

    pre = index.preprocess
    pixels = np.empty((len(paths), pre.channels, pre.size, pre.size), np.uint8)
    bad = []
    for i, arr, reason, _info in decode_files(list(paths), pre):
        if arr is None:
            bad.append((i, reason))
        else:
            pixels[i] = arr
        if progress:
            progress("decode", i + 1, len(paths))
    if bad:
        raise ValueError(f"{len(bad)} evaluation images could not be read, e.g. {paths[bad[0][0]]}: {bad[0][1]}")
    return index.embed_pixels(pixels)


def split_folder(folder: str | os.PathLike, out: str | os.PathLike, n_queries: int = 10_000) -> tuple[Path, Path]:
    """Split a labelled folder into queries and gallery: ``(out/queries, out/gallery)``, folders of
    symlinks to the images that keep their class folders (labels). The first ``n_queries`` images in
    file-name order (ties: by path) query, the rest are the gallery.

    On Fashion-MNIST as ``scripts/fetch_fashion_mnist.py`` writes it (files numbered 00000-59999 across
    the class folders) this is the validation split of the research scripts: train images 00000-09999
    query 10000-59999. A split already under ``out`` is reused as it is.
    """
    from .discover import discover

    out = Path(out)
    queries, gallery = out / "queries", out / "gallery"
    if queries.is_dir() and gallery.is_dir():
        return queries, gallery
    folder = Path(folder)
    paths, _ = discover(folder)
    paths = sorted(paths, key=lambda p: (p.name, p.as_posix()))
    partial = out / ".partial"  # an interrupted split is redone, not reused
    shutil.rmtree(partial, ignore_errors=True)
    for part in ("queries", "gallery"):
        (partial / part).mkdir(parents=True)
    for i, p in enumerate(paths):
        dst = partial / ("queries" if i < n_queries else "gallery") / p.relative_to(folder)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(p.resolve(), dst)
    for part, final in (("queries", queries), ("gallery", gallery)):
        shutil.rmtree(final, ignore_errors=True)
        (partial / part).rename(final)
    partial.rmdir()
    return queries, gallery


# ---------------------------------------------------------------- near-copies


def paired_difference(a, b) -> tuple[float, float]:
    """Mean of ``a − b`` over the same queries (each query's outcome under two rankings, e.g. 0/1 found
    first) and its standard error. The two rankings share their queries, so the difference is measured
    more precisely than either recall: what decides whether one is ahead of the other. NaN error for
    fewer than two queries."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if not len(d):
        raise ValueError("no queries to compare")
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se


def evaluate_copies(
    index,
    n: int = 200,
    strength: str = "default",
    seed: int = 0,
    baseline: bool = True,
    progress=None,
    pixel_check: bool = True,
) -> dict:
    """Near-copy search on the index's own images, no labels needed.

    ``n`` indexed images are copied in memory with ``simsearch.copies`` (a random mix of resize,
    crop, stretch, rotation, padding, light, colour and JPEG at ``strength``); each copy queries the
    index. R@1: the original (or a file with identical bytes) is the first hit; R@5: in the top 5.
    ``baseline``: the same for 32×32 colour thumbnails (cosine of mean-centred pixels) over the
    whole index, and simsearch's margin over them with its standard error (``paired_difference``; ±0.021
    with 300 copies of clip art: a margin within twice its error may be chance). Also reports the median score
    of the original when found first and of the best other image, so one can see how far a copy scores
    above a look-alike. ``pixel_check``: as in ``Index.query``."""
    from . import copies

    entries = index.entries()
    if not entries:
        raise ValueError("the index is empty")
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(entries), size=min(n, len(entries)), replace=False))
    kept, queries = copies.copies_of(
        [index.root / entries[i].path for i in picks], [seed * 1_000_003 + int(entries[i].id) for i in picks], strength
    )
    originals = [int(picks[k]) for k in kept]
    if not queries:
        raise ValueError("none of the sampled indexed files can be read")
    key = np.array([e.sha256 for e in entries])
    row_of = {e.id: r for r, e in enumerate(entries)}
    found = np.zeros((len(queries), 2))  # R@1, R@5
    own, other = [], []
    for s in range(0, len(queries), 256):
        for j, hits in enumerate(index.query_batch(queries[s : s + 256], k=5, pixel_check=pixel_check), start=s):
            same = [key[row_of[h.id]] == key[originals[j]] for h in hits]
            found[j] = [bool(same and same[0]), any(same)]
            if same and same[0]:
                own.append(hits[0].score)
            nxt = next((h.score for h, m in zip(hits, same) if not m), None)
            if nxt is not None:
                other.append(nxt)
    out = {
        "copies": len(queries),
        "strength": strength,
        "R@1": float(found[:, 0].mean()),
        "R@5": float(found[:, 1].mean()),
        "original_score_median": float(np.median(own)) if own else None,
        "other_score_median": float(np.median(other)) if other else None,
    }
    if baseline:
        thumbs = _thumbnail_found(index, entries, queries, originals, key, progress)
        for j, k in enumerate(("R@1", "R@5")):
            out[f"thumbnail_{k}"] = float(thumbs[:, j].mean())
        for j, k in enumerate(("R@1", "R@5")):
            out[f"{k}_margin"], out[f"{k}_margin_stderr"] = paired_difference(found[:, j], thumbs[:, j])
    return out


def _thumbnail_found(index, entries, queries, originals, key, progress=None) -> np.ndarray:
    """(queries, 2): each copy's original first / in the top 5 (0 or 1) by 32×32 colour thumbnails
    (mean-centred cosine), the baseline for near-copy search."""
    from .pool import decode_files
    from .preprocess import Preprocess, preprocess

    pre = Preprocess(32, 3, "stretch")

    def feats(pixels: np.ndarray) -> np.ndarray:
        x = pixels.reshape(len(pixels), -1).astype(np.float32)
        x -= x.mean(1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)

    gal = np.zeros((len(entries), 3 * 32 * 32), np.float32)
    ok = np.zeros(len(entries), bool)
    paths = [index.root / e.path for e in entries]
    for i, arr, _reason, _info in decode_files(paths, pre):
        if arr is not None:
            gal[i], ok[i] = feats(arr[None])[0], True
        if progress:
            progress("thumbnails", i + 1, len(paths))
    q = feats(np.stack([preprocess(img, pre) for img in queries]))
    sims = q @ gal.T
    sims[:, ~ok] = -np.inf
    top = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    same = key[top] == key[np.asarray(originals)][:, None]
    return np.stack([same[:, 0], same.any(1)], axis=1).astype(np.float64)

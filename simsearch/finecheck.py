"""Stage 2 of a query: the fine check of its shortlist by pixels.

The model's codes rank the whole index; they say which pictures *look alike*, and a 128-d code
cannot keep every pixel, so a picture's own copy can come second or fifth behind a look-alike. The
first ``SHORTLIST`` hits of a new query image are therefore compared with it pixel by pixel
(``pixelmatch.similarity``: aligned 24×24 colour thumbnails, either picture cropped a little, Pearson
correlation; the check ``simsearch dupes`` uses). Hits that match at the index's threshold or more
are listed first; each group keeps its order by score. Each hit keeps its search score; a hit that
passed carries its pixel similarity (``Hit.pixel``).

The check decides which hits are copies, not their order: among near-identical pictures that all
pass (the same icon in two sizes, star polygons a hairline apart) a 24 px comparison is saturated,
and the model, which saw the pictures at up to 64 px, orders them better. Ordering the passing hits
by pixel similarity instead lost 0.05–0.06 R@1 on plainly resized and re-saved copies of clip art
and 0.05–0.07 on mirrored ones, for at most +0.01 on the benchmark's copies (development half;
``scripts/research/unseen_edits.py``; README, ablation).

A grey query (no colour in its pixels, ``pixelmatch.is_grey``: a black-and-white copy of a colour picture)
is compared with each candidate's grey levels (``pixelmatch.luma``), since it has nothing else to compare:
a colour original then matches its grey copy as a re-saved one does. On the clip-art development half
(``scripts/research/unseen_edits.py``) grey copies of colour pictures went 0.557 → 0.623 R@1 (the model's
first 10 hits hold the original for 0.717); copies in colour are compared as before.

The threshold is calibrated for each index when its post-processing is fitted, on the same
transformed copies of 200 indexed images as the near-copy placement: the pixel similarity that best
separates each copy from its original's nearest distinct image (Youden's J;
``postprocess.calibrate_pixels``). Where copies are not closer than look-alikes there is none and the
check is off; an index fitted before the check existed has none either.

It runs for query images that are not in the index (a file not indexed, a PIL image, an array),
where the indexed candidates' files can be read now (each is read once per query, from the
indexed folder; a few recent ones are kept in ``GridCache``). Indexed images and ids are answered
from their stored vectors, as before.

``SHORTLIST`` was chosen on the clip-art development half (``scripts/research/fine_check.py``).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .query import Hit

SHORTLIST = 10  # hits checked by pixels (R@10 bounds what the check can recover)
CACHE_SIZE = 256  # candidate grids kept (each ≤ 55 KB as bytes)


class GridCache:
    """``pixelmatch`` grids (as bytes) of indexed files, read on demand and kept for the last ``size`` files. A file
    is keyed by its path, size and modification time, so an edited file is read again; one that cannot be
    read gives None (its hit is simply not checked)."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._grids: OrderedDict[tuple[str, int, int], np.ndarray | None] = OrderedDict()
        self._lock = threading.Lock()  # a served index is queried from several threads

    def __call__(self, path: Path) -> np.ndarray | None:
        from . import pixelmatch

        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (os.fspath(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            known = key in self._grids
            g = self._grids[key] if known else None
            if known:
                self._grids.move_to_end(key)
        if not known:
            g = pixelmatch.load_grid(path, as_bytes=True)
            with self._lock:
                self._grids[key] = g
                while len(self._grids) > self.size:
                    self._grids.popitem(last=False)
        return g


def query_grids(source: Any) -> np.ndarray | None:
    """The pixel check's grids of a query: ``source`` is a file (path), its bytes, a PIL image or a numpy
    image. None when it cannot be made (the query then goes unchecked)."""
    from . import pixelmatch
    from .decode import open_image

    try:
        if isinstance(source, os.PathLike):
            source = Path(source)
        img = open_image(source) if isinstance(source, (str, Path, bytes, bytearray, memoryview)) else source
        return pixelmatch.grids(img)
    except Exception:  # noqa: BLE001 — the query was decoded once already; the check is optional
        return None


def rerank(
    hits: list[Hit], grids: np.ndarray, grid_of: Callable[[Path], np.ndarray | None], threshold: float
) -> list[Hit]:
    """``hits`` (in score order) with those among the first ``SHORTLIST`` whose pixels match the query's
    ``grids`` at ``threshold`` or more moved to the front, in their order; ranks renumbered. A grey query
    is compared with the candidates' grey levels.
    ``grid_of(path)``: an indexed file's grids (float or bytes), or None when it cannot be read."""
    from . import pixelmatch

    shortlist = hits[:SHORTLIST]
    pairs = [(-1, i) for i in range(len(shortlist))]
    grey = pixelmatch.is_grey(grids)

    def of(i: int) -> np.ndarray | None:
        g = grids if i < 0 else grid_of(shortlist[i].abspath)
        return pixelmatch.luma(g) if grey and g is not None else g

    sims = pixelmatch.similarities(pairs, of, threads=1)
    passed = {
        i: replace(h, pixel=round(float(s), 4))
        for i, (h, s) in enumerate(zip(shortlist, sims))
        if s >= threshold  # (NaN, an unreadable file, never passes)
    }
    if not passed:
        return hits
    ordered = list(passed.values()) + [h for i, h in enumerate(hits) if i not in passed]
    return [replace(h, rank=r) for r, h in enumerate(ordered, 1)]

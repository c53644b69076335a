"""The whole-folder tools in ``simsearch serve``: duplicates, outliers, the map, reconstructions.

Routes (added to the app by ``add_routes``)::

    GET /tools                       the page (static/tools.html, static/tools.js)
    GET /api/dupes?threshold=&verify=  duplicate groups (as `simsearch dupes --json`)
    GET /api/outliers?n=&by=          the least typical images (as `simsearch outliers --json`)
    GET /api/map?method=&sample=      a 2-D layout snapped to a grid (as `simsearch map`)
    GET /reconstruction/{id}          a PNG: the image beside its reconstruction (as `simsearch reconstruct`)

Each calls the same library functions as the CLI (``dupes.find``, ``outliers.find``,
``corpusmap.layout``, ``reconview.show``) on the request's generation of the index. Duplicates
and outliers are a pass over the whole index, so their last answer is kept per generation and
parameters (a newer generation computes them again).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import FileResponse, Response

from .. import corpusmap, dupes, outliers, reconview
from ..errors import SimsearchError
from ..store import Entry
from .holder import IndexHolder, Loaded

STATIC = Path(__file__).resolve().parent / "static"


class _Memo:
    """The last answer per key, for one generation of the index (a few keys at most)."""

    def __init__(self, most: int = 8):
        self.most = most
        self.lock = threading.Lock()
        self.items: dict[tuple, Any] = {}

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.items:
                return self.items[key]
        value = make()
        with self.lock:
            if len(self.items) >= self.most:
                self.items.pop(next(iter(self.items)))
            self.items[key] = value
        return value


def add_routes(
    app: FastAPI,
    holder: IndexHolder,
    urls: Callable[[Entry], dict[str, str]],
    entry_of: Callable[[Loaded, int], Entry],
    error: Callable[[int, str], Exception],
) -> None:
    """Add the tool routes. ``urls``: an entry's thumb/image URLs; ``entry_of``: id → entry or a 404;
    ``error(status, message)``: the app's JSON error exception."""
    memo = _Memo()

    def run(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except SimsearchError as e:
            raise error(422, str(e)) from None

    def member(loaded: Loaded, m: dupes.Member) -> dict:
        return {**asdict(m), **urls(loaded.by_id[m.id])}

    @app.get("/tools", include_in_schema=False)
    def tools_page() -> FileResponse:
        return FileResponse(STATIC / "tools.html", headers={"cache-control": "no-cache"})

    @app.get("/api/dupes", tags=["tools"])
    def dupes_api(
        threshold: float | None = Query(None, ge=-1, le=1, description="Cosine (default: calibrated)."),
        verify: bool = Query(True, description="Check each pair's pixels."),
    ) -> dict:
        """Exact and near-duplicate groups, as `simsearch dupes --json` (nothing is moved)."""
        loaded = holder.get()

        def make() -> dict:
            res = run(lambda: dupes.find(loaded.index, threshold, verify=verify))
            groups = [
                {
                    "keep": member(loaded, g.keeper),
                    "others": [member(loaded, m) for m in g.others],
                    "weakest_similarity": g.weakest[2],
                    "exact": g.exact,
                }
                for g in res.groups
            ]
            return {
                "why": res.calibration.why(),
                "threshold": res.calibration.threshold,
                "calibration": res.calibration.to_dict(),
                "images": res.images,
                "seconds": round(res.seconds, 3),
                "groups": groups,
            }

        return {"generation": loaded.generation, **memo.get((loaded.generation, "dupes", threshold, verify), make)}

    @app.get("/api/outliers", tags=["tools"])
    def outliers_api(
        n: int = Query(20, ge=1, le=1000, description="How many."),
        by: str = Query("recon", pattern="^(recon|knn)$", description="recon or knn."),
    ) -> dict:
        """The images least like the rest, as `simsearch outliers --json`."""
        loaded = holder.get()

        def make() -> dict:
            res = run(lambda: outliers.find(loaded.index, n, by))
            return {
                "note": res.note(),
                "images": res.images,
                "outliers": [{**o.to_dict(), **urls(loaded.by_id[o.id])} for o in res.outliers],
            }

        return {"generation": loaded.generation, "by": by, **memo.get((loaded.generation, "outliers", n, by), make)}

    @app.get("/api/map", tags=["tools"])
    def map_api(
        method: str = Query("pca", pattern="^(pca|tsne)$"),
        sample: int = Query(400, ge=2, le=5000, description="At most this many images."),
        seed: int = Query(0),
    ) -> dict:
        """A 2-D layout of the index (PCA or t-SNE of the base vectors) snapped to a grid, as `simsearch map`."""
        loaded = holder.get()
        lay = run(lambda: corpusmap.layout(loaded.index, method, sample, seed))
        entries = loaded.index.entries()
        cols, rows = lay.grid
        return {
            "generation": loaded.generation,
            "method": lay.method,
            "grid": {"columns": int(cols), "rows": int(rows)},
            "images": [
                {
                    "id": entries[r].id,
                    "relpath": entries[r].path,
                    "folder": corpusmap.folder_of(entries[r].path),
                    "col": int(c[0]),
                    "row": int(c[1]),
                    **urls(entries[r]),
                }
                for r, c in zip(lay.rows.tolist(), lay.cells)
            ],
        }

    @app.get("/reconstruction/{id}", responses={200: {"content": {"image/png": {}}}}, tags=["tools"])
    def reconstruction(id: int) -> Response:
        """A PNG of the indexed image `id` as the model sees it beside its reconstruction (and, for a
        denoising model, a corrupted copy beside the model's output), as `simsearch reconstruct`."""
        loaded = holder.get()
        entry_of(loaded, id)
        with tempfile.TemporaryDirectory(prefix="simsearch-recon-") as tmp:
            shown = run(lambda: reconview.show(loaded.index, [id], tmp))
            data = shown[0].png.read_bytes()
        return Response(data, media_type="image/png", headers={"cache-control": "no-cache"})

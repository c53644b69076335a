"""A 2-D map of an index (``simsearch map``): every image (or a sample) laid out so that images
the model finds alike lie close, drawn as thumbnails on a grid.

- **Layout.** The base vectors (``Index.base_vectors``: centred, whitened codes) of at most
  ``sample`` images (a seeded random sample above that) are projected to 2-D: PCA (numpy SVD) by
  default, or t-SNE (scikit-learn, on the top 50 PCA axes, ``random_state`` = seed). The same
  seed gives the same map.
- **Cache.** The coordinates are cached per index version (``Index.generation``), method, sample
  size and seed, in ``$XDG_CACHE_HOME/simsearch/maps`` (``~/.cache`` when unset): a second map
  of an unchanged index skips the projection.
- **Grid.** The 2-D points are scaled onto a grid with about two cells per image and each image is
  given its own cell, as close to its point as the others allow (an optimal assignment by
  ``scipy.optimize.linear_sum_assignment`` up to 2,500 images, greedy above): thumbnails never
  overlap and neighbourhoods stay together.
- **PNG.** Thumbnails on the grid, optionally framed in a colour per top-level folder with a legend.
- **HTML.** The PNG with pan (drag) and zoom (wheel), the file name under the pointer, and a click
  that searches from that image: a link to ``SERVER/?id=N`` (the ``simsearch serve`` page) when a
  server URL is given, else the image file itself.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SimsearchError

METHODS = ("pca", "tsne")
DEFAULT_SAMPLE = 1000
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (0, 0, 128),
    (128, 128, 0),
]


@dataclass
class Layout:
    rows: np.ndarray  # (M,) index rows shown
    xy: np.ndarray  # (M, 2) projected coordinates
    cells: np.ndarray  # (M, 2) integer grid cell (col, row)
    grid: tuple[int, int]  # columns, rows
    method: str
    cached: bool = False
    top: int = 0  # px above the grid in the drawn PNG (its title), set by ``draw``


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "simsearch" / "maps"


def _key(index, method: str, sample: int, seed: int) -> str:
    ident = (
        f"{Path(index.path).resolve()}|{index.generation}|{index.meta.updated}|{len(index)}|{method}|{sample}|{seed}"
    )
    return hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def project(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(M, D) → (M, 2)."""
    if method not in METHODS:
        raise SimsearchError(f"unknown map method {method!r} (choose from {', '.join(METHODS)})")
    x = np.asarray(vectors, np.float64)
    x = x - x.mean(0)
    if len(x) < 3:
        return np.zeros((len(x), 2)) if len(x) else np.zeros((0, 2))
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    if method == "pca":
        xy = u[:, :2] * s[:2]
        xy = xy * np.sign(vt[:2].sum(1) + 1e-12)  # the sign of an SVD axis is arbitrary: fix it
        return xy.astype(np.float32)
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise SimsearchError("--method tsne needs scikit-learn (pip install scikit-learn)") from None
    pcs = u[:, :50] * s[:50]
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.5)))
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity)
    return tsne.fit_transform(pcs).astype(np.float32)


def coordinates(index, method: str = "pca", sample: int = DEFAULT_SAMPLE, seed: int = 0, cache: bool = True):
    """(rows, xy, from cache?) for an open ``simsearch.Index``."""
    n = len(index)
    if n == 0:
        raise SimsearchError(f"{index.path}: the index is empty")
    path = cache_dir() / f"{_key(index, method, sample, seed)}.npz"
    if cache and path.exists():
        try:
            with np.load(path) as z:
                return z["rows"], z["xy"], True
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file: recompute
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=sample, replace=False)) if n > sample else np.arange(n)
    xy = project(index.base_vectors()[rows], method, seed)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.savez(f, rows=rows, xy=xy)
            os.replace(tmp, path)
        except OSError:
            pass  # no cache (read-only home): the map is still drawn
    return rows, xy, False


def snap_to_grid(xy: np.ndarray, fill: float = 2.0) -> tuple[np.ndarray, tuple[int, int]]:
    """One grid cell per point, near its scaled position, no two points in a cell → (cells (M, 2), (cols, rows))."""
    m = len(xy)
    if m == 0:
        return np.zeros((0, 2), np.int64), (0, 0)
    lo = np.percentile(xy, 1, axis=0)
    hi = np.percentile(xy, 99, axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    u = np.clip((xy - lo) / span, 0, 1)
    aspect = float(np.clip(span[0] / span[1], 0.5, 2.0))
    rows = max(1, int(np.ceil(np.sqrt(fill * m / aspect))))
    cols = max(1, int(np.ceil(fill * m / rows)))
    while cols * rows < m:
        cols += 1
    pos = u * [cols - 1, rows - 1]
    gx, gy = np.meshgrid(np.arange(cols), np.arange(rows))
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    if m <= 2500:
        from scipy.optimize import linear_sum_assignment

        cost = ((pos[:, None, :] - grid[None, :, :]) ** 2).sum(-1)
        r, c = linear_sum_assignment(cost)
        cells = np.zeros((m, 2), np.int64)
        cells[r] = grid[c]
        return cells, (cols, rows)
    taken = np.zeros(len(grid), bool)
    cells = np.zeros((m, 2), np.int64)
    centre = pos.mean(0)
    for i in np.argsort(((pos - centre) ** 2).sum(1), kind="stable"):  # the middle first: it is the most crowded
        d = ((grid - pos[i]) ** 2).sum(1)
        d[taken] = np.inf
        j = int(np.argmin(d))
        taken[j] = True
        cells[i] = grid[j]
    return cells, (cols, rows)


def layout(index, method: str = "pca", sample: int = DEFAULT_SAMPLE, seed: int = 0, cache: bool = True) -> Layout:
    rows, xy, cached = coordinates(index, method, sample, seed, cache)
    cells, grid = snap_to_grid(xy)
    return Layout(rows, xy, cells, grid, method, cached)


def folder_of(path: str) -> str:
    parts = path.split("/")
    return parts[0] if len(parts) > 1 else "."


def draw(index, lay: Layout, out: str | os.PathLike, thumb: int = 40, colour: bool = False) -> tuple[Path, dict]:
    """The map PNG; → (its path, {folder: colour} when coloured)."""
    from PIL import Image, ImageDraw

    from .render import shorten, tile, wrap

    entries = index.entries()
    cols, nrows = lay.grid
    pad, gap = 12, 2
    step = thumb + gap
    folders = [folder_of(entries[r].path) for r in lay.rows]
    legend: dict[str, tuple[int, int, int]] = {}
    if colour:
        counts: dict[str, int] = {}
        for f in folders:
            counts[f] = counts.get(f, 0) + 1
        for i, f in enumerate(sorted(counts, key=lambda f: (-counts[f], f))):
            legend[f] = PALETTE[i] if i < len(PALETTE) else (200, 200, 200)
    leg_h = (16 * ((len(legend) + 3) // 4) + 8) if legend else 0
    W = max(2 * pad + cols * step, 360)
    how = {"pca": "the first two principal axes", "tsne": "t-SNE"}[lay.method]
    title = wrap(
        f"{len(lay.rows)} of {len(index)} images placed by {how} of their embeddings: images the model finds "
        "alike lie close." + (" Frame colour: top-level folder." if colour else ""),
        W - 2 * pad,
    )
    top = lay.top = 14 * len(title) + 6
    H = top + 2 * pad + nrows * step + leg_h
    sheet = Image.new("RGB", (W, H), "white")
    dr = ImageDraw.Draw(sheet)
    for k, line in enumerate(title):
        dr.text((pad, pad + 14 * k), line, fill="black")
    for r, (cx, cy), f in zip(lay.rows, lay.cells, folders):
        x, y = pad + int(cx) * step, top + pad + int(cy) * step
        if colour:
            inner = thumb - 6
            dr.rectangle([x, y, x + thumb - 1, y + thumb - 1], fill=legend.get(f, (200, 200, 200)))
            sheet.paste(tile(index.root / entries[r].path, inner), (x + 3, y + 3))
        else:
            sheet.paste(tile(index.root / entries[r].path, thumb), (x, y))
    if legend:
        y0 = top + pad + nrows * step + 6
        colw = max(1, (W - 2 * pad) // 4)
        for i, (f, c) in enumerate(legend.items()):
            x, y = pad + (i % 4) * colw, y0 + 16 * (i // 4)
            dr.rectangle([x, y + 2, x + 10, y + 12], fill=c)
            dr.text((x + 14, y), shorten(f, colw - 16), fill="black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, out)
    return out, {f: "#{:02x}{:02x}{:02x}".format(*c) for f, c in legend.items()}


def write_html(
    index, lay: Layout, png: Path, out: str | os.PathLike, thumb: int = 40, server: str | None = None
) -> Path:
    """A self-contained page: the map (``png``, drawn by ``draw`` from ``lay``) with pan/zoom; hovering
    names an image; a click searches from it on the server page (``server``/?id=N) or, without a
    server, opens the file."""
    entries = index.entries()
    pad, step = 12, thumb + 2
    items = []
    for r, (cx, cy) in zip(lay.rows, lay.cells):
        e = entries[r]
        href = f"{server.rstrip('/')}/?id={e.id}" if server else (index.root / e.path).resolve().as_uri()
        items.append(
            {"x": pad + int(cx) * step, "y": lay.top + pad + int(cy) * step, "id": int(e.id), "p": e.path, "h": href}
        )
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    title = html.escape(f"simsearch map of {index.root} ({len(lay.rows)} of {len(index)} images, {lay.method})")
    page = _HTML.format(
        title=title,
        data=data,
        thumb=thumb,
        items=json.dumps(items, ensure_ascii=True).replace("</", "<\\/"),
        hint="click an image to search from it"
        if server
        else "click an image to open it (pass --server URL to search)",
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ margin: 0; font: 13px sans-serif; overflow: hidden; background: #f4f4f4; }}
#bar {{ position: fixed; top: 0; left: 0; right: 0; padding: 6px 10px; background: #fff; border-bottom: 1px solid #ccc;
  z-index: 2; }}
#view {{ position: absolute; top: 32px; left: 0; right: 0; bottom: 0; cursor: grab; }}
#map {{ position: absolute; transform-origin: 0 0; }}
#map img {{ display: block; image-rendering: pixelated; }}
#map a {{ position: absolute; width: {thumb}px; height: {thumb}px; }}
#map a:hover {{ outline: 2px solid #1e5ac8; }}
</style></head>
<body><div id="bar">{title} — drag to pan, wheel to zoom, {hint} · <span id="name"></span></div>
<div id="view"><div id="map"><img src="data:image/png;base64,{data}"></div></div>
<script>
const items = {items};
const map = document.getElementById("map"), view = document.getElementById("view");
const name = document.getElementById("name");
for (const it of items) {{
  const a = document.createElement("a");
  a.href = it.h; a.target = "_blank"; a.title = it.p + " (id " + it.id + ")";
  a.style.left = it.x + "px"; a.style.top = it.y + "px";
  a.onmouseenter = () => {{ name.textContent = it.p + "  (id " + it.id + ")"; }};
  map.appendChild(a);
}}
let s = 1, tx = 0, ty = 0, drag = null, moved = false;
const apply = () => {{ map.style.transform = `translate(${{tx}}px,${{ty}}px) scale(${{s}})`; }};
view.addEventListener("wheel", e => {{
  e.preventDefault();
  const r = view.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
  const f = Math.exp(-e.deltaY * 0.0015), ns = Math.min(20, Math.max(0.05, s * f));
  tx = mx - (mx - tx) * ns / s; ty = my - (my - ty) * ns / s; s = ns; apply();
}}, {{ passive: false }});
view.addEventListener("mousedown", e => {{ drag = [e.clientX - tx, e.clientY - ty]; moved = false; }});
window.addEventListener("mousemove", e => {{
  if (!drag) return; moved = true; tx = e.clientX - drag[0]; ty = e.clientY - drag[1]; apply();
}});
window.addEventListener("mouseup", () => {{ drag = null; }});
map.addEventListener("click", e => {{ if (moved) e.preventDefault(); }}, true);
const img = map.querySelector("img");
img.onload = () => {{
  const r = view.getBoundingClientRect();
  s = Math.min(1, r.width / img.naturalWidth, r.height / img.naturalHeight); apply();
}};
</script></body></html>
"""

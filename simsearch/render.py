"""Results → what a person sees: a text table, JSON lines, a contact sheet PNG,
and progress bars on stderr (only when stderr is a terminal).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from .errors import printable
from .query import Hit


def shown_path(p: str | os.PathLike) -> str:
    """Relative to the working directory when below it, else absolute; the same str otherwise
    (a name that is not UTF-8 keeps its surrogate escapes: ``os.fsencode`` gives back its bytes)."""
    p = os.fspath(p)
    try:
        rel = os.path.relpath(p)
        if not rel.startswith(".."):
            p = rel
    except ValueError:
        pass
    return p


def display_path(p: str | os.PathLike) -> str:
    """:func:`shown_path` for people: bytes that are not UTF-8 shown as ``\\xff`` escapes."""
    return printable(shown_path(p))


def table(results: Sequence[tuple[str, list[Hit]]]) -> str:
    lines = []
    for qi, (label, hits) in enumerate(results):
        if qi:
            lines.append("")
        lines.append(f"query: {display_path(label)}")
        if not hits:
            lines.append("  (no results)")
            continue
        if any(h.pixel is not None for h in hits):  # the fine check found copies: say which, and how close
            lines.append(f"{'rank':>6}  {'score':>7}  {'copy':>6}  path")
            for h in hits:
                px = "" if h.pixel is None else f"{h.pixel:.3f}"
                lines.append(f"{h.rank:>6}  {h.score:>7.4f}  {px:>6}  {display_path(h.abspath)}")
            continue
        lines.append(f"{'rank':>6}  {'score':>7}  path")
        for h in hits:
            lines.append(f"{h.rank:>6}  {h.score:>7.4f}  {display_path(h.abspath)}")
    return "\n".join(lines)


def hit_json(h: Hit) -> dict[str, Any]:
    """One hit as ``simsearch query --json`` (and ``simsearch serve``'s API) writes it."""
    return {
        "rank": h.rank,
        "score": round(h.score, 6),
        "pixel": h.pixel,  # the fine check's pixel similarity when it found this hit a copy of the query, else null
        "id": h.id,
        "path": shown_path(h.abspath),
        "relpath": shown_path(h.path),
    }


def json_lines(results: Sequence[tuple[str, list[Hit]]]) -> str:
    """One JSON object per query. ASCII only: a path that is not UTF-8 keeps its surrogate
    escapes as ``\\udcff`` JSON escapes, so ``os.fsencode(json.loads(line)[...]["path"])``
    gives back the file name's bytes exactly."""
    out = []
    for label, hits in results:
        out.append(json.dumps({"query": shown_path(label), "hits": [hit_json(h) for h in hits]}))
    return "\n".join(out)


def kv_table(d: dict[str, Any]) -> str:
    width = max(len(k) for k in d) if d else 0
    return "\n".join(f"{k:<{width}}  {v}" for k, v in d.items())


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# ---------------------------------------------------------------- contact sheet


def contact_sheet(rows: Sequence[tuple[Any, str, list[Hit]]], out: str | os.PathLike, thumb: int = 112) -> Path:
    """One row per query: the query image, then its neighbours, each captioned with rank and score.

    ``rows``: (query source: path | bytes | PIL image | numpy array | None, label, hits).
    Every tile is drawn the way the model sees the image (:func:`preprocess.to_display`:
    EXIF-oriented, transparency composited onto white), scaled to fit the square
    tile with its aspect ratio kept and letterboxed on white.
    """
    from PIL import Image, ImageDraw

    cols = 1 + max((len(h) for _, _, h in rows), default=0)
    pad, cap = 8, 30
    W = pad + cols * (thumb + pad)
    H = pad + len(rows) * (thumb + cap + pad)
    sheet = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(sheet)

    for r, (src, label, hits) in enumerate(rows):
        y = pad + r * (thumb + cap + pad)
        x = pad
        sheet.paste(_tile(src, thumb), (x, y))
        draw.rectangle([x - 3, y - 3, x + thumb + 2, y + thumb + 2], outline=(30, 90, 200), width=3)
        draw.text((x, y + thumb + 4), "query", fill=(30, 90, 200))
        draw.text((x, y + thumb + 16), _short(Path(label).name, thumb), fill="black")
        for h in hits:
            x += thumb + pad
            sheet.paste(_tile(h.abspath, thumb), (x, y))
            caption = f"#{h.rank}  {h.score:.3f}" + ("  copy" if h.pixel is not None else "")
            draw.text((x, y + thumb + 4), caption, fill="black")
            draw.text(
                (x, y + thumb + 16),
                _short(Path(h.path).parent.name + "/" + Path(h.path).name, thumb),
                fill=(90, 90, 90),
            )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, out)
    return out


def strips_sheet(
    cells: Sequence[tuple[Sequence[Any], Sequence[str]]],
    out: str | os.PathLike,
    labels: Sequence[str] = (),
    thumb: int = 96,
    columns: int = 0,
    title: str = "",
) -> Path:
    """A sheet of cells, each a strip of images side by side (e.g. an image and its reconstruction)
    with caption lines under it; ``labels`` name the images of a strip (drawn above each), ``title``
    (wrapped) heads the sheet. Images: anything ``contact_sheet`` draws, and model-input arrays
    (C, H, W) uint8."""
    from PIL import Image, ImageDraw

    per = max((len(imgs) for imgs, _ in cells), default=1)
    columns = columns or max(1, min(len(cells), max(1, 6 // per)))
    rows = (len(cells) + columns - 1) // columns
    pad, gap, head = 10, 4, 14 if labels else 0
    lines = max((len(c) for _, c in cells), default=0)
    cw = per * thumb + (per - 1) * gap
    ch = head + thumb + 4 + 12 * lines
    width = pad + columns * (cw + 2 * pad)
    heading = wrap(title, width - 2 * pad) if title else []
    top = 14 * len(heading) + (8 if heading else 0)
    sheet = Image.new("RGB", (width, top + pad + rows * (ch + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, line in enumerate(heading):
        draw.text((pad, pad + 14 * k), line, fill="black")
    for i, (imgs, caption) in enumerate(cells):
        x0 = pad + (i % columns) * (cw + 2 * pad)
        y0 = top + pad + (i // columns) * (ch + pad)
        for j, img in enumerate(imgs):
            x = x0 + j * (thumb + gap)
            if labels and j < len(labels):
                draw.text((x, y0), _short(labels[j], thumb), fill=(30, 90, 200))
            sheet.paste(_tile(_chw_to_hwc(img), thumb), (x, y0 + head))
            draw.rectangle([x - 1, y0 + head - 1, x + thumb, y0 + head + thumb], outline=(200, 200, 200))
        for k, line in enumerate(caption):
            draw.text((x0, y0 + head + thumb + 4 + 12 * k), _short(line, cw), fill="black" if k == 0 else (90, 90, 90))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, out)
    return out


def _chw_to_hwc(src: Any) -> Any:
    """A model-input array (C, H, W) with C in 1 or 3 → (H, W[, 3]); anything else as it is."""
    if hasattr(src, "shape") and len(src.shape) == 3 and src.shape[0] in (1, 3) and src.shape[2] not in (1, 3, 4):
        import numpy as np

        a = np.asarray(src)
        return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    return src


def _tile(src: Any, thumb: int):
    """A ``thumb``×``thumb`` RGB tile: the image fitted inside, aspect kept, on white;
    a grey "unreadable" tile when it cannot be drawn."""
    from PIL import Image, ImageDraw

    from .decode import open_image
    from .preprocess import Preprocess, to_display

    try:
        if isinstance(src, Image.Image):
            img = to_display(src)
        elif src is not None and hasattr(src, "shape"):  # numpy array (or array-like with a shape)
            import numpy as np

            img = to_display(np.asarray(src))
        elif src is None:
            raise ValueError("no image")
        else:
            # draft: big JPEGs decode at reduced scale, still >= the tile (as load() does for the model)
            pre = Preprocess(thumb, 3) if 1 <= thumb <= 8192 else None
            img = to_display(open_image(src, pre=pre))
        w, h = img.size
        scale = thumb / max(w, h)
        size = (min(thumb, max(1, round(w * scale))), min(thumb, max(1, round(h * scale))))
        if size != (w, h):
            small = max(w, h) < thumb // 2  # upscale tiny images (e.g. 28 px) as crisp pixels
            resample = Image.Resampling.NEAREST if small else Image.Resampling.BILINEAR
            img = img.resize(size, resample, reducing_gap=None if small else 3.0)
    except Exception:  # noqa: BLE001 -- one bad image is drawn as "unreadable", never fails the sheet
        img = Image.new("RGB", (thumb, thumb), (230, 230, 230))
        ImageDraw.Draw(img).text((6, thumb // 2 - 6), "unreadable", fill="red")
    box = Image.new("RGB", (thumb, thumb), "white")
    box.paste(img, ((thumb - img.width) // 2, (thumb - img.height) // 2))
    return box


def wrap(text: str, px: int) -> list[str]:
    """``text`` broken into lines of about ``px`` pixels of the default font."""
    import textwrap

    return textwrap.wrap(printable(text), max(10, px // 6))


def tile(src: Any, thumb: int):
    """Public form of the contact sheet's tile: ``src`` fitted into a ``thumb``-px white square."""
    return _tile(_chw_to_hwc(src), thumb)


def shorten(s: str, px: int) -> str:
    """``s`` printable and cut to about ``px`` pixels of the default font."""
    return _short(s, px)


def _short(s: str, px: int) -> str:
    n = max(4, px // 6)
    s = printable(s)
    return s if len(s) <= n else s[: n - 1] + "…"


# ---------------------------------------------------------------- progress


class ProgressBars:
    """A ``progress(stage, done, total, **info)`` callback drawing tqdm bars on stderr.

    Draws nothing unless stderr is a terminal (logs and pipes stay clean).
    """

    LABELS: ClassVar[dict[str, str | None]] = {"decode": "decode", "train": "train", "embed": "embed", "epoch": None}

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int, **info) -> None:
        if not self.enabled or self.LABELS.get(stage, stage) is None:
            return
        from tqdm import tqdm

        key = stage if stage != "train" else f"train-{info.get('epoch', 0)}"
        bar = self.bars.get(key)
        if bar is None:
            self.close()
            desc = f"epoch {info['epoch']}" if stage == "train" else stage
            bar = self.bars[key] = tqdm(
                total=total,
                desc=desc,
                unit="batch" if stage == "train" else "img",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )
        bar.n = done
        if "loss" in info:
            bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)
        bar.refresh()
        if done >= total:
            bar.close()
            del self.bars[key]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

"""Synthetic test data, generated, never downloaded: images of three visually distinct classes
(discs, squares, horizontal stripes) with random position, size and noise, so a trained model
has something real to find; and index snapshots of random vectors (``make_snapshot``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("disc", "square", "stripes")


def make_image(kind: str, rng: np.random.Generator, size: int = 32, rgb: bool = False) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size]
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    r = rng.uniform(0.18, 0.3) * size
    if kind == "disc":
        m = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
    elif kind == "square":
        m = (abs(xx - cx) < r) & (abs(yy - cy) < r)
    else:
        period = rng.integers(4, 7)
        m = ((yy + rng.integers(0, period)) // (period // 2)) % 2 == 0
    img = m * rng.uniform(170, 255) + rng.normal(0, 12, (size, size))
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rgb:
        tint = rng.uniform(0.6, 1.0, 3)
        return Image.fromarray((img[..., None] * tint).astype(np.uint8), "RGB")
    return Image.fromarray(img, "L")


def write_corpus(root: Path, per_class: int = 20, seed: int = 0, size: int = 32, rgb: bool = False) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            p = root / kind / f"{kind}_{i:03d}.png"
            make_image(kind, rng, size, rgb).save(p)
            paths.append(p)
    return paths


# tiny model, one short epoch: enough to exercise every stage in a second or two
FAST = dict(max_epochs=2, time_budget=20, width=8, depth=0, batch_size=32, workers=1)


FAST_CLI = [
    "--epochs",
    "2",
    "--time-budget",
    "20",
    "--width",
    "8",
    "--depth",
    "0",
    "--batch-size",
    "32",
    "--workers",
    "1",
]


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    """An image's file bytes in ``fmt``."""
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def write(path: Path, img: Image.Image, fmt: str = "PNG", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(img, fmt, **kw))
    return path


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    """Seeded random RGB pixels."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def copy_checked_in_index(data: Path, dest: Path) -> Path:
    """A writable copy of a checked-in index (``data/index``) and its corpus (``data/corpus``) under
    ``dest``, the index pointed at the copied corpus; → the index directory."""
    import json
    import shutil

    from simsearch import store

    shutil.copytree(data / "corpus", dest / "corpus")
    shutil.copytree(data / "index", dest / "index")
    gen = store.current_generation(dest / "index")
    assert gen is not None
    meta = json.loads((gen / "meta.json").read_text())
    meta["corpus_root"] = str((dest / "corpus").resolve())
    (gen / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return dest / "index"


def make_snapshot(n=200, d=16, seed=0):
    """A store.Snapshot of ``n`` random ``d``-dim vectors with non-contiguous ids, a flat FAISS spec
    and one skipped file, ready for store.write (which builds and tunes its FAISS index)."""
    from simsearch.meta import EmbeddingRecord, FaissRecord, IndexMeta, ModelRecord, PostRecord, SearchRecord
    from simsearch.postprocess import PostProcess
    from simsearch.store import Entry, Snapshot

    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, d)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) * 3 + 5  # stable ids need not be contiguous
    entries = [Entry(int(i), f"dir/img_{i}.png", 100 + int(i), 10**9 * int(i), f"{int(i):064x}") for i in ids]
    meta = IndexMeta(
        corpus_root="/nowhere",
        preprocess={"size": 28, "channels": 1, "fit": "center-crop"},
        model=ModelRecord(sha256="0" * 64, config={}),
        embedding=EmbeddingRecord(dim=d),
        post=PostRecord(sha256="", config={}),
        search=SearchRecord(dim=d),
        faiss=FaissRecord(factory="IDMap2,Flat", type="flat"),
        next_id=int(ids.max()) + 1,
    )
    return Snapshot(
        meta=meta,
        ids=ids,
        vectors=vecs,
        entries=entries,
        skipped=[{"path": "bad.png", "reason": "empty file"}],
        post=PostProcess.centring_only(vecs.mean(0)),
    )


def picture(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A distinct clip-art-like picture: a few coloured shapes on a transparent background."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 5))):
        x0, y0 = rng.uniform(0, 0.6, 2) * (w, h)
        x1, y1 = x0 + rng.uniform(0.2, 0.4) * w, y0 + rng.uniform(0.2, 0.4) * h
        colour = tuple(int(c) for c in rng.integers(0, 230, 3)) + (255,)
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x1, y1], fill=colour)
    return img


def write_pictures(root: Path, n: int = 40, seed: int = 3) -> list[Path]:
    """``n`` distinct ``picture``s of several sizes and aspects as PNG files: a folder where each image is its own
    kind, so a copy of one is far closer to it than to any other (the pixel check calibrates itself on)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = int(rng.integers(60, 160)), int(rng.integers(60, 160))
        paths.append(root / f"pic_{i:03d}.png")
        picture(rng, w, h).save(paths[-1])
    return paths

"""Row 4: warm library query latency (``Index.query`` / ``Index.query_batch``) on the train+test gallery."""

from __future__ import annotations

import numpy as np

from .common import Timing, faster, fmt, log, ms, row, timeit
from .context import Ctx


def row_query(ctx: Ctx) -> list[dict]:
    import simsearch

    g = ctx.gallery()
    rep = g["report"]
    t = rep.timings
    rows = [
        row(
            "4",
            f"build the gallery index ({rep.total} images: {g['root'].name}/, existing model via --model)",
            g["wall"],
            "s",
            notes="stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in t.items()) + "; n=1",
        )
    ]
    index = simsearch.Index.open(g["dir"])
    n_single, n_batches, k = ctx.a.single, ctx.a.batches, 10
    need = max(n_single, 100 * min(n_batches, 10))
    rng = np.random.default_rng(0)
    ids = [int(x) for x in rng.choice(index.ids(), min(need, len(index)), replace=False)]
    root, paths = index.root, index.paths()
    by_path = [root / paths[i] for i in rng.choice(len(paths), min(need, len(paths)), replace=False)]
    pil = ctx.new_images(min(need, 1000))
    kinds = [
        ("indexed id", ids, "stored vector, no encoding"),
        ("indexed path", by_path, "stat + stored vector, no encoding"),
        ("new image (PIL, mirrored test image)", pil, "preprocess + encode: " + query_encoder(index, 1)),
    ]
    for item in (ids[0], by_path[0], pil[0]):  # load the model, page in the index
        index.query(item, k=k)
    log(f"row 4: {n_single} single queries and {n_batches} batches of 100, per kind, on {len(index)} images")
    by_id: Timing | None = None  # the cheapest kind: the comparison for the others
    for name, items, note in kinds:
        single = timeit(lambda i, items=items: index.query(items[i % len(items)], k=k), n_single)
        batch = timeit(lambda i, items=items: index.query_batch(window(items, i, 100), k=k), n_batches)
        vs, ratio = ("", None) if by_id is None else ("by indexed id", faster(single.median, by_id.median))
        rows.append(
            row(
                "4",
                f"Index.query by {name}, k={k}",
                single.median * 1e3,
                "ms p50",
                vs,
                ratio,
                f"p99 {ms(single.p99)}, n={single.n}; {note}",
            )
        )
        by_id = by_id or single
        rows.append(
            row(
                "4",
                f"Index.query_batch of 100 by {name}",
                batch.median * 1e3,
                "ms p50 / batch",
                "100 single queries",
                faster(batch.median, 100 * single.median),
                f"{fmt(batch.median * 1e3 / 100)} ms/query; p99 {ms(batch.p99)}, n={batch.n}"
                + (f"; encode: {query_encoder(index, 100)}" if items is pil else ""),
            )
        )
    faiss_kind = index.meta.faiss.factory
    rows[0]["notes"] += f"; FAISS {faiss_kind}; device {index.device}"
    ctx.results["warm_query"] = {name: r["value"] for (name, _, _), r in zip(kinds, rows[1::2])}
    return rows


def query_encoder(index, batch: int) -> str:
    """Which encoder ``Index`` uses for a query batch of this size (numpy for small CPU batches, else torch)."""
    try:
        numpy_ok = (
            index.device in ("auto", "cpu") and batch <= index.NUMPY_MAX_BATCH and index.numpy_encoder() is not None
        )
    except Exception:
        numpy_ok = False
    return "numpy encoder" if numpy_ok else f"torch (device {index.device})"


def window(items: list, i: int, size: int) -> list:
    start = (i * size) % len(items)
    out = items[start : start + size]
    while len(out) < size:
        out += items[: size - len(out)]
    return out

"""Row 3: end-to-end ``indexer.update`` of the Fashion-MNIST train folder by stage, then an unchanged re-run."""

from __future__ import annotations

from .common import faster, fmt, log, row, timeit
from .context import Ctx


def row_index(ctx: Ctx) -> list[dict]:
    from simsearch import indexer

    built = ctx.train_index()
    rep, wall, corpus = built["report"], built["wall"], built["corpus"]
    n = rep.added
    t = rep.timings
    trained = rep.trained or {}
    budget = built["options"].time_budget
    if budget is None:
        from simsearch.settings import TrainConfig

        budget = TrainConfig().time_budget
    key = "3"
    rows = [
        row(
            key,
            f"simsearch index {corpus.train.name}/ ({n} images, {corpus.label}): total wall",
            wall,
            "s",
            notes=f"library indexer.update, default options"
            f"{'' if ctx.a.train_budget is None else f' except time_budget={ctx.a.train_budget:g}'}; "
            f"{len(rep.skipped)} skipped; n=1",
        )
    ]
    stage_notes = {
        "decode": lambda s: f"{n / s:,.0f} images/s" if s else "",
        "train": lambda s: (
            f"{trained.get('epochs')} epochs, stopped by {trained.get('stopped_by')}, objective "
            f"{trained.get('objective')}; time budget {fmt(budget)} s, "
            f"training loop {fmt(trained.get('seconds'))} s"
        ),
        "embed": lambda s: f"{n / s:,.0f} images/s" if s else "",
        "write": lambda s: "mean, FAISS build (+ tune if ivf/hnsw), manifest, fsync, atomic switch",
    }
    for stage in ("discover", "decode", "train", "embed", "write"):
        s = t.get(stage)
        if s is None:
            continue
        note = stage_notes.get(stage, lambda s: "")(s)
        share = f"{100 * s / wall:.0f}% of total"
        rows.append(row(key, f"  ↳ {stage}", s, "s", notes=share + (f"; {note}" if note else "")))
    other = wall - sum(t.values())
    rows.append(
        row(
            key,
            "  ↳ other (probe, model choice/save, diff, …)",
            other,
            "s",
            notes=f"{100 * other / wall:.0f}% of total",
        )
    )

    log(f"row 3: unchanged re-run ({ctx.a.reps} reps)")
    reports = []
    nop = timeit(lambda i: reports.append(indexer.update(corpus.train, built["dir"], built["options"])), ctx.a.reps)
    last = reports[-1]
    verdict = (
        "nothing written"
        if (last.added, last.updated, last.removed) == (0, 0, 0)
        else f"NOT a no-op: added {last.added}, updated {last.updated}, removed {last.removed}"
    )
    stages = ", ".join(f"{k} {v:.2f}" for k, v in last.timings.items())
    rows.append(
        row(
            key,
            "second, unchanged run (incremental no-op)",
            nop.median,
            "s",
            "first run",
            faster(nop.median, wall),
            f"{verdict}; stages (s): {stages}; median of {nop.n}",
        )
    )
    return rows

"""The ``simsearch`` command: parse arguments, call the library, render results.

No logic lives here. Heavy modules (torch, faiss, the pipeline) are imported
inside the commands, so ``simsearch --help`` stays instant.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback

import click

from . import __version__
from .constants import AUTO_FLAT_MAX, AUTO_SHARDED_MIN, COPY_STRENGTHS, FITS, INDEX_TYPES, OBJECTIVES, PRECISIONS
from .errors import SimsearchError, printable

INDEX_HELP = "Index directory (default: $SIMSEARCH_INDEX or indexes/default)."


class _Group(click.Group):
    """Turns every library error into one line on stderr and exit code 1 (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SimsearchError as e:
            raise click.ClickException(_printable(str(e))) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # a bug: still one line unless asked for the traceback
            if (ctx.obj or {}).get("verbose") or os.environ.get("SIMSEARCH_DEBUG"):
                traceback.print_exc()
            raise click.ClickException(
                _printable(f"unexpected {type(e).__name__}: {e} (run with -v for the traceback; please report it)")
            ) from None


def _printable(msg: str) -> str:
    """One line, printable on any terminal (non-UTF-8 file names become \\x escapes)."""
    return printable(" ".join(msg.splitlines()))


def _common(f):
    """-q/-v on every command."""

    @click.option("-q", "--quiet", is_flag=True, help="Print only results and errors.")
    @click.option("-v", "--verbose", is_flag=True, help="Print more detail (and tracebacks on bugs).")
    @click.pass_context
    @functools.wraps(f)
    def wrapper(ctx, quiet, verbose, *args, **kwargs):
        ctx.ensure_object(dict)
        ctx.obj["quiet"] = quiet or ctx.obj.get("quiet", False)
        ctx.obj["verbose"] = verbose or ctx.obj.get("verbose", False)
        _library_log(ctx.obj["quiet"], ctx.obj["verbose"])
        return f(*args, **kwargs)

    return wrapper


class _ToStderr(logging.Handler):
    """The library's log records as lines on whatever sys.stderr is when one is logged (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(_printable(self.format(record)), err=True)


def _library_log(quiet: bool, verbose: bool) -> None:
    """The library's log lines (``logging.getLogger("simsearch…")``, e.g. what a Ray run did) on stderr:
    warnings by default, also its info lines with -v, only errors with -q."""
    log = logging.getLogger("simsearch")
    if not any(isinstance(h, _ToStderr) for h in log.handlers):
        log.addHandler(_ToStderr())  # (records still propagate: a root handler, as pytest's, sees them too)
    log.setLevel(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)


def _say(msg: str) -> None:
    """Status line on stderr unless --quiet."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or not (ctx.obj or {}).get("quiet"):
        click.echo(_printable(msg), err=True)


def _verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and (ctx.obj or {}).get("verbose"))


def _progress():
    from .render import ProgressBars

    ctx = click.get_current_context(silent=True)
    return ProgressBars(enabled=None if not (ctx and (ctx.obj or {}).get("quiet")) else False)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="simsearch")
def cli():
    """simsearch — find images that look alike.

    Trains a convolutional autoencoder on your own images (no labels),
    embeds every image, and answers "more like this one" with a FAISS
    cosine-similarity index.

    \b
    Example:
      simsearch index ./images
      simsearch query ./images/shoes/boot.png -k 5
    """


# ------------------------------------------------------------------ index


def _build_options(**kw):
    from .indexer import BuildOptions

    return BuildOptions.of(**{k: v for k, v in kw.items() if v is not None})


_train_options = [
    click.option(
        "--objective",
        type=click.Choice(OBJECTIVES),
        help="Training objective (default dae: denoising AE trained on copy-like edits, with an invariance term).",
    ),
    click.option("--dim", type=click.IntRange(2, 4096), default=None, help="Embedding size (default 128)."),
    click.option(
        "--size", type=click.IntRange(8, 1024), default=None, help="Model input side in px (default: from the corpus)."
    ),
    click.option(
        "--fit",
        type=click.Choice(FITS),
        default=None,
        help="How a non-square image becomes square: center-crop (default), pad (letterbox on white), stretch, "
        "or trim (cut a plain margin to the square around the drawing, then center-crop).",
    ),
    click.option(
        "--channels",
        type=click.Choice(["1", "3"]),
        default=None,
        help="1 = grayscale, 3 = RGB (default: from the corpus).",
    ),
    click.option(
        "--epochs",
        "max_epochs",
        type=click.IntRange(1),
        default=None,
        help="Training epoch cap (default: 40, raised for a small folder to reach 2,000 steps).",
    ),
    click.option(
        "--time-budget", type=click.FloatRange(0), default=None, help="Training time limit in seconds (0 = none)."
    ),
    click.option(
        "--width", type=click.IntRange(4, 256), default=None, help="Model width: channels of the first conv stage."
    ),
    click.option("--depth", type=click.IntRange(0, 4), default=None, help="Extra conv blocks per stage (0 = fastest)."),
    click.option(
        "--train-sample",
        type=click.IntRange(0),
        default=None,
        help="Train on at most N images, a uniform random sample (seeded by --seed) of the folder "
        "(default 100,000 and at most 2 GiB of decoded pixels; 0 = every image).",
    ),
    click.option("--batch-size", type=click.IntRange(2), default=None, help="Training / embedding batch size."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps."),
    click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default=None,
        help="Arithmetic of training (default auto: bf16 mixed precision on a GPU and on a CPU with "
        "bf16 instructions, 1.4-1.8x faster there; else fp32).",
    ),
    click.option(
        "--workers",
        type=click.IntRange(0),
        default=0,
        help="Decode processes (0 = one per core); with --ray, embedding actors "
        "(0 = one per GPU, else one per CPU less one).",
    ),
    click.option("--seed", type=int, default=0, show_default=True),
]


def _with(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=str))
@click.option("--index", "index_path", type=click.Path(file_okay=False), help=INDEX_HELP)
@click.option(
    "--model",
    type=click.Path(dir_okay=False),
    help="Use this saved model (from `simsearch train`) instead of training.",
)
@click.option("--retrain", is_flag=True, help="Train a new model even if the index has one (re-embeds everything).")
@click.option("--rebuild", is_flag=True, help="Ignore the existing index and build it again from scratch.")
@click.option("--wait", is_flag=True, help="Wait for another process writing this index instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout.")
@click.option(
    "--index-type",
    type=click.Choice(INDEX_TYPES),
    default=None,
    help=f"FAISS index: {', '.join(INDEX_TYPES)} (auto: exact below {AUTO_FLAT_MAX // 1000}k images, "
    f"sharded from {AUTO_SHARDED_MIN // 1_000_000}M, else IVF; "
    "sharded: IVF-SQ8 shards with a delta shard for updates). Default: keep the index's.",
)
@click.option(
    "--shards",
    type=click.IntRange(1, 4096),
    default=None,
    help="Main shards of a sharded index (default: one per million images); applied at its next build or compaction.",
)
@click.option(
    "--tta/--no-tta",
    default=None,
    help="Embed each image as the mean over it and its 4 one-pixel shifts (better neighbours, "
    "5x embedding work). Default: on for a new index, else keep the index's.",
)
@click.option(
    "--ray",
    "use_ray",
    is_flag=True,
    help="Decode and embed on a Ray cluster (pip install 'simsearch[ray]'): a local one, or the one at "
    "--ray-address / RAY_ADDRESS. Every node must see FOLDER at the same path. Training stays on this machine.",
)
@click.option(
    "--ray-address",
    metavar="ADDR",
    default=None,
    help="The Ray cluster to join (e.g. HEAD:6379 from `ray start --head`, or auto); implies --ray.",
)
@click.option(
    "--build-budget",
    type=click.FloatRange(0),
    default=None,
    metavar="SECONDS",
    help="When a model is trained, aim to finish the whole build within SECONDS: training is cut short by the "
    "embedding and fitting still to come, estimated on this machine (default 570; 0 = off; off when "
    "--time-budget is given).",
)
@_with(_train_options)
@_common
def index(
    folder,
    index_path,
    model,
    retrain,
    rebuild,
    wait,
    as_json,
    index_type,
    shards,
    tta,
    build_budget,
    channels,
    use_ray,
    ray_address,
    **train_kw,
):
    """Index every image under FOLDER (train a model first if the index has none).

    Re-running updates the index incrementally: only new or changed files
    are embedded and deleted files are removed; the model is kept.

    \b
    Example:
      simsearch index ./photos --index indexes/photos
      simsearch index ./photos --index indexes/photos      # later: only the changes
      simsearch index /shared/photos --ray --ray-address head:6379   # embed on a Ray cluster
    """
    from . import indexer, store
    from .render import human_bytes

    if not os.path.isdir(folder):
        raise SimsearchError(f"{folder}: not a directory" if os.path.exists(folder) else f"{folder}: no such folder")
    opts = _build_options(
        model=model,
        retrain=retrain,
        rebuild=rebuild,
        wait=wait,
        index_type=index_type,
        shards=shards,
        tta=tta,
        channels=int(channels) if channels else None,
        ray=True if use_ray or ray_address else None,
        ray_address=ray_address,
        build_budget=build_budget,
        **train_kw,
    )
    bars = _progress()
    index_path = str(store.index_path(index_path))
    try:
        report = indexer.update(folder, index_path, opts, bars, log=_say if _verbose() else _skip_logger())
    finally:
        bars.close()
    if as_json:
        import json

        click.echo(json.dumps(report.to_dict(), default=str))
        return
    if report.trained:
        t = report.trained
        _say(
            f"trained {t['objective']} model: {t['epochs']} epochs in {t['seconds']:.0f}s "
            f"({t['precision']}, stopped by {t['stopped_by']})"
        )
    _say(
        f"indexed {report.total} images into {index_path}: "
        f"added {report.added} / updated {report.updated} / removed {report.removed} / "
        f"unchanged {report.unchanged} / skipped {len(report.skipped)}"
    )
    if report.skipped and not _verbose():
        _say(f"  skipped files are listed by `simsearch info --skipped --index {index_path}`")
    if report.faiss and report.faiss.get("type") != "flat":
        f = report.faiss
        _say(
            f"  FAISS {f['factory']} {f.get('params', {})}: recall@10 vs exact search {f.get('recall_at_10')}"
            f" (measured on {f.get('recall_sample')} sample queries)"
        )
    timings = "  ".join(f"{k} {v:.1f}s" for k, v in report.timings.items())
    _say(f"  time: {timings}  ({human_bytes(store.disk_usage(__import__('pathlib').Path(index_path)))} on disk)")


def _skip_logger():
    """Print skip reasons (one line each, up to 20), then only count them."""
    state = {"n": 0}

    def log(msg: str) -> None:
        if msg.startswith("skipped"):
            state["n"] += 1
            if state["n"] <= 20:
                _say(msg)
            elif state["n"] == 21:
                _say("… more skipped files (see `simsearch info --skipped`)")
        else:
            _say(msg)

    return log


# ------------------------------------------------------------------ train


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Where to save the model file.")
@_with(_train_options)
@_common
def train(folder, out, channels, **train_kw):
    """Train a reusable model on the images under FOLDER and save it to --out.

    \b
    Example:
      simsearch train ./photos -o photos-model.pt --time-budget 600
      simsearch index ./photos --model photos-model.pt
    """
    from . import indexer

    if not os.path.isdir(folder):
        raise SimsearchError(f"{folder}: no such folder")
    bars = _progress()
    try:
        res = indexer.train_model(
            folder,
            out,
            _build_options(channels=int(channels) if channels else None, **train_kw),
            bars,
            log=_skip_logger(),
        )
    finally:
        bars.close()
    _say(
        f"trained {res['objective']} model on {res['images']} images ({res['input']}): "
        f"{res['epochs']} epochs in {res['seconds']:.0f}s ({res['precision']}, stopped by {res['stopped_by']})"
    )
    click.echo(printable(f"{out}  sha256:{res['sha256'][:16]}"))


# ------------------------------------------------------------------ query


@cli.command()
@click.argument("images", nargs=-1, required=True)
@click.option("-k", "k", type=int, default=5, show_default=True, help="Number of neighbours.")
@click.option("--index", "index_path", type=click.Path(file_okay=False), help=INDEX_HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout: one object per query.")
@click.option(
    "--grid", type=click.Path(dir_okay=False), help="Also write a contact sheet PNG of queries and neighbours."
)
@click.option(
    "--indexed", is_flag=True, help="IMAGES are ids or paths (relative to the indexed folder) already in the index."
)
@click.option("--include-self", is_flag=True, help="Keep an indexed query image in its own results.")
@click.option(
    "--no-pixel-check",
    is_flag=True,
    help="Rank by score alone: skip comparing a new image's first hits with it pixel by pixel.",
)
@click.option("--model", type=click.Path(dir_okay=False), help="Fail unless the index was built with this model file.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@_common
def query(images, k, index_path, as_json, grid, indexed, include_self, no_pixel_check, model, device):
    """Print the nearest neighbours of each of IMAGES (path, score).

    Several images are embedded in one batch. An image that is already in
    the index reuses its stored vector and is left out of its own results.
    Where the index's calibration turned the pixel check on (`simsearch info`
    says), a new image's first 10 hits are compared with it pixel by pixel:
    the ones that are copies of it (resized, re-saved, cropped a little) come
    first, marked in the "copy" column with how closely their pixels match.

    \b
    Example:
      simsearch query jeans.png -k 10
      simsearch query a.png b.png --json | jq .hits[0].path
      simsearch query --indexed train/trouser/00016.png --grid sheet.png
    """
    from .api import Index
    from .render import contact_sheet, json_lines, table

    if k <= 0:
        raise click.BadParameter(f"must be a positive number, got {k}", param_hint="'-k'")
    idx = Index.open(index_path, model=model, device=device)
    if len(idx) == 0:
        raise SimsearchError(f"{idx.path}: the index is empty")
    items = [idx.indexed_item(x) for x in images] if indexed else list(images)
    results = idx.query_batch(items, k=k, include_self=include_self, pixel_check=not no_pixel_check)
    labelled = list(zip(images, results))
    click.echo(json_lines(labelled) if as_json else table(labelled))
    if grid:
        sources = [idx.source_of(it) for it in items]
        path = contact_sheet([(s, lbl, hits) for s, (lbl, hits) in zip(sources, labelled)], grid)
        _say(f"wrote contact sheet {path}")


# ------------------------------------------------------------------ info


@cli.command()
@click.option("--index", "index_path", type=click.Path(file_okay=False), help=INDEX_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--skipped", is_flag=True, help="List the files that could not be indexed, with reasons.")
@_common
def info(index_path, as_json, skipped):
    """Show what an index holds: images, model, input size, format, size on disk.

    \b
    Example:
      simsearch info --index indexes/photos
    """
    import json

    from .api import Index
    from .render import human_bytes, kv_table

    idx = Index.open(index_path)
    if skipped:
        rows = idx.skipped()
        if as_json:
            click.echo("\n".join(json.dumps(r) for r in rows))  # ASCII: odd bytes as \udcXX escapes
        else:
            click.echo(printable("\n".join(f"{r['path']}: {r['reason']}" for r in rows)) or "(no skipped files)")
        return
    d = idx.info()
    if as_json:
        click.echo(json.dumps(d))
        return
    d = dict(d)
    d["disk"] = human_bytes(d.pop("disk_bytes"))
    d["model_sha256"] = d["model_sha256"][:16]
    d.pop("preprocess")
    click.echo(printable(kv_table(d)))


# ------------------------------------------------------------------ eval


@cli.command(name="eval")
@click.option("--index", "index_path", type=click.Path(file_okay=False), help=INDEX_HELP)
@click.option(
    "--queries",
    type=click.Path(exists=True, file_okay=False),
    help="Labelled query images (label = parent folder name).",
)
@click.option(
    "--gallery",
    type=click.Path(exists=True, file_okay=False),
    help="Labelled gallery to search (default: the index's own images).",
)
@click.option(
    "--split",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Without --queries: this random fraction of the gallery queries the rest (default 0.1).",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Use at most this many queries (random sample).")
@click.option("-k", "ks", multiple=True, type=click.IntRange(1), help="Cut-offs for P@k / R@k (default 1, 10, 100).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option(
    "--copies",
    type=click.IntRange(1),
    default=None,
    help="No labels needed: make transformed copies of this many indexed images and query with them.",
)
@click.option(
    "--strength",
    type=click.Choice(COPY_STRENGTHS),
    default="default",
    show_default=True,
    help="With --copies: how hard the copies are edited.",
)
@click.option(
    "--no-pixel-check", is_flag=True, help="With --copies: rank by score alone (as `query --no-pixel-check`)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@_common
def eval_(index_path, queries, gallery, split, limit, ks, seed, device, copies, strength, no_pixel_check, as_json):
    """Measure retrieval quality on labelled images: P@k, R@k and mAP.

    The label of an image is the name of its parent folder. Each query
    ranks the whole gallery by cosine similarity; mAP counts every relevant
    image. Labels are only used here, never for training or search.

    With --copies N, no labels are needed: N indexed images are copied in
    memory (resized, cropped, stretched, rotated, padded, lighter or darker,
    re-saved as JPEG), each copy queries the index, and R@1 / R@5 say how
    often the original comes first / in the top 5, next to 32×32 thumbnails.

    \b
    Example:
      simsearch eval --index indexes/fashion-mnist --queries data/fashion-mnist/test
      simsearch eval --index indexes/photos --split 0.1
      simsearch eval --index indexes/photos --copies 200
    """
    import json

    from .api import Index
    from .evaluate import DEFAULT_KS, evaluate_copies, evaluate_index
    from .render import kv_table

    if queries and split:
        raise click.UsageError("--split is for evaluating without --queries; pass one or the other")
    if copies and (queries or split or gallery):
        raise click.UsageError("--copies needs no labelled folders: leave out --queries, --gallery and --split")
    idx = Index.open(index_path, device=device)
    bars = _progress()
    try:
        if copies:
            res = evaluate_copies(idx, copies, strength, seed, progress=bars, pixel_check=not no_pixel_check)
        else:
            res = evaluate_index(idx, queries, gallery, split, seed, ks or DEFAULT_KS, limit, progress=bars)
    except ValueError as e:
        raise SimsearchError(str(e)) from None
    finally:
        bars.close()
    if as_json:
        click.echo(json.dumps(res))
        return
    click.echo(kv_table({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in res.items()}))


# ------------------------------------------------------------------ verify


@cli.command()
@click.option("--index", "index_path", type=click.Path(file_okay=False), help=INDEX_HELP)
@click.option("--no-files", is_flag=True, help="Do not check that the indexed image files still exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_common
def verify(index_path, no_files, as_json):
    """Check an index: checksums, manifest ↔ FAISS consistency, model hash, files.

    Exits 1 if the index is damaged (warnings, such as files changed since
    indexing, do not fail).

    \b
    Example:
      simsearch verify --index indexes/photos
    """
    import json

    from . import store
    from .verify import verify as run_verify

    summary, problems = run_verify(store.index_path(index_path), check_files=not no_files)
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        click.echo(json.dumps({**summary, "ok": not errors, "problems": [p.__dict__ for p in problems]}))
    else:
        for p in problems:
            click.echo(printable(str(p)), err=True)
        if not errors:
            click.echo(
                printable(f"ok: {summary['index']} ({summary.get('images', 0)} images, {summary.get('generation')})")
            )
    if errors:
        raise SimsearchError(f"{summary['index']}: {len(errors)} problem(s) found")


# ------------------------------------------------------------------ corpus tools: dupes, outliers, map, reconstruct


def _one_format(**flags) -> str | None:
    chosen = [name for name, on in flags.items() if on]
    if len(chosen) > 1:
        raise click.UsageError(f"choose one of {', '.join('--' + c.replace('_', '-') for c in chosen)}")
    return chosen[0] if chosen else None


def _csv(rows: list[list]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in rows:
        w.writerow(r)
    return buf.getvalue().rstrip("\n")


@cli.command()
@click.option("--index", "index_path", type=click.Path(file_okay=False), help=INDEX_HELP)
@click.option(
    "--threshold",
    type=click.FloatRange(-1.0, 1.0),
    default=None,
    help="Cosine at or above which two images are duplicates (default: calibrated on copies of your images).",
)
@click.option(
    "--calibrate",
    "calibrate_n",
    type=click.IntRange(2),
    default=200,
    show_default=True,
    help="How many of your images to copy for the calibration.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout: threshold, calibration, groups.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout: one row per image in a group.")
@click.option("--paths-only", is_flag=True, help="Print only the paths of the images not kept, one per line.")
@click.option("--sheet", type=click.Path(file_okay=False), help="Write a contact sheet PNG per group into this folder.")
@click.option(
    "--move-to",
    type=click.Path(file_okay=False),
    help="Move every image not kept into this folder (same relative paths). Nothing is moved without it.",
)
@click.option("--dry-run", is_flag=True, help="With --move-to: print the moves, move nothing.")
@click.option(
    "--no-verify",
    is_flag=True,
    help="Skip the pixel check of each pair (faster; recoloured or altered variants then count as duplicates).",
)
@_common
def dupes(index_path, threshold, calibrate_n, as_json, as_csv, paths_only, sheet, move_to, dry_run, no_verify):
    """Find exact and near-duplicate images in the index.

    Groups images whose similarity reaches a threshold that is calibrated, by default, on
    resized, re-compressed and cropped copies of your own images, and whose pixels then pass a
    check (aligned colour thumbnails, its threshold calibrated on the same copies) that tells a
    copy from a recoloured or altered variant; both thresholds and why are always printed. In
    each group the image to keep is the one with the most pixels, then the
    largest file, then the oldest. Nothing is deleted; --move-to moves the others (never the
    kept image), --dry-run only shows what it would move.

    \b
    Example:
      simsearch dupes
      simsearch dupes --json > dupes.json
      simsearch dupes --sheet dupes/ --move-to ../duplicates --dry-run
    """
    fmt = _one_format(json=as_json, csv=as_csv, paths_only=paths_only)
    if dry_run and not move_to:
        raise click.UsageError("--dry-run needs --move-to (nothing is ever moved without it)")
    from . import dupes as dupes_mod
    from .api import Index

    idx = Index.open(index_path)
    if len(idx) == 0:
        raise SimsearchError(f"{idx.path}: the index is empty")
    if move_to:
        dupes_mod.check_destination(idx.root, move_to)  # before any work
    res = dupes_mod.find(idx, threshold, calibrate_n, verify=not no_verify)
    click.echo(_printable(res.calibration.why()), err=True)
    root = idx.root
    if fmt == "json":
        import json

        doc = {
            "threshold": res.calibration.threshold,
            "calibration": res.calibration.to_dict(),
            "images": res.images,
            "groups": [g.to_dict(root) for g in res.groups],
        }
        click.echo(json.dumps(doc, indent=1, ensure_ascii=True))
    elif fmt == "csv":
        rows = [
            [
                "group",
                "role",
                "id",
                "path",
                "similarity",
                "pixel_similarity",
                "pixels",
                "bytes",
                "exact",
                "weakest_similarity",
            ]
        ]
        for n, g in enumerate(res.groups, 1):
            for m in g.members:
                role = "keep" if m is g.keeper else "duplicate"
                rows.append(
                    [
                        n,
                        role,
                        m.id,
                        printable(str(root / m.path)),
                        m.similarity,
                        "" if m.pixel_similarity is None else m.pixel_similarity,
                        m.pixels,
                        m.size,
                        int(g.exact),
                        g.weakest[2],
                    ]
                )
        click.echo(_csv(rows))
    elif fmt == "paths_only":
        for g in res.groups:
            for m in g.others:
                click.echo(printable(str(root / m.path)))
    else:
        from .render import display_path

        for n, g in enumerate(res.groups, 1):
            kind = "identical files" if g.exact else f"weakest pair {g.weakest[2]:.4f}"
            click.echo(f"group {n}: {len(g.members)} images, {kind}")
            k = g.keeper
            click.echo(f"  keep    {display_path(root / k.path)}  ({k.pixels} px, {k.size} bytes)")
            for m in g.others:
                click.echo(f"  {m.similarity:.4f}  {display_path(root / m.path)}")
    _say(f"{len(res.groups)} groups, {res.duplicates} images to review among {res.images} ({res.seconds:.1f} s)")
    if sheet:
        for n, g in enumerate(res.groups, 1):
            dupes_mod.group_sheet(g, root, os.path.join(sheet, f"group-{n:04d}.png"), title=f"group {n}")
        _say(f"wrote {len(res.groups)} contact sheets to {sheet}")
    if move_to:
        plan = dupes_mod.move(res, root, move_to, dry_run=dry_run)
        verb = "would move" if dry_run else "moved"
        for src, dst in plan:
            click.echo(_printable(f"{verb} {src} -> {dst}"), err=True)
        _say(
            f"{verb} {len(plan)} files"
            + ("" if dry_run else "; run `simsearch index` on the folder to update the index")
        )


@cli.command()
@click.option("--index", "index_path", type=click.Path(file_okay=False), help=INDEX_HELP)
@click.option("-n", "n", type=click.IntRange(1), default=20, show_default=True, help="How many to list.")
@click.option(
    "--by",
    type=click.Choice(["recon", "knn"]),
    default="recon",
    show_default=True,
    help="recon: how badly the model redraws a corrupted copy (adjusted for detail) plus how unusual its code is; "
    "knn: distance to the nearest images.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout: one object per outlier.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout.")
@click.option("--sheet", type=click.Path(dir_okay=False), help="Write a PNG: each outlier beside its reconstruction.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@_common
def outliers(index_path, n, by, as_json, as_csv, sheet, device):
    """List the indexed images least like the rest, with score, robust z and percentile.

    \b
    Example:
      simsearch outliers -n 20
      simsearch outliers --by knn --csv > outliers.csv
      simsearch outliers --sheet outliers.png
    """
    fmt = _one_format(json=as_json, csv=as_csv)
    from . import outliers as outliers_mod
    from .api import Index

    idx = Index.open(index_path, device=device)
    res = outliers_mod.find(idx, n, by)
    _say(res.note())
    root = idx.root
    if fmt == "json":
        import json

        for o in res.outliers:
            click.echo(json.dumps({**o.to_dict(), "abspath": str(root / o.path)}, ensure_ascii=True))
    elif fmt == "csv":
        rows = [["rank", "id", "path", "score", "z", "percentile", "mse", "detail", "denoise"]]
        rows += [
            [
                o.rank,
                o.id,
                printable(str(root / o.path)),
                o.score,
                o.z,
                o.percentile,
                "" if o.mse is None else o.mse,
                "" if o.detail is None else o.detail,
                "" if o.denoise is None else o.denoise,
            ]
            for o in res.outliers
        ]
        click.echo(_csv(rows))
    else:
        from .render import display_path

        click.echo(f"{'rank':>4}  {'score':>8}  {'z':>7}  {'pct':>6}  path")
        for o in res.outliers:
            click.echo(
                f"{o.rank:>4}  {o.score:>8.4f}  {o.z:>7.2f}  {o.percentile:>6.2f}  {display_path(root / o.path)}"
            )
    if sheet:
        from .reconview import load_pixels
        from .render import strips_sheet

        ids = [o.id for o in res.outliers]
        pixels, _names = load_pixels(idx, ids)
        recon = idx.reconstruct(pixels)
        cells = [([pixels[i], recon[i]], [f"#{o.rank}  z {o.z:.1f}", o.path]) for i, o in enumerate(res.outliers)]
        _say(f"wrote {strips_sheet(cells, sheet, ['image', 'reconstruction'], 96, columns=4)}")


@cli.command("map")
@click.option("--index", "index_path", type=click.Path(file_okay=False), help=INDEX_HELP)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The map PNG to write.")
@click.option("--html", type=click.Path(dir_okay=False), help="Also write an HTML page with pan/zoom.")
@click.option("--method", type=click.Choice(["pca", "tsne"]), default="pca", show_default=True)
@click.option("--sample", type=click.IntRange(2), default=1000, show_default=True, help="At most this many images.")
@click.option("--thumb", type=click.IntRange(8, 256), default=40, show_default=True, help="Thumbnail side in px.")
@click.option("--colour", "--color", "colour", is_flag=True, help="Frame each image in a colour per top-level folder.")
@click.option("--server", help="URL of a running `simsearch serve`: clicks in the HTML search there (/?id=N).")
@click.option("--seed", type=int, default=0, show_default=True)
@_common
def map_(index_path, out, html, method, sample, thumb, colour, server, seed):
    """Draw a 2-D map of the index: images the model finds alike lie close.

    \b
    Example:
      simsearch map --out map.png --colour
      simsearch map --out map.png --html map.html --method tsne
    """
    from . import corpusmap
    from .api import Index

    idx = Index.open(index_path)
    lay = corpusmap.layout(idx, method, sample, seed)
    png, legend = corpusmap.draw(idx, lay, out, thumb, colour)
    cached = " (coordinates from the cache)" if lay.cached else ""
    _say(f"wrote {png}: {len(lay.rows)} of {len(idx)} images, {method}{cached}")
    if html:
        _say(f"wrote {corpusmap.write_html(idx, lay, png, html, thumb, server)}")


@cli.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--index", "index_path", type=click.Path(file_okay=False), help=INDEX_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the PNGs.")
@click.option("--indexed", is_flag=True, help="IMAGES are ids or paths relative to the indexed folder.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@_common
def reconstruct(images, index_path, out, indexed, device):
    """Show each image beside the model's reconstruction of it (and, for a denoising model, a
    corrupted version beside the model's output).

    \b
    Example:
      simsearch reconstruct photo.jpg other.png --out recon/
    """
    from . import reconview
    from .api import Index

    idx = Index.open(index_path, device=device)
    items = [idx.indexed_item(x) for x in images] if indexed else list(images)
    for s in reconview.show(idx, items, out):
        click.echo(_printable(f"{s.png}  reconstruction error {s.mse:.4f}  {s.source}"))


# ------------------------------------------------------------------ serve


def _size(ctx, param, value):
    from .serve.run import parse_size

    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@cli.command()
@click.option("--index", "index_path", type=click.Path(file_okay=False), help=INDEX_HELP)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback lets other machines search the index (a warning is printed).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 = any free port.")
@click.option(
    "--max-upload",
    default="20MB",
    show_default=True,
    callback=_size,
    help="Largest image a client may upload (KB/MB/GB, KiB/MiB/GiB).",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default web browser.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where thumbnails are cached (default: $XDG_CACHE_HOME/simsearch or ~/.cache/simsearch).",
)
@_common
def serve(index_path, host, port, max_upload, open_browser, cache_dir):
    """Serve a web page and a JSON API to search and browse an index.

    Upload an image or click any indexed one to see its neighbours. The
    server follows a re-index done meanwhile (`simsearch index` in another
    terminal) without a restart. Needs the serve extra:
    pip install 'simsearch[serve]'.

    \b
    Example:
      simsearch serve --index indexes/photos --open
      curl -F image=@boot.png 'http://127.0.0.1:8000/api/query?k=5'
    """
    from . import store
    from .serve import missing_dependency

    missing = missing_dependency()
    if missing:
        raise SimsearchError(missing)
    from .serve.run import serve as run_server

    run_server(
        index_path or store.default_index_path(),
        host=host,
        port=port,
        max_upload=max_upload,
        open_browser=open_browser,
        cache_dir=cache_dir,
        say=_say,
    )


def main() -> None:  # console-script entry point
    import logging

    logging.getLogger("PIL").setLevel(logging.CRITICAL)  # decode failures are reported as skips, once
    cli(obj={})


if __name__ == "__main__":  # pragma: no cover
    main()

"""Index format migrations: small named steps that bring an older ``meta.json`` up to date.

Each step takes the meta dict of one format version (and the generation directory, for a step
that must look at the data) and returns the dict of the next version. ``migrate`` applies the
steps in order and records each step's name in ``meta["migrations"]``. Migration happens in
memory when an index is read; the next write (``simsearch index``, ``add``, ``remove``) stores
the migrated form. A step never changes vectors, ids or the manifest, so an old index answers
queries exactly as before.

To change the format: bump ``meta.FORMAT_VERSION``, write ``mNNN_<what>(meta, gen) -> meta``
here, append it to ``STEPS`` and add a test with an index written by the previous release
(``tests/data/``, ``tests/test_migrations.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .errors import IndexFormatError
from .meta import FORMAT_VERSION

Step = Callable[[dict, Path], dict]


def m001_fill_v1(meta: dict, gen: Path) -> dict:
    """Format 1 → 2. Format 1 grew without a version bump: test-time views, the near-copy
    calibration, the next free id, the FAISS request and the search record were added one by
    one, and readers filled in what an older file lacked. This step fills it in once."""
    if not meta.get("post"):
        raise IndexFormatError.rebuild(
            gen / "meta.json", "written before post-processing was stored (a pre-0.1 development build)"
        )
    out = dict(meta)
    emb = dict(out.get("embedding") or {})
    emb.setdefault("views", [])
    out["embedding"] = emb
    post = dict(out["post"])
    post.setdefault("copies", None)  # not calibrated: near-copy placement off
    out["post"] = post
    search = dict(out.get("search") or {})
    search.setdefault("dim", emb["dim"])
    search.setdefault("diffusion", bool(post.get("diffusion", False)))
    out["search"] = search
    faiss = dict(out["faiss"])
    faiss.setdefault("requested", "auto")
    faiss.setdefault("params", {})
    out["faiss"] = faiss
    if "next_id" not in out:
        import numpy as np

        ids = np.load(gen / "ids.npy", allow_pickle=False)
        out["next_id"] = int(ids.max()) + 1 if len(ids) else 0
    out.setdefault("counts", {"vectors": 0, "skipped": 0})
    out["format_version"] = 2
    return out


def m002_recon_unknown(meta: dict, gen: Path) -> dict:
    """Format 2 → 3. Format 3 stores each image's reconstruction statistics (``recon.npy``,
    ``reconerror.py``) from the embedding pass. A format-2 generation has none: ``recon`` is
    False, ``outliers --by recon`` computes them on demand (and says so), and the next write
    stores NaN rows for the images embedded before (incremental updates fill in only new ones)."""
    out = dict(meta)
    out["recon"] = False
    out["format_version"] = 3
    return out


def m003_denoise_unknown(meta: dict, gen: Path) -> dict:
    """Format 3 → 4. Format 4 stores each image's denoising error (``reconerror.COLUMNS``'s third
    column, ``denoise_mse``) from the embedding pass, beside the clean error and the detail. A
    format-3 generation's ``recon.npy`` has the first two columns only: ``recon_columns`` says so,
    the reader marks the third column unknown (NaN), ``outliers --by recon`` computes it from the
    files for those images (and says how many), and the next write stores the three columns (NaN
    for the images embedded before; an update fills in the ones it embeds, a re-embed all)."""
    out = dict(meta)
    out["recon_columns"] = ["mse", "detail"]
    out["format_version"] = 4
    return out


# (format version it applies to, step)
STEPS: list[tuple[int, Step]] = [(1, m001_fill_v1), (2, m002_recon_unknown), (3, m003_denoise_unknown)]


def migrate(meta: dict, gen: Path, steps: list[tuple[int, Step]] | None = None) -> dict:
    """``meta`` of any supported format → the current format, each applied step recorded."""
    steps = STEPS if steps is None else steps
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise IndexFormatError(f"{gen / 'meta.json'}: not a simsearch index (no format_version)")
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{gen / 'meta.json'}: index format {version} is newer than this simsearch supports "
            f"({FORMAT_VERSION}); upgrade simsearch"
        )
    by_version = dict(steps)
    while version < FORMAT_VERSION:
        step = by_version.get(version)
        if step is None:
            raise IndexFormatError.rebuild(gen / "meta.json", f"index format {version} is too old to migrate")
        applied = list(meta.get("migrations") or [])
        meta = step(meta, gen)
        meta["migrations"] = applied + [step.__name__]
        if meta.get("format_version") != version + 1:
            raise AssertionError(f"migration {step.__name__} did not move format {version} to {version + 1}")
        version = meta["format_version"]
    return meta

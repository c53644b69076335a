"""simsearch — image similarity search: conv autoencoder embeddings + FAISS.

Data flow, one module per stage::

    formats.py  which image formats this installation reads (Pillow, pillow-heif, AVIF)
    discover.py folder → image files
    decode.py   file or bytes → decoded image, safely (EXIF, pixel limit, one-line errors)
    preprocess.py  decoded image → model input pixels; the Preprocess settings, probe()
    pool.py     many files decoded in crash-isolated worker processes
    settings.py ModelConfig and TrainConfig (torch-free: BuildOptions holds them)
    model.py    the convolutional autoencoder
    train.py    label-free training on the corpus
    embed.py    pixels → embeddings
    views.py    test-time views: each embedding is the mean code over shifted copies
    postprocess.py  centring, whitening, diffusion coordinates → search vectors
    ann.py      FAISS index types, tuned to a recall target
    store.py    FAISS index + manifest + model on disk, atomic
    spill.py    a build's per-file records in a scratch SQLite file, not in memory
    indexer.py  build / incremental update (the pipeline)
    query.py    nearest neighbours of paths, images, arrays, indexed ids
    evaluate.py P@k / mAP on labelled folders
    verify.py   integrity checks
    render.py   table / JSON / contact sheet
    cli.py      the ``simsearch`` command;  api.py  the ``simsearch.Index`` library
    crashpoints.py  the SIGKILL hook of the crash-safety tests

Heavy dependencies (torch, faiss) load on first use, so ``import simsearch``
and ``simsearch --help`` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Index", "Hit", "BuildOptions", "UpdateReport", "SimsearchError", "__version__"]


def __getattr__(name: str):
    if name in ("Index",):
        from .api import Index

        return Index
    if name == "Hit":
        from .query import Hit

        return Hit
    if name in ("BuildOptions", "UpdateReport"):
        from . import indexer

        return getattr(indexer, name)
    if name == "SimsearchError":
        from .errors import SimsearchError

        return SimsearchError
    raise AttributeError(f"module 'simsearch' has no attribute {name!r}")

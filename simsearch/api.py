"""The library: ``simsearch.Index`` — open or build an index, query it, update it.

>>> import simsearch
>>> index = simsearch.Index.open("indexes/default")
>>> for hit in index.query("jeans.png", k=5):
...     print(hit.rank, f"{hit.score:.3f}", hit.path)
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import indexer, store
from .errors import ModelMismatchError, SimsearchError
from .indexer import BuildOptions, UpdateReport
from .meta import IndexMeta
from .preprocess import Preprocess
from .query import Hit
from .settings import corruption_config, corruption_edits
from .views import mean_over_views, shifted_views

_blas = None
_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit = None


@contextlib.contextmanager
def _single_thread_blas():
    """Limit BLAS to one thread for a block. The controller (which scans the loaded libraries,
    ~ms) is made once; each limit is then a plain set-threads call. The setting is process-wide,
    so concurrent blocks (the HTTP server's threads) share one limit: the first sets it, the
    last restores the original."""
    global _blas, _blas_users, _blas_limit
    with _blas_lock:
        if _blas is None:
            from threadpoolctl import ThreadpoolController

            _blas = ThreadpoolController()
        if _blas_users == 0:
            _blas_limit = _blas.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limit is not None:
                _blas_limit.restore_original_limits()
                _blas_limit = None


class Index:
    """An index directory opened for querying (and updating)."""

    def __init__(self, path: Path, snapshot: store.Snapshot, device: str = "auto"):
        self.path = Path(path)
        self._snap = snapshot
        self._model = None
        self._np_encoder = None
        self.device = device
        self.last_report: UpdateReport | None = None
        self._grids: Any = None  # finecheck.GridCache of indexed files, made at the first checked query

    # ------------------------------------------------------------ open / build

    @classmethod
    def open(
        cls, path: str | os.PathLike | None = None, model: str | os.PathLike | None = None, device: str = "auto"
    ) -> Index:
        """Open an existing index. ``model``: a model file that must be the one the index was built with."""
        path = store.index_path(path)
        snap = store.read(path)
        index = cls(path, snap, device)
        if model is not None:
            if not Path(model).is_file():
                raise SimsearchError(f"{model}: model file not found")
            digest = store.file_sha256(Path(model))
            if digest != snap.meta.model.sha256:
                raise ModelMismatchError(
                    f"{model}: model hash {digest[:12]} does not match the model that built {path} "
                    f"({snap.meta.model.sha256[:12]}); re-index with `simsearch index --model {model}`"
                )
        return index

    @classmethod
    def build(
        cls,
        root: str | os.PathLike,
        path: str | os.PathLike | None = None,
        options: BuildOptions | None = None,
        progress: Callable[..., None] | None = None,
        log: Callable[[str], None] | None = None,
        **option_kw,
    ) -> Index:
        """Index the folder ``root`` (train a model if needed) and open the result.

        Keyword options are ``BuildOptions`` fields (``objective``, ``time_budget``, ``retrain`` …).
        The update report is kept in ``index.last_report``.
        """
        path = store.index_path(path)
        options = options or BuildOptions.of(**option_kw)
        report = indexer.update(root, path, options, progress, log)
        index = cls.open(path, device=options.device)
        index.last_report = report
        return index

    def update(self, root: str | os.PathLike | None = None, **option_kw) -> UpdateReport:
        """Re-scan the indexed folder (or ``root``): embed new/changed files, drop deleted ones."""
        report = indexer.update(root or self.root, self.path, BuildOptions.of(device=self.device, **option_kw))
        self._reload()
        return report

    def add(self, paths: Iterable[str | os.PathLike]) -> UpdateReport:
        """Embed and add (or refresh) these files; they must lie inside the indexed folder."""
        report = indexer.update(self.root, self.path, BuildOptions(device=self.device), files=[Path(p) for p in paths])
        self._reload()
        return report

    def remove(self, paths: Iterable[str | os.PathLike]) -> int:
        """Remove these files (paths relative to the indexed folder, or absolute) from the index."""
        n = indexer.remove(self.path, [self._rel(p) for p in paths])
        self._reload()
        return n

    def _reload(self) -> None:
        self._snap = store.read(self.path)
        self._model = None
        self._np_encoder = None

    def _rel(self, p: str | os.PathLike) -> str:
        p = Path(p)
        rel = store.manifest_path(p, self.root) if p.is_absolute() or p.exists() else None
        return rel if rel is not None else p.as_posix()

    # ------------------------------------------------------------ properties

    @property
    def root(self) -> Path:
        return Path(self._snap.meta.corpus_root)

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self._snap.meta.preprocess)

    @property
    def meta(self) -> IndexMeta:
        """What the index records about itself (``simsearch.meta.IndexMeta``): model, preprocessing,
        post-processing, FAISS index, counts."""
        return self._snap.meta

    @property
    def views(self) -> list:
        """Test-time views averaged into every embedding, as [dy, dx] pixel shifts; [] = the image alone."""
        return list(self._snap.meta.embedding.views)

    @property
    def model(self):
        """The autoencoder that built this index (loaded on first use; hash verified)."""
        if self._model is None:
            self._model = store.load_model(self.path, self._snap.meta.model.sha256)
        return self._model

    @property
    def generation(self) -> str | None:
        """The version of the index this object holds, e.g. ``"gen-000003"`` (what ``CURRENT`` named when it
        was opened or last reloaded)."""
        gen = self._snap.gen_dir
        return gen.name if gen is not None else None

    def is_stale(self) -> bool:
        """True when a newer version of the index has been committed (by any process) since this one was
        read: open it again to see it. Reads only the small ``CURRENT`` file."""
        cur = store.current_generation(self.path)
        return cur is not None and cur.name != self.generation

    def __len__(self) -> int:
        return len(self._snap)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and self._rel(path) in self._snap.row_of_path()

    def __repr__(self) -> str:
        return f"Index({str(self.path)!r}, {len(self)} images, dim {self._snap.dim})"

    def entries(self) -> list[store.Entry]:
        """Every indexed file with its metadata: ``Entry(id, path, size, mtime_ns, sha256)``, in id order
        (paths relative to ``root``)."""
        return list(self._snap.entries)

    def paths(self) -> list[str]:
        return [e.path for e in self._snap.entries]

    def ids(self) -> np.ndarray:
        return self._snap.ids.copy()

    def vectors(self) -> np.ndarray:
        """Search vectors (what FAISS holds; inner product = similarity), row i ↔ ``ids()[i]``."""
        return self._snap.search_vectors()

    def codes(self) -> np.ndarray:
        """Raw encoder codes (N, dim) as stored, before post-processing; row i ↔ ``ids()[i]``."""
        return self._snap.vectors.copy()

    def base_vectors(self, codes: np.ndarray | None = None) -> np.ndarray:
        """The plain-cosine part of the search space: codes centred, whitened and L2-normalised
        (no diffusion coordinates), of the indexed images (row i ↔ ``ids()[i]``) or of ``codes``
        (e.g. from ``encode_pixels``). Inner product = the cosine that near-copy calibration uses."""
        return self._snap.post.base(self._snap.vectors if codes is None else codes)

    def recon_stats(self) -> np.ndarray | None:
        """Per-image reconstruction statistics stored at index time (float32 (N, 3), columns
        ``reconerror.COLUMNS``: mse, detail, denoise_mse; row i ↔ ``ids()[i]``; NaN where not known:
        every column of an image embedded before format 3, the denoising error of one embedded
        before format 4), or None when the index stores none (one migrated from format 2)."""
        return None if self._snap.recon is None else self._snap.recon.copy()

    # ------------------------------------------------------------ query

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """Search vectors (Q, D) for queries (paths, PIL images, arrays or ids)."""
        from . import query as q

        return q.vectors_for(self._snap, list(items), self.root, self.preprocess, self._encode)[0]

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Search vectors (N, D) for new images already preprocessed to the model input
        (uint8 (N, C, S, S), e.g. from ``pool.decode_files`` with ``index.preprocess``): exactly
        what a query by those images searches with (test-time views, post-processing, copy placement)."""
        from . import query as q

        raw = self._encode(np.asarray(pixels, np.uint8))
        return q.place_copies(self._snap, self._snap.post.search_vectors(raw), [None] * len(raw))

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Raw encoder codes (N, dim) of images already preprocessed to the model input (uint8
        (N, C, S, S)), averaged over the index's test-time views: what ``codes()`` holds for
        indexed images. No post-processing."""
        return self._encode(np.asarray(pixels, np.uint8))

    def reconstruct(self, pixels: np.ndarray) -> np.ndarray:
        """The autoencoder's reconstruction of preprocessed images: uint8 (N, C, S, S) in, same out."""
        from .embed import reconstruct

        return reconstruct(self.model, np.asarray(pixels, np.uint8), self.device)

    def corrupt(self, pixels: np.ndarray, seed: int = 0) -> np.ndarray:
        """The model's training corruption (the edits a denoising model learned to undo: shift, zoom,
        rotation, border, light, softening, noise as its training config recorded them) applied to
        preprocessed images: uint8 (N, C, S, S) in, same out. Each image's edits are drawn from
        ``seed`` and its own pixels (``train.corrupt_each``): the same image gets the same copy in
        any batch."""
        from . import train

        return train.corrupt_pixels(pixels, corruption_config(self._snap.meta.model.train), seed)

    def corruption_edits(self) -> list[str]:
        """The edits of ``corrupt`` (the model's training corruption), named in the order they are
        applied: ``["shift", "zoom", …, "occluding box", "blur"]``."""
        return corruption_edits(corruption_config(self._snap.meta.model.train))

    NUMPY_MAX_BATCH = 256

    def _encode(self, pixels: np.ndarray) -> np.ndarray:
        """Raw codes of preprocessed pixels. A few images on the CPU go through the numpy
        encoder (no torch import: fast cold queries); larger batches and GPUs through torch."""
        views = self.views
        if len(pixels) <= self.NUMPY_MAX_BATCH and self.device in ("auto", "cpu"):
            enc = self.numpy_encoder()
            if enc is not None:
                x = shifted_views(pixels, views)
                # a few images: thread start-up costs more than it saves
                with _single_thread_blas() if len(x) <= 16 else contextlib.nullcontext():
                    return mean_over_views(enc(x), len(pixels))
        from .embed import embed

        return embed(self.model, pixels, self.device, views=views)

    def numpy_encoder(self):
        """The torch-free encoder (``numpy_encoder.NumpyEncoder``) that encodes query batches of up to
        ``NUMPY_MAX_BATCH`` images on the CPU, or None when the index has no intact numpy export of its
        model (then queries go through torch)."""
        if self._np_encoder is None:
            m = self._snap.meta.model
            path = store.numpy_model_path(self.path, m.sha256)
            self._np_encoder = False
            if m.numpy_sha256 and path.exists() and store.file_sha256(path) == m.numpy_sha256:
                from .numpy_encoder import NumpyEncoder

                self._np_encoder = NumpyEncoder(path)
            # else: missing or damaged export (`simsearch verify` reports it) → the torch model
        return self._np_encoder or None

    def indexed_item(self, key: str | int) -> int:
        """The id of an indexed image given as an id (``42``/``"42"``) or a path relative to the indexed folder."""
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            self._row_of(int(key))
            return int(key)
        row = self._snap.row_of_path().get(self._rel(key))
        if row is None:
            raise SimsearchError(f"{key}: not in the index {self.path}")
        return int(self._snap.ids[row])

    def path_of(self, id: int) -> Path:
        """Absolute path of the indexed image with this id."""
        return self.root / self._snap.entries[self._row_of(id)].path

    def _row_of(self, id: int) -> int:
        row = self._snap.row_of_id(id)
        if row is None:
            raise SimsearchError(f"id {id} is not in the index")
        return row

    def source_of(self, item: Any) -> Any:
        """Something a contact sheet can draw for a query item (indexed ids become their file)."""
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            return self.path_of(int(item))
        return item

    def query(self, item: Any, k: int = 10, include_self: bool = False, pixel_check: bool = True) -> list[Hit]:
        """Nearest neighbours of one image: a path, a PIL image, a numpy array or an indexed id.
        ``pixel_check``: a new image's first hits are checked against it pixel by pixel and the ones that are
        copies of it listed first (``finecheck``; their ``Hit.pixel`` says how well they match)."""
        return self.query_batch([item], k, include_self, pixel_check)[0]

    def neighbors(self, id: int, k: int = 10) -> list[Hit]:
        """Nearest neighbours of the indexed image with this id (itself left out)."""
        return self.query(self.indexed_item(int(id)), k)

    def query_batch(
        self, items: Sequence[Any], k: int = 10, include_self: bool = False, pixel_check: bool = True
    ) -> list[list[Hit]]:
        """Nearest neighbours of several images, encoded and searched in one batch (``pixel_check``: as in
        ``query``)."""
        from . import query as q

        # an index whose calibration turned the check off searches k hits, not the check's shortlist
        check = self.pixel_check if pixel_check and self.pixel_threshold is not None else None
        return q.query_batch(self._snap, list(items), k, self.root, self.preprocess, self._encode, include_self, check)

    def pixel_check(self, image: Any, hits: list[Hit]) -> list[Hit]:
        """The fine check (``finecheck``): ``hits`` of a new query ``image`` (a file, its bytes, a PIL image or
        a numpy image) with those among the first ``finecheck.SHORTLIST`` whose pixels match it at the index's
        ``pixel_threshold`` moved to the front (their similarity in ``Hit.pixel``), in score order, ranks renumbered.
        Search for at least ``finecheck.SHORTLIST`` hits first to check them all. Hits whose files cannot be
        read stay unchecked; an image that cannot be read, or an index without a threshold, returns ``hits``
        as they are."""
        from . import finecheck

        threshold = self.pixel_threshold
        if not hits or threshold is None:
            return hits
        grids = finecheck.query_grids(image)
        if grids is None:
            return hits
        if self._grids is None:
            self._grids = finecheck.GridCache()
        return finecheck.rerank(hits, grids, self._grids, threshold)

    def prepare_queries(self, vectors: np.ndarray) -> np.ndarray:
        """Query-time transform of cosine-ready query vectors (identity unless the index configures one)."""
        return vectors

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Nearest neighbours of search vectors (Q, D), e.g. from ``embed``."""
        from . import query as q

        return q.search(self._snap, np.atleast_2d(vectors), k, root=str(self.root))

    # ------------------------------------------------------------ info

    def info(self) -> dict:
        m = self._snap.meta
        train = m.model.train or {}
        pre = m.preprocess
        return {
            "index": str(self.path),
            "corpus_root": m.corpus_root,
            "images": len(self),
            "skipped": m.counts.skipped,
            "dim": self._snap.dim,
            "search_dim": self._snap.search_dim,
            "postprocess": ("whiten" if self._snap.post.whitener is not None else "centre")
            + (" + diffusion" if self._snap.post.diffusion else ""),
            "test_time_views": len(self.views) or 1,
            "input": f"{pre['channels']}×{pre['size']}×{pre['size']}",
            "preprocess": pre,
            "model_sha256": m.model.sha256,
            "objective": train.get("objective"),
            "trained_epochs": train.get("epochs"),
            "train_seconds": train.get("seconds"),
            "train_precision": train.get("precision"),  # None: trained before it was recorded
            "metric": m.metric,
            "faiss_factory": m.faiss.factory,
            "faiss_params": m.faiss.params,
            "recall_at_10": m.faiss.recall_at_10,
            "recon_stats": self._recon_note(),
            "pixel_check": self._pixel_note(),
            "format_version": m.format_version,
            "migrations": m.migrations,
            "simsearch_version": m.simsearch_version,
            "created": m.created,
            "updated": m.updated,
            "disk_bytes": store.disk_usage(self.path),
        }

    @property
    def pixel_threshold(self) -> float | None:
        """The pixel similarity at which the query pixel check (``finecheck``) takes a hit for a copy,
        calibrated when the post-processing was fitted (``postprocess.calibrate_pixels``); None: the check
        is off (copies' pixels were not separable from look-alikes', or the index predates it)."""
        cal = self._snap.meta.post.copies or {}
        return (cal.get("pixel") or {}).get("threshold")

    def _recalibrate_command(self) -> str:
        """The command that refits this index's post-processing and its calibrations (near-copy placement,
        the pixel check) with the model it already has, without training: a rebuild that embeds its folder
        with the index's own model file, as it was embedded (the fit and the test-time views). A plain
        ``--rebuild`` would train a new model."""
        from shlex import quote

        meta = self._snap.meta
        cmd = f"simsearch index {quote(str(self.root))} --index {quote(str(self.path))} --rebuild"
        model = store.model_path(self.path, meta.model.sha256)
        if model.exists():
            fit = Preprocess.from_dict(meta.preprocess).fit
            cmd += f" --model {quote(str(model))}" + ("" if fit == Preprocess.fit else f" --fit {fit}")
            cmd += "" if self.views else " --no-tta"
        return f"`{cmd}`"

    def _pixel_note(self) -> str:
        cal = (self._snap.meta.post.copies or {}).get("pixel")
        if cal is None:
            return f"off: not calibrated (fitted before 2026-12-03; {self._recalibrate_command()} calibrates it)"
        if cal["threshold"] is None:
            if "tpr" not in cal:
                return "off: no copies could be compared"
            return (
                f"off: pixels do not tell a copy from a look-alike here (at best {cal['tpr']:.0%} of "
                f"{cal['pairs'][0]} copies pass and {cal['fpr']:.0%} of nearest neighbours)"
            )
        from .finecheck import SHORTLIST

        return (
            f"on: first {SHORTLIST} hits at pixel similarity ≥ {cal['threshold']:.4f} "
            f"(copies pass {cal['tpr']:.0%}, nearest neighbours {cal['fpr']:.0%})"
        )

    def _recon_note(self) -> str:
        rec = self._snap.recon
        if rec is None:
            return "not stored (computed on demand by `outliers`)"
        unknown = int(np.isnan(rec).any(1).sum())
        return "stored" + (f"; not known for {unknown} images (computed on demand by `outliers`)" if unknown else "")

    def skipped(self) -> list[dict]:
        return list(self._snap.skipped)

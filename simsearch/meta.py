"""What an index generation's ``meta.json`` records, as typed dataclasses.

Only ``store.py`` reads and writes the file (``IndexMeta.from_json`` / ``to_json``, after
``migrations.migrate`` brought an older format up to date); everything else uses attributes.
Format 2 is ``dataclasses.asdict(IndexMeta)``; format 3 added ``recon`` (the generation's
``recon.npy``: per-image reconstruction statistics, ``reconerror.py``); format 4 added the
denoising error as a third column of it and ``recon_columns``, the names of its columns. No torch,
no faiss.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from . import configs
from .reconerror import COLUMNS

FORMAT_VERSION = 4


@dataclass(frozen=True)
class ModelRecord:
    """The autoencoder that embedded the index (content-addressed under ``models/``)."""

    sha256: str
    config: dict  # model.ModelConfig as a dict
    train: dict | None = None  # how it was trained: epochs, seconds, stopped_by, objective, config, history
    numpy_sha256: str | None = None  # the torch-free encoder export (models/<sha256>.npz), if written
    source: str | None = None  # the --model file it was copied from


@dataclass(frozen=True)
class EmbeddingRecord:
    dim: int  # raw code size (vectors.npy columns)
    views: list = field(default_factory=list)  # test-time views, [dy, dx] shifts; [] = the image alone


@dataclass(frozen=True)
class PostRecord:
    """The fitted post-processing (models/<sha256>.post.npz) and its near-copy calibration."""

    sha256: str
    config: dict  # postprocess.PostConfig as a dict
    diffusion: bool = False
    whitened: bool = False
    anchors: int = 0
    copies: dict | None = None  # postprocess.calibrate's record; None = not calibrated (no placement)


@dataclass(frozen=True)
class SearchRecord:
    dim: int  # search vector size (what FAISS holds)
    diffusion: bool = False


@dataclass(frozen=True)
class FaissRecord:
    factory: str  # FAISS factory string
    type: str  # flat | ivf | hnsw | ivfpq
    requested: str = "auto"  # what the user asked for
    metric: str = "inner_product"
    params: dict = field(default_factory=dict)  # search parameters (nprobe, efSearch)
    recall_at_10: float | None = None  # measured against exact search at build time
    recall_sample: int | None = None


@dataclass(frozen=True)
class Counts:
    vectors: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class IndexMeta:
    corpus_root: str  # absolute path of the indexed folder
    preprocess: dict  # decode.Preprocess as a dict: size, channels, fit
    model: ModelRecord
    embedding: EmbeddingRecord
    post: PostRecord
    search: SearchRecord
    faiss: FaissRecord
    next_id: int  # ids are never reused: the next new file gets this one
    counts: Counts = field(default_factory=Counts)
    files: dict = field(default_factory=dict)  # file name → {"bytes", "sha256"} (``simsearch verify``)
    metric: str = "cosine"
    simsearch_version: str = ""
    created: str = ""
    updated: str = ""
    migrations: list = field(default_factory=list)  # names of the format migrations applied, in order
    # recon.npy holds (N, len(recon_columns)) reconstruction statistics, NaN for images whose values
    # are not known (embedded before the column existed); False: no such file (an index migrated
    # from format 2 until its next write)
    recon: bool = False
    # the columns of recon.npy, in order: reconerror.COLUMNS when written by this format; a reader
    # fills a column the file lacks with NaN (format 3 stored mse and detail only)
    recon_columns: list = field(default_factory=lambda: list(COLUMNS))
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return configs.to_dict(self)

    @classmethod
    def from_json(cls, data: dict) -> IndexMeta:
        """From a current-format dict (``migrations.migrate`` first); KeyError/TypeError when malformed."""
        for name in ("model", "embedding", "post", "search", "faiss"):
            if not isinstance(data[name], dict):
                raise TypeError(f"{name} is not an object")
        return configs.from_dict(cls, data)

    def with_(self, **changes) -> IndexMeta:
        return replace(self, **changes)

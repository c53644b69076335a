"""Names the command line offers, importable without torch, faiss or Pillow (``simsearch --help``
stays fast). The modules that implement them check they agree (tests/test_constants.py)."""

OBJECTIVES = ("dae", "ae", "sparse", "vae", "cae")  # model.OBJECTIVES
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw", "ivfpq", "sharded")  # ann.TYPES
AUTO_FLAT_MAX = 20_000  # ann: "auto" is exact below this many vectors (above, a full scan costs > ~1 ms a query)
# ann: "auto" is sharded from this many vectors (one main shard per million, SQ8 codes: a quarter of IVF-Flat's
# memory, and an update writes a delta shard instead of rewriting a 1 GB index file); an index that is already
# sharded stays so down to half of it, so that one hovering around the line is not rebuilt back and forth
AUTO_SHARDED_MIN = 1_000_000
FITS = ("center-crop", "pad", "stretch", "trim")  # preprocess.FITS: how a non-square image becomes square
COPY_STRENGTHS = ("light", "default", "strong")  # copies.STRENGTHS
PRECISIONS = ("auto", "fp32", "bf16")  # device.amp_dtype: the arithmetic of training steps

"""Names the command line offers, importable without torch, faiss or Pillow (``simsearch --help``
stays fast). The modules that implement them check they agree (tests/test_constants.py)."""

OBJECTIVES = ("dae", "ae", "sparse", "vae", "cae")  # model.OBJECTIVES
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw", "ivfpq", "sharded")  # ann.TYPES
AUTO_FLAT_MAX = 20_000  # ann: "auto" is exact below this many vectors (above, a full scan costs > ~1 ms a query)
FITS = ("center-crop", "pad", "stretch")  # preprocess.FITS: how a non-square image becomes square
COPY_STRENGTHS = ("light", "default", "strong")  # copies.STRENGTHS

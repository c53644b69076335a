"""Names the command line offers, importable without torch, faiss or Pillow (``simsearch --help``
stays fast). The modules that implement them check they agree (tests/test_constants.py)."""

OBJECTIVES = ("dae", "ae", "sparse", "vae", "cae")  # model.OBJECTIVES
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw", "ivfpq")  # ann.TYPES
FITS = ("center-crop", "pad", "stretch")  # preprocess.FITS: how a non-square image becomes square
COPY_STRENGTHS = ("light", "default", "strong")  # copies.STRENGTHS

"""The parts of ``scripts/bench_speed.py``: shared timing helpers (``common``), the corpora and the
state the rows share (``corpora``, ``context``), one module per row group (``decode`` 1, ``embedding`` 2,
``indexing`` 3, ``warm_query`` 4, ``cold_cli`` 5, ``ann`` 6) and the report (``report``).

Run ``python scripts/bench_speed.py``, not these modules; they use only simsearch's public API.
"""

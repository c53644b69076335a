"""simsearch.ann: which FAISS index, how it is built and tuned, and its recall against exact search."""

from __future__ import annotations

import numpy as np
import pytest
from synth import make_snapshot

from simsearch import ann, store


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_index_types_build_tune_and_round_trip(tmp_path, kind):
    snap = make_snapshot(n=3000, d=16, seed=3)
    snap.meta["faiss"] = dict(ann.choose(kind, 3000, 16))
    store.write(tmp_path, snap)
    back = store.read(tmp_path)
    spec = back.meta["faiss"]
    assert spec["type"] == kind and 0 <= spec["recall_at_10"] <= 1
    if kind in ("flat", "ivf", "hnsw"):
        assert spec["recall_at_10"] >= 0.95  # tuned until it reaches the target
    q = back.search_vectors()[:50]
    _, got = back.faiss_index.search(q, 10)
    exact = back.ids[np.argsort(-(q @ back.search_vectors().T), axis=1, kind="stable")[:, :10]]
    measured = ann.recall(got, exact)
    assert measured >= (0.9 if kind != "ivfpq" else 0.3)


def test_auto_index_type_is_exact_for_small_corpora_and_ivf_above():
    assert ann.choose("auto", ann.AUTO_FLAT_MAX - 1, 256)["type"] == "flat"
    big = ann.choose("auto", 70_000, 256)
    assert big["type"] == "ivf" and big["factory"] == "IVF1024,Flat"

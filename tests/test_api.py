"""The Python library: simsearch.Index end to end."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from synth import make_image

import simsearch
from simsearch.errors import SimsearchError

# Tests that only read take the session's shared index (conftest.shared_index, shared_corpus); tests that
# change the index or its folder take a private copy of both (conftest.index_copy, corpus = index.root).


def test_build_report_and_info(shared_build, shared_index):
    index, corpus = shared_index, shared_build.corpus
    r = shared_build.report
    assert (r.added, r.updated, r.removed, r.unchanged, len(r.skipped)) == (60, 0, 0, 0, 0)
    assert r.trained["epochs"] >= 1 and set(r.timings) >= {"decode", "train", "embed", "write"}
    info = index.info()
    assert info["images"] == len(index) == 60 and info["dim"] == 128 and info["input"] == "1×32×32"
    assert index.root == corpus.resolve()
    assert r.trained["precision"] == info["train_precision"] in ("fp32", "bf16", "fp16")  # what training ran in


def test_query_by_every_kind_of_input(shared_index, shared_corpus):
    index, corpus = shared_index, shared_corpus
    path = corpus / "stripes" / "stripes_004.png"
    by_path = index.query(path, k=5)
    assert len(by_path) == 5 and all(isinstance(h, simsearch.Hit) for h in by_path)
    assert [h.rank for h in by_path] == [1, 2, 3, 4, 5]
    assert all(h.path != "stripes/stripes_004.png" for h in by_path)  # itself excluded
    assert by_path[0].abspath.exists()

    own_id = index.indexed_item("stripes/stripes_004.png")
    by_id = index.query(own_id, k=5)
    assert [h.id for h in by_id] == [h.id for h in by_path]

    with Image.open(path) as im:
        by_pil = index.query(im.copy(), k=6, include_self=False)
    assert by_pil[0].id == own_id and by_pil[0].score > 0.999  # a PIL image is encoded: finds its twin
    arr = np.asarray(Image.open(path))
    by_arr = index.query(arr, k=6)
    assert [h.id for h in by_arr] == [h.id for h in by_pil]
    by_float = index.query(arr.astype(np.float32) / 255.0, k=6)
    assert [h.id for h in by_float] == [h.id for h in by_pil]
    assert [h.id for h in index.query(path, k=5, include_self=True)][0] == own_id


def test_stored_vectors_match_fresh_encoding(shared_index, shared_corpus):
    index, corpus = shared_index, shared_corpus
    path = corpus / "disc" / "disc_007.png"
    stored = index.embed([path])  # indexed: stored vector
    with Image.open(path) as im:
        fresh = index.embed([im.copy()])  # re-encoded
    assert np.allclose(stored, fresh, atol=1e-4)


def test_query_batch_equals_single_queries(shared_index, shared_corpus):
    index, corpus = shared_index, shared_corpus
    items = [corpus / "disc" / "disc_001.png", corpus / "square" / "square_001.png", 3]
    batch = index.query_batch(items, k=4)
    assert [[h.id for h in hits] for hits in batch] == [[h.id for h in index.query(it, k=4)] for it in items]


def test_search_is_exact(shared_index):
    index = shared_index
    v = index.vectors()
    q = v[:7]
    exact = np.argsort(-(q @ v.T), axis=1, kind="stable")[:, :10]
    got = [[h.id for h in hits] for hits in index.search_vectors(q, k=10)]
    ids = index.ids()
    assert got == [list(ids[row]) for row in exact]


def test_add_and_remove(index_copy):
    index, corpus = index_copy, index_copy.root
    rng = np.random.default_rng(1)
    new = [corpus / "disc" / f"extra_{i}.png" for i in range(2)]
    for p in new:
        make_image("disc", rng).save(p)
    r = index.add(new)
    assert (r.added, r.removed) == (2, 0) and len(index) == 62
    assert "disc/extra_0.png" in index
    n = index.remove(["disc/extra_0.png", corpus / "disc" / "disc_000.png", "not/indexed.png"])
    assert n == 2 and len(index) == 60
    assert "disc/extra_0.png" not in index
    hits = index.query(corpus / "disc" / "disc_002.png", k=59)
    assert not {"disc/extra_0.png", "disc/disc_000.png"} & {h.path for h in hits}
    outside = corpus.parent / "outside.png"
    make_image("disc", rng).save(outside)
    with pytest.raises(SimsearchError, match="not inside the indexed folder"):
        index.add([outside])


def test_update_after_changes_and_reopen(index_copy):
    index, corpus = index_copy, index_copy.root
    (corpus / "square" / "square_000.png").unlink()
    r = index.update()
    assert (r.added, r.removed, r.unchanged) == (0, 1, 59)
    again = simsearch.Index.open(index.path)
    assert len(again) == 59 and again.meta.model.sha256 == index.meta.model.sha256


def test_bad_queries(shared_index, tmp_path):
    index = shared_index
    with pytest.raises(SimsearchError, match="file not found"):
        index.query(tmp_path / "nope.png")
    with pytest.raises(SimsearchError, match="positive"):
        index.query(0, k=0)
    with pytest.raises(SimsearchError, match="not in the index"):
        index.query(10**9)
    with pytest.raises(SimsearchError, match="query array"):
        index.query(np.zeros((2, 2, 2, 2)))
    with pytest.raises(SimsearchError, match="cannot query by"):
        index.query({"not": "an image"})
    assert len(index.query(0, k=10_000)) == 59


def test_rgb_corpus(tmp_path, fast_options):
    from synth import write_corpus

    write_corpus(tmp_path / "rgb", per_class=6, rgb=True, size=48)
    idx = simsearch.Index.build(tmp_path / "rgb", tmp_path / "idx", options=fast_options)
    assert idx.info()["input"] == "3×48×48"
    assert len(idx.query(tmp_path / "rgb" / "disc" / "disc_000.png", k=3)) == 3


def test_ivf_index_updates_in_place(tmp_path, fast_options):
    from dataclasses import replace

    from synth import write_corpus

    root = tmp_path / "imgs"
    write_corpus(root, per_class=30)
    idx = simsearch.Index.build(root, tmp_path / "idx", options=replace(fast_options, index_type="ivf"))
    assert idx.meta.faiss.type == "ivf" and idx.meta.faiss.recall_at_10 >= 0.95
    rng = np.random.default_rng(4)
    make_image("disc", rng).save(root / "disc" / "late.png")
    (root / "square" / "square_000.png").unlink()
    make_image("stripes", rng).save(root / "disc" / "disc_001.png")  # changed content
    r = idx.update()
    assert (r.added, r.removed, r.updated) == (1, 1, 1)
    assert idx.meta.faiss.type == "ivf"
    # the in-place-updated IVF index holds exactly the manifest's ids, with the new vectors
    from simsearch.ann import index_ids

    fi = idx._snap.faiss_index
    assert sorted(index_ids(fi).tolist()) == sorted(idx.ids().tolist())
    v = idx.vectors()
    fi.nprobe = fi.nlist  # exhaustive: must equal exact search
    _, got = fi.search(v[:20], 5)
    exact = idx.ids()[np.argsort(-(v[:20] @ v.T), axis=1, kind="stable")[:, :5]]
    assert np.array_equal(got[:, 0], exact[:, 0])


def test_queries_use_the_numpy_encoder_and_agree_with_torch(shared_index, shared_corpus):
    index, corpus = shared_index, shared_corpus  # (a fresh Index object: the attribute set below stays in this test)
    from PIL import Image

    with Image.open(corpus / "disc" / "disc_003.png") as im:
        img = im.copy()
    np_vec = index.embed([img])
    assert index._np_encoder  # the numpy path was taken (no torch needed)
    index.NUMPY_MAX_BATCH = 0  # force the torch path
    torch_vec = index.embed([img])
    assert np.allclose(np_vec, torch_vec, atol=1e-4)


def test_cold_query_does_not_import_torch(shared_index, tmp_path):
    index = shared_index
    import subprocess
    import sys

    ext = tmp_path / "q.png"
    make_image("disc", np.random.default_rng(2)).save(ext)
    code = (
        "import sys, simsearch\n"
        f"hits = simsearch.Index.open({str(index.path)!r}).query({str(ext)!r}, k=3)\n"
        "assert len(hits) == 3\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_index_with_user_model_is_self_contained(shared_index, shared_corpus, tmp_path, fast_options):
    from dataclasses import replace

    first, corpus = shared_index, shared_corpus  # built with fast_options: trained its own model
    sha = first.meta.model.sha256
    model_file = first.path / "models" / f"{sha}.pt"
    copy = tmp_path / "m.pt"
    copy.write_bytes(model_file.read_bytes())
    second = simsearch.Index.build(corpus, tmp_path / "b", options=replace(fast_options, model=str(copy)))
    copy.unlink()  # the index keeps its own copy
    ext = tmp_path / "q.png"
    make_image("square", np.random.default_rng(3)).save(ext)
    assert [h.id for h in second.query(ext, k=5)] == [h.id for h in first.query(ext, k=5)]


def test_test_time_views_are_recorded_and_switchable(index_copy):
    index, corpus = index_copy, index_copy.root
    from dataclasses import replace

    from simsearch.indexer import BuildOptions

    assert index.views == [[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]] and index.info()["test_time_views"] == 5
    path = corpus / "disc" / "disc_007.png"
    with Image.open(path) as im:
        img = im.copy()
    with_views = index.embed([img])
    # switching the views off re-embeds every image, keeps the model, and queries follow
    r = index.update(tta=False)
    assert index.views == [] and r.trained is None and r.updated + r.unchanged + r.added == 60
    without = index.embed([img])
    assert not np.allclose(with_views, without, atol=1e-3)
    assert np.allclose(index.embed([path]), without, atol=1e-4)  # stored == fresh, no views at either end
    # an update that says nothing keeps the index's setting
    index.update()
    assert index.views == []
    assert replace(BuildOptions(), tta=None).tta is None

"""Post-processing: centring, whitening and the diffusion (spectral) coordinates."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from synth import make_image

import simsearch
from simsearch.postprocess import PostConfig, PostProcess, fit


def clustered(n_per=400, k=5, d=32, seed=0, spread=0.35):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 2
    x = np.concatenate([c + spread * rng.normal(size=(n_per, d)) * 2 for c in centres]).astype(np.float32)
    labels = np.repeat(np.arange(k), n_per)
    return x + 3.0, labels  # an offset the centring must remove


CFG = PostConfig(k=10, rank=16, min_gallery=100)


def test_centring_and_whitening():
    x, _ = clustered()
    post = fit(x, np.arange(len(x)), replace(CFG, diffusion=False, whiten=0.5))
    b = post.base(x)
    assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    assert np.abs((x - post.mean).mean(0)).max() < 1e-3
    white = (x - post.mean) @ post.whitener
    cov = np.cov(white.T)
    ev = np.linalg.eigvalsh(np.cov((x - post.mean).T))
    # power 0.5 → unit variance on every principal axis
    assert np.allclose(np.diag(cov), 1, atol=0.05) and ev.max() / ev.min() > 5


def test_diffusion_vectors_and_projection():
    x, labels = clustered()
    ids = np.arange(len(x)) * 2 + 7
    post = fit(x, ids, CFG)
    assert post.diffusion and post.dim == 32 + 16
    g = post.search_vectors(x, ids)
    assert g.shape == (len(x), 48) and np.allclose(np.linalg.norm(g, axis=1), 1, atol=1e-5)
    # a gallery image placed as a query (projected through its neighbours) lands next to itself
    q = post.search_vectors(x[:50])
    sims = q @ g.T
    assert (np.argmax(sims, axis=1) == np.arange(50)).mean() > 0.9
    # neighbours stay within the cluster
    top = np.argsort(-sims, axis=1)[:, 1:11]
    assert (labels[top] == labels[:50, None]).mean() > 0.95


def test_a_large_gallery_fits_its_graph_on_a_uniform_sample():
    """Above ``max_anchors`` images the graph (whose memory grows with it) is fitted on a seeded
    uniform sample; the other gallery images are placed like queries and keep their clusters."""
    x, labels = clustered()  # 2,000 images in 5 clusters
    ids = np.arange(len(x)) * 3 + 1
    full = fit(x, ids, CFG)
    sampled = fit(x, ids, replace(CFG, max_anchors=600))
    again = fit(x, ids, replace(CFG, max_anchors=600))
    assert len(full.anchor_ids) == len(x) and len(sampled.anchor_ids) == 600
    assert np.array_equal(sampled.anchor_ids, again.anchor_ids)  # deterministic
    assert set(sampled.anchor_ids) <= set(ids) and np.all(np.diff(sampled.anchor_ids) > 0)
    # uniform over the gallery: every cluster gets about its share (400 of 2,000 → 120 of 600)
    counts = np.bincount(labels[np.searchsorted(ids, sampled.anchor_ids)], minlength=5)
    assert counts.min() > 80 and counts.max() < 160
    assert np.array_equal(sampled.mean, full.mean) and np.allclose(sampled.whitener, full.whitener)
    g = sampled.search_vectors(x, ids)
    assert g.shape == (len(x), 32 + 16) and np.isfinite(g).all()
    top = np.argsort(-(g[:200] @ g.T), axis=1)[:, 1:11]
    assert (labels[top] == labels[:200, None]).mean() > 0.95
    # at or under the limit nothing changes
    same = fit(x, ids, replace(CFG, max_anchors=len(x)))
    assert np.array_equal(same.anchor_ids, full.anchor_ids) and np.allclose(same.U, full.U)


def test_search_vectors_are_made_a_chunk_at_a_time(monkeypatch):
    """A whole gallery's search vectors (index build, ``verify``) are computed ``SEARCH_CHUNK`` rows
    at a time into the result: the same vectors, and the temporaries (centred, whitened, coordinates,
    the stacked pair, its normalisation: a few times the result) are bounded by the chunk."""
    import tracemalloc

    from simsearch import postprocess

    x, _ = clustered()
    ids = np.arange(len(x)) * 3 + 1
    post = fit(x, ids, replace(CFG, max_anchors=600))  # anchors placed exactly, the rest projected
    whole = post.search_vectors(x, ids)
    whole_base = post.base(x)
    whole_queries = post.search_vectors(x[:300])  # placed through their anchors, as queries
    monkeypatch.setattr(postprocess, "SEARCH_CHUNK", 64)
    assert np.allclose(post.search_vectors(x, ids), whole, atol=1e-6)
    assert np.allclose(post.base(x), whole_base, atol=1e-6)
    assert np.allclose(post.search_vectors(x[:300]), whole_queries, atol=1e-6)
    big = np.tile(x, (10, 1))  # 20,000 codes (the anchor search was built above: not counted)
    tracemalloc.start()
    out = post.search_vectors(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (len(big), post.dim)
    assert peak < 1.1 * out.nbytes, (peak, out.nbytes)  # at once: 4× the result


def test_diffusion_lifts_map_on_fashion_mnist_pixels():
    """On real images (raw pixels as the codes), the diffusion part raises mAP: the
    reason it is on by default. Uses the Debian dataset-fashion-mnist files."""
    import gzip
    from pathlib import Path

    from simsearch.evaluate import rank_metrics

    src = Path("/usr/share/datasets/fashion-mnist")
    if not (src / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist is not installed")
    n = 4000
    pix = np.frombuffer(gzip.open(src / "train-images-idx3-ubyte.gz").read()[16:], np.uint8)[: n * 784]
    x = pix.reshape(n, 784).astype(np.float32) / 255
    labels = np.frombuffer(gzip.open(src / "train-labels-idx1-ubyte.gz").read()[8:], np.uint8)[:n]
    ids = np.arange(n)
    qs = np.arange(0, n, 20)
    plain = fit(x, ids, PostConfig(whiten=0, diffusion=False))
    diff = fit(x, ids, PostConfig(whiten=0, k=15, rank=64, min_gallery=100))
    m_plain = rank_metrics(
        plain.search_vectors(x[qs], qs), plain.search_vectors(x, ids), labels[qs], labels, ks=(10,), exclude=qs
    )
    m_diff = rank_metrics(
        diff.search_vectors(x[qs], qs), diff.search_vectors(x, ids), labels[qs], labels, ks=(10,), exclude=qs
    )
    assert m_diff["mAP"] > m_plain["mAP"] + 0.02, (m_plain, m_diff)


def test_round_trip_bytes(tmp_path):
    x, _ = clustered(n_per=100)
    post = fit(x, np.arange(len(x)), CFG)
    p = tmp_path / "p.npz"
    p.write_bytes(post.to_bytes())
    back = PostProcess.from_file(p)
    assert back.cfg == post.cfg
    assert np.array_equal(back.search_vectors(x[:20]), post.search_vectors(x[:20]))


def test_small_gallery_skips_diffusion():
    x, _ = clustered(n_per=10)
    post = fit(x, np.arange(len(x)), PostConfig())
    assert not post.diffusion and post.dim == 32


def test_index_with_diffusion_end_to_end(tmp_path, fast_options):
    from synth import write_corpus

    root = tmp_path / "imgs"
    write_corpus(root, per_class=40)
    opts = replace(fast_options, post=PostConfig(k=8, rank=12, min_gallery=50, whiten=0.25))
    idx = simsearch.Index.build(root, tmp_path / "idx", options=opts)
    info = idx.info()
    assert (
        info["search_dim"] == 128 + 12 and info["postprocess"] == "centre + diffusion"
    )  # too few images to whiten 128 dims
    again = simsearch.Index.open(tmp_path / "idx")  # read back from disk (hash-checked file)
    v = again.vectors()
    assert v.shape == (120, 140)
    got = [h.id for h in again.query(root / "disc" / "disc_004.png", k=5)]
    exact = again.ids()[np.argsort(-(v @ v[again.ids().tolist().index(again.indexed_item("disc/disc_004.png"))]))[1:6]]
    assert got == exact.tolist()
    # an image added later is projected through the anchors, like a query
    new = root / "disc" / "later.png"
    make_image("disc", np.random.default_rng(9)).save(new)
    r = again.update()
    assert r.added == 1 and again.meta.post == idx.meta.post  # the fitted graph is kept
    assert len(again.query(new, k=3)) == 3
    from click.testing import CliRunner

    from simsearch.cli import cli

    res = CliRunner().invoke(cli, ["verify", "--index", str(tmp_path / "idx")], obj={})
    assert res.exit_code == 0, res.output


def test_anchor_inverted_lists_match_exact_anchor_search(tmp_path, monkeypatch):
    from simsearch import postprocess

    monkeypatch.setattr(postprocess, "ANCHOR_IVF_MIN", 1000)
    x, _ = clustered(n_per=600, k=8, spread=0.5)
    ids = np.arange(len(x))
    post = fit(x, ids, CFG)
    nlist = len(post.anchor_centroids)
    assert nlist == len(x) // 39 and post.anchor_lists.shape == (len(x),)
    assert 1 <= int(post.anchor_nprobe) <= nlist
    # new images: placed through the inverted lists ≈ through an exact scan of the anchors
    rng = np.random.default_rng(5)
    new = x[rng.choice(len(x), 300)] + 0.3 * rng.normal(size=(300, x.shape[1])).astype(np.float32)
    exact = PostProcess(post.cfg, post.mean, post.whitener, post.anchor_ids, post.anchors, post.U, post.h)
    got, want = post.search_vectors(new), exact.search_vectors(new)
    agree = (got * want).sum(1)
    assert np.median(agree) > 0.9999 and agree.min() > 0.98
    # the cells are stored: a reloaded post-processing places images identically
    p = tmp_path / "p.npz"
    p.write_bytes(post.to_bytes())
    back = PostProcess.from_file(p)
    assert int(back.anchor_nprobe) == int(post.anchor_nprobe)
    assert np.array_equal(back.search_vectors(new), got)

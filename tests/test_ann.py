"""The small public helpers of simsearch.ann that the index and the diffusion anchors share."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from simsearch import ann


def test_ivf_cells_power_of_two_near_4_sqrt_n_and_39_points_per_cell():
    assert ann.ivf_cells(70_000) == 1024
    assert ann.ivf_cells(20_000) == 512
    assert ann.ivf_cells(1000) == 1000 // 39  # capped: k-means wants ≥ 39 points per cell
    assert ann.ivf_cells(0) == ann.ivf_cells(10) == 1
    assert ann.ivf_cells(10**10) == 65536


def test_drop_self_leaves_each_query_out_of_its_own_list():
    lists = np.array([[7, 3, 5, 1], [3, 7, 5, 1], [4, 2, -1, -1]])
    got = ann.drop_self(lists, np.array([7, 7, 9]), 2)
    assert got.tolist() == [[3, 5], [3, 5], [4, 2]]
    assert ann.drop_self(np.array([[1, -1]]), np.array([1]), 2).tolist() == [[-1, -1]]


def _ivf(n=2000, d=8, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64) * 2 + 1
    spec = ann.choose("ivf", n, d)
    return x, ids, ann.build(x, ids, spec)


def test_sweep_keeps_the_first_value_reaching_the_target_and_applies_it():
    x, ids, index = _ivf()
    q, self_ids, truth = ann.ground_truth(x, ids, 10, 200)
    assert q.shape == (200, 8) and truth.shape == (200, 10)
    assert not (truth == self_ids[:, None]).any()  # no query is its own neighbour
    v, r, seconds = ann.sweep(index, "nprobe", [1, 2, 4, 8, 16, 32], q, self_ids, truth, 0.9)
    assert r >= 0.9 and seconds > 0 and index.nprobe == v
    if v > 1:  # the cheaper setting before it fell short
        ann.apply_params(index, {"nprobe": v // 2})
        _, got = index.search(q, 11)
        assert ann.recall(ann.drop_self(got, self_ids, 10), truth) < 0.9
    # an unreachable target: the last value is kept (or, with min_gain, the one where gains stopped)
    assert ann.sweep(index, "nprobe", [1, 2], q, self_ids, truth, 1.01)[0] == 2 == index.nprobe
    assert ann.sweep(index, "nprobe", [], q, self_ids, truth, 0.9) is None


def test_postprocess_uses_only_public_names_of_ann():
    src = Path(ann.__file__).with_name("postprocess.py").read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and node.module == "ann":
            assert not [a.name for a in node.names if a.name.startswith("_")]

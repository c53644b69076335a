"""Retrieval metrics against hand-computed rankings, and `simsearch eval` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from synth import FAST_CLI, write_corpus

from simsearch import evaluate
from simsearch.cli import cli
from simsearch.evaluate import encode_labels, rank_metrics


def ranked_gallery(pattern):
    """Gallery whose cosine ranking for query [1, 0] is exactly the order given; labels 1 = relevant."""
    n = len(pattern)
    angles = np.linspace(0.1, 1.5, n)  # increasing angle = decreasing cosine
    g = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    return g, np.array(pattern, dtype=np.int64)


def test_precision_recall_and_ap_of_a_known_ranking():
    g, gl = ranked_gallery([1, 0, 1, 0, 0])
    m = rank_metrics(np.array([[1.0, 0.0]], np.float32), g, np.array([1]), gl, ks=(1, 2, 5))
    assert m["P@1"] == 1.0 and m["P@2"] == 0.5 and m["P@5"] == pytest.approx(0.4)
    assert m["R@1"] == 0.5 and m["R@2"] == 0.5 and m["R@5"] == 1.0
    assert m["mAP"] == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_map_is_mean_over_queries_and_worst_case():
    g, gl = ranked_gallery([0, 0, 0, 1])
    q = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    m = rank_metrics(q, g, np.array([1, 0]), gl, ks=(1,))
    ap_q1 = 1 / 4  # the one relevant item is last
    ap_q0 = (1 / 1 + 2 / 2 + 3 / 3) / 3  # label-0 items are ranks 1..3
    assert m["mAP"] == pytest.approx((ap_q1 + ap_q0) / 2)
    assert m["P@1"] == pytest.approx(0.5)


def test_exclude_self_and_blocks_agree():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = rng.integers(0, 3, 50)
    rows = np.arange(0, 50, 5)
    a = rank_metrics(v[rows], v, labels[rows], labels, ks=(1, 10), exclude=rows, block=3)
    b = rank_metrics(v[rows], v, labels[rows], labels, ks=(1, 10), exclude=rows, block=256)
    assert a == pytest.approx(b)
    # brute force AP for the first query, itself excluded
    q = rows[0]
    order = [i for i in np.argsort(-(v @ v[q]), kind="stable") if i != q]
    rel = labels[order] == labels[q]
    ap = np.mean([rel[: i + 1].sum() / (i + 1) for i in range(len(rel)) if rel[i]])
    single = rank_metrics(v[[q]], v, labels[[q]], labels, ks=(1,), exclude=np.array([q]))
    assert single["mAP"] == pytest.approx(ap)
    assert single["P@1"] == float(rel[0])


def test_encode_labels_shares_codes():
    a, b = encode_labels(["cat", "dog"], ["dog", "emu", "cat"])
    assert a.tolist() == [0, 1] and b.tolist() == [1, 2, 0]


def test_eval_cli(tmp_path):
    write_corpus(tmp_path / "gallery", per_class=15, seed=0)
    write_corpus(tmp_path / "queries", per_class=4, seed=1)
    idx = tmp_path / "idx"
    r = CliRunner().invoke(cli, ["index", str(tmp_path / "gallery"), "--index", str(idx), *FAST_CLI], obj={})
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(cli, ["eval", "--index", str(idx), "--queries", str(tmp_path / "queries"), "--json"], obj={})
    assert r.exit_code == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["queries"] == 12 and m["gallery"] == 45 and m["classes"] == 3
    assert 1 / 3 < m["mAP"] <= 1 and 0 <= m["P@10"] <= 1
    r = CliRunner().invoke(cli, ["eval", "--index", str(idx), "--split", "0.2", "-k", "5", "--json"], obj={})
    m = json.loads(r.stdout)
    assert r.exit_code == 0 and m["queries"] == 9 and "P@5" in m
    r = CliRunner().invoke(
        cli, ["eval", "--index", str(idx), "--queries", str(tmp_path / "queries"), "--split", "0.2"], obj={}
    )
    assert r.exit_code == 2


def test_paired_difference_is_the_mean_difference_and_its_standard_error():
    m, se = evaluate.paired_difference([1, 1, 0, 1], [0, 1, 0, 0])  # differences 1, 0, 0, 1
    assert m == 0.5 and se == pytest.approx(np.std([1, 0, 0, 1], ddof=1) / 2)
    # two rankings that agree on every query differ by exactly 0, however noisy each recall is
    assert evaluate.paired_difference([1, 0, 1, 0], [1, 0, 1, 0]) == (0.0, 0.0)
    assert np.isnan(evaluate.paired_difference([1], [0])[1])
    with pytest.raises(ValueError):
        evaluate.paired_difference([], [])

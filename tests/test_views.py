"""Unit tests for simsearch.views: the test-time views."""

from __future__ import annotations

import numpy as np

from simsearch.views import mean_over_views, shifted_views, tta_views_for


def test_shifted_views_translate_with_edge_replication():
    x = np.arange(2 * 3 * 5 * 6, dtype=np.uint8).reshape(2, 3, 5, 6)
    assert shifted_views(x, []) is x and shifted_views(x, [[0, 0]]) is x
    v = shifted_views(x, tta_views_for(28)).reshape(5, 2, 3, 5, 6)
    assert np.array_equal(v[0], x)  # view 0 is the image itself
    for (dy, dx), view in zip([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)], v):
        rows = np.clip(np.arange(5) + dy, 0, 4)
        cols = np.clip(np.arange(6) + dx, 0, 5)
        assert np.array_equal(view, x[:, :, rows][:, :, :, cols])
    v2 = shifted_views(x, tta_views_for(56)).reshape(5, 2, 3, 5, 6)
    assert np.array_equal(v2[2][:, :, :3], x[:, :, 2:5]) and np.array_equal(v2[2][:, :, 3], x[:, :, 4])
    codes = np.arange(5 * 2 * 4, dtype=np.float32).reshape(10, 4)
    assert np.allclose(mean_over_views(codes, 2), codes.reshape(5, 2, 4).mean(0))
    assert mean_over_views(codes[:2], 2) is not None and np.array_equal(mean_over_views(codes[:2], 2), codes[:2])
    assert tta_views_for(16)[1] == [-1, 0] and tta_views_for(64)[4] == [0, 2]

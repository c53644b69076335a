"""The numpy encoder (cold queries without torch) equals the torch encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simsearch import model as M
from simsearch.numpy_encoder import NumpyEncoder, export


@pytest.mark.parametrize(
    "cfg",
    [
        dict(image_size=28, channels=1),
        dict(image_size=28, channels=1, stem=True, depth=1, width=8),
        dict(image_size=32, channels=3, width=8, depth=2),
        dict(image_size=64, channels=3, width=8, variational=True, latent_dim=16),
    ],
)
def test_numpy_encoder_matches_torch(tmp_path, cfg):
    torch.manual_seed(0)
    m = M.build(M.ModelConfig(**cfg))
    # non-trivial BatchNorm statistics, as after training
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m.encode(torch.rand(16, cfg["channels"], cfg["image_size"], cfg["image_size"]) * 0.7 + 0.1)
    m.eval()
    p = tmp_path / "enc.npz"
    p.write_bytes(export(m))
    enc = NumpyEncoder(p)
    x = np.random.default_rng(1).integers(
        0, 256, (5, cfg["channels"], cfg["image_size"], cfg["image_size"]), dtype=np.uint8
    )
    with torch.inference_mode():
        want = m.encode(torch.from_numpy(x).float() / 255).numpy()
    got = enc(x)
    assert got.shape == want.shape
    assert np.allclose(got, want, atol=1e-4 * max(1.0, np.abs(want).max()))

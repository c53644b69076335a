"""The encoder's forward pass in plain numpy, for fast cold queries.

Importing torch costs ~2 s; a one-off ``simsearch query`` only needs to encode
a handful of images with a small convolutional encoder, which numpy does in
milliseconds. At index time the trained encoder is exported with BatchNorm
folded into the convolutions (``export``); at query time ``NumpyEncoder``
runs it without torch. Tests check it against the torch encoder.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np


def export(model) -> bytes:
    """Folded encoder weights of a torch ``AutoEncoder`` as .npz bytes (needs torch; index time only)."""
    from torch import nn

    from .model import ResBlock

    arrays: dict[str, np.ndarray] = {}
    layers: list[str] = []

    def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
        w = conv.weight.detach().double().numpy()
        b = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(w.shape[0])
        scale = (bn.weight.detach().double() / (bn.running_var.detach().double() + bn.eps).sqrt()).numpy()
        shift = bn.bias.detach().double().numpy() - bn.running_mean.detach().double().numpy() * scale
        return (w * scale[:, None, None, None]).astype(np.float32), (b * scale + shift).astype(np.float32)

    def add_conv(name: str, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        arrays[f"{name}.w"], arrays[f"{name}.b"] = fold(conv, bn)
        arrays[f"{name}.sp"] = np.array([conv.stride[0], conv.padding[0]], np.int64)

    for i, layer in enumerate(model.encoder.features):
        if isinstance(layer, ResBlock):
            c1, bn1, _, c2, bn2 = layer.body
            add_conv(f"l{i}a", c1, bn1)
            add_conv(f"l{i}b", c2, bn2)
            layers.append("res")
        else:  # conv → BN → ReLU
            conv, bn, _ = layer
            add_conv(f"l{i}", conv, bn)
            layers.append("conv")
    arrays["layers"] = np.array(layers)
    arrays["head.w"] = model.encoder.head.weight.detach().numpy().astype(np.float32)
    arrays["head.b"] = model.encoder.head.bias.detach().numpy().astype(np.float32)
    arrays["latent_dim"] = np.array(model.config.latent_dim)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """x (B,C,H,W) * w (O,C,k,k) → (B,O,H',W') via sliding windows + one matmul."""
    k = w.shape[-1]
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # (B,C,H',W',k,k)
    out = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # (B,H',W',O)
    out += b
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


class NumpyEncoder:
    """Runs an exported encoder: uint8 (N,C,H,W) → float32 codes (N, latent_dim)."""

    def __init__(self, path: str | os.PathLike):
        with np.load(Path(path), allow_pickle=False) as z:
            self.a = {k: z[k] for k in z.files}
        self.layers = [str(x) for x in self.a["layers"]]
        self.latent_dim = int(self.a["latent_dim"])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels.astype(np.float32) / 255.0
        a = self.a
        for i, kind in enumerate(self.layers):
            if kind == "conv":
                s, p = a[f"l{i}.sp"]
                x = np.maximum(_conv2d(x, a[f"l{i}.w"], a[f"l{i}.b"], s, p), 0)
            else:
                s, p = a[f"l{i}a.sp"]
                h = np.maximum(_conv2d(x, a[f"l{i}a.w"], a[f"l{i}a.b"], s, p), 0)
                s, p = a[f"l{i}b.sp"]
                x = np.maximum(x + _conv2d(h, a[f"l{i}b.w"], a[f"l{i}b.b"], s, p), 0)
        z = x.reshape(len(x), -1) @ a["head.w"].T + a["head.b"]
        return z[:, : self.latent_dim].astype(np.float32)  # a VAE head is μ‖log σ²: keep μ

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
from typing import Literal, cast

import numpy as np


def export(model) -> bytes:
    """Folded encoder weights of a torch ``AutoEncoder`` as .npz bytes (needs torch; index time only)."""
    from torch import nn

    from .model import ResBlock

    arrays: dict[str, np.ndarray] = {}
    layers: list[str] = []

    def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
        assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats=True
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
            c1, bn1, _, c2, bn2 = layer.body  # nn.Sequential: items typed as Module
            add_conv(f"l{i}a", cast(nn.Conv2d, c1), cast(nn.BatchNorm2d, bn1))
            add_conv(f"l{i}b", cast(nn.Conv2d, c2), cast(nn.BatchNorm2d, bn2))
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
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # stub gap: **arrays could hold "allow_pickle" (bool)
    return buf.getvalue()


def _im2col_weights(w: np.ndarray) -> np.ndarray:
    """Conv weights (O,C,k,k) → the (k·k·C, O) matrix ``_conv2d`` multiplies by."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0]))


def _conv2d(x: np.ndarray, m: np.ndarray, b: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """x (B,H,W,C) channels-last, m = ``_im2col_weights`` of (O,C,k,k) → (B,H',W',O): sliding
    windows copied once into an im2col matrix, one matmul whose output is already channels-last."""
    c, o = x.shape[3], m.shape[1]
    if pad:
        xp = np.zeros((x.shape[0], x.shape[1] + 2 * pad, x.shape[2] + 2 * pad, c), x.dtype)
        xp[:, pad:-pad, pad:-pad] = x
        x = xp
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # (B,H',W',C,k,k)
    win = win.transpose(0, 1, 2, 4, 5, 3)  # (B,H',W',k,k,C): the copy below reads runs of C floats
    bsz, h, wd = win.shape[:3]
    out = win.reshape(bsz * h * wd, k * k * c) @ m  # (B·H'·W', O)
    out += b
    return out.reshape(bsz, h, wd, o)


_Conv = tuple[np.ndarray, np.ndarray, int, int, int]  # _conv2d's (m, b, k, stride, pad)


class NumpyEncoder:
    """Runs an exported encoder: uint8 (N,C,H,W) → float32 codes (N, latent_dim)."""

    def __init__(self, path: str | os.PathLike):
        with np.load(Path(path), allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        self.latent_dim = int(a["latent_dim"])
        self.head_w, self.head_b = np.ascontiguousarray(a["head.w"].T), a["head.b"]

        def conv(name: str) -> _Conv:
            w = a[f"{name}.w"]
            stride, pad = (int(v) for v in a[f"{name}.sp"])
            return _im2col_weights(w), a[f"{name}.b"], w.shape[-1], stride, pad

        # [("conv", conv) | ("res", conv_a, conv_b)] in order
        self.layers: list[tuple[Literal["conv"], _Conv] | tuple[Literal["res"], _Conv, _Conv]] = [
            ("conv", conv(f"l{i}")) if kind == "conv" else ("res", conv(f"l{i}a"), conv(f"l{i}b"))
            for i, kind in enumerate(str(x) for x in a["layers"])
        ]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels.transpose(0, 2, 3, 1).astype(np.float32) / 255.0  # (B,H,W,C): channels-last inside
        for layer in self.layers:
            if layer[0] == "conv":
                x = np.maximum(_conv2d(x, *layer[1]), 0)
            else:
                h = np.maximum(_conv2d(x, *layer[1]), 0)
                x = np.maximum(x + _conv2d(h, *layer[2]), 0)
        x = x.transpose(0, 3, 1, 2)  # the head was trained on (C,H,W)-ordered features
        z = x.reshape(len(x), -1) @ self.head_w + self.head_b
        return z[:, : self.latent_dim].astype(np.float32)  # a VAE head is μ‖log σ²: keep μ

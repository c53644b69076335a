"""Pixels → embeddings: batched encoder inference (raw float32 codes).

Post-processing into cosine-ready vectors lives in ``postprocess.py`` (no torch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, overload

import numpy as np
import torch

from . import device as dev
from .crashpoints import crash_point
from .model import AutoEncoder
from .reconerror import DENOISE_SEEDS, denoise
from .reconerror import stats as recon_stats
from .settings import TrainConfig
from .train import corrupt_pixels
from .views import mean_over_views, shifted_views


def default_batch_size(device: torch.device) -> int:
    return 4096 if device.type == "cuda" else 512


@contextlib.contextmanager
def _evaluating(model: AutoEncoder, device: torch.device):
    """The model in eval mode on ``device`` for a block; its training flag is restored after."""
    was_training = model.training
    model.eval().to(device)
    try:
        yield
    finally:
        model.train(was_training)


@overload
def embed(
    model: AutoEncoder,
    pixels: np.ndarray,
    device: str | torch.device = ...,
    batch_size: int | None = ...,
    progress: Callable[..., None] | None = ...,
    views: list | None = ...,
    recon: Literal[False] = ...,
    corruption: TrainConfig | None = ...,
) -> np.ndarray: ...


@overload
def embed(
    model: AutoEncoder,
    pixels: np.ndarray,
    device: str | torch.device = ...,
    batch_size: int | None = ...,
    progress: Callable[..., None] | None = ...,
    views: list | None = ...,
    *,
    recon: Literal[True],
    corruption: TrainConfig | None = ...,
) -> tuple[np.ndarray, np.ndarray]: ...


@torch.inference_mode()
def embed(
    model: AutoEncoder,
    pixels: np.ndarray,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    progress: Callable[..., None] | None = None,
    views: list | None = None,
    recon: bool = False,
    corruption: TrainConfig | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """uint8 (N, C, H, W) → raw float32 codes (N, latent_dim) (μ for a VAE).

    ``views``: test-time views, [dy, dx] pixel offsets; each code is the mean over the image
    shifted by each (``views.shifted_views``). ``batch_size`` counts images, not views.
    ``recon``: also → the reconstruction statistics (N, 3) (``reconerror.COLUMNS``) of the same
    pixels: → (codes, statistics). The clean reconstruction is decoded from the same encoder pass;
    the denoising error needs one more encoder and decoder pass per corrupted copy
    (``reconerror.DENOISE_SEEDS``; ``corruption``: the model's training corruptions,
    ``settings.corruption_config``, None = the defaults)."""
    chunks = _chunks(pixels, batch_size, device, max(1, len(views or [])))
    parts = list(embed_batches(model, chunks, device, progress, len(pixels), views, recon, corruption))
    if not recon:
        return np.concatenate(parts)
    return np.concatenate([c for c, _ in parts]), np.concatenate([r for _, r in parts])


def _chunks(pixels: np.ndarray, batch_size: int | None, device, views: int = 1) -> Iterable[np.ndarray]:
    device = dev.pick_device(device)
    bs = batch_size or max(1, default_batch_size(device) // views)
    if len(pixels) == 0:
        yield pixels
    for i in range(0, len(pixels), bs):
        yield pixels[i : i + bs]


@torch.inference_mode()
def embed_batches(
    model: AutoEncoder,
    batches: Iterable[np.ndarray],
    device: str | torch.device = "auto",
    progress: Callable[..., None] | None = None,
    total: int | None = None,
    views: list | None = None,
    recon: bool = False,
    corruption: TrainConfig | None = None,
) -> Iterator[Any]:
    """Embed an iterable of uint8 batches, yielding float32 code arrays batch by batch
    (``views``, ``recon``, ``corruption``: see ``embed``; with ``recon`` each item is (codes, statistics))."""
    device = dev.pick_device(device)
    corruption = corruption or TrainConfig()
    done = 0
    with _evaluating(model, device):
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        for batch in batches:
            if len(batch) == 0:
                empty = np.zeros((0, model.config.latent_dim), np.float32)
                yield (empty, np.zeros((0, 3), np.float32)) if recon else empty
                continue
            shifted = shifted_views(batch, views)
            x = dev.to_device(torch.from_numpy(np.ascontiguousarray(shifted)), device)
            with dev.autocast(device):
                z = model.encode(x)
                stats = _recon_stats(model, batch, z, views, device, corruption) if recon else None
            codes = mean_over_views(z.float().cpu().numpy(), len(batch))
            yield (codes, stats) if recon else codes
            crash_point("embed-batch")
            done += len(batch)
            if progress:
                progress("embed", done, total or done)


def _recon_stats(model: AutoEncoder, batch: np.ndarray, z: torch.Tensor, views, device, corruption) -> np.ndarray:
    """Reconstruction statistics (N, 3) of ``batch`` from its codes ``z`` (view-major, as
    ``shifted_views`` lays them out): the unshifted view's code is decoded, so the encoder runs once
    for both; then the denoising error, from one encoder and decoder pass over the batch's corrupted
    copies (all ``DENOISE_SEEDS`` at once)."""
    n = len(batch)
    plain = [tuple(int(a) for a in v) for v in (views or [])]
    if not plain or all(v == (0, 0) for v in plain):
        z0 = z[:n]
    elif (0, 0) in plain:
        i = plain.index((0, 0))
        z0 = z[i * n : (i + 1) * n]
    else:  # no unshifted view among the test-time views: encode the image itself
        z0 = model.encode(dev.to_device(torch.from_numpy(np.ascontiguousarray(batch)), device))
    clean = recon_stats(batch, _to_uint8(model.decode(z0)))
    noisy = np.concatenate([corrupt_pixels(batch, corruption, seed) for seed in DENOISE_SEEDS])
    out = _to_uint8(model(dev.to_device(torch.from_numpy(noisy), device)))
    den = denoise(batch, [out[k * n : (k + 1) * n] for k in range(len(DENOISE_SEEDS))])
    return np.concatenate([clean, den[:, None]], axis=1)


def _to_uint8(logits: torch.Tensor) -> np.ndarray:
    """Decoder logits → the uint8 picture (as ``reconstruct`` returns it)."""
    y = torch.sigmoid(logits.float())
    return y.mul_(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


@torch.inference_mode()
def reconstruct(
    model: AutoEncoder, pixels: np.ndarray, device: str | torch.device = "auto", batch_size: int | None = None
) -> np.ndarray:
    """uint8 (N, C, H, W) → the autoencoder's reconstruction, uint8 (N, C, H, W) (the decoder's
    sigmoid output; from μ for a VAE)."""
    device = dev.pick_device(device)
    out = []
    with _evaluating(model, device):
        for batch in _chunks(pixels, batch_size, device):
            x = dev.to_device(torch.from_numpy(np.ascontiguousarray(batch)), device)
            with dev.autocast(device):
                out.append(_to_uint8(model(x)))
    return np.concatenate(out) if out else np.zeros((0, *pixels.shape[1:]), np.uint8)

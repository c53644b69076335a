"""Training the autoencoder on the corpus itself — no labels.

Input: decoded pixels, a uint8 array (N, C, H, W). Output: a trained
``AutoEncoder`` plus a history of losses. Each ``--objective`` is one of the
autoencoder family:

- ``ae``      plain autoencoder: reconstruct x from x.
- ``dae``     denoising (the default: best retrieval quality): reconstruct the clean x
              from a per-sample corrupted copy — the edits a copied picture goes through:
              shift, zoom, stretch, rotation, flip, border, brightness, contrast,
              saturation, an occluding box, softening (plus, optionally, a grey view, a JPEG re-save,
              noise or masking) — and, with ``invariance`` > 0, make the codes of two such copies of one image agree
              while differing from other images (NT-Xent on a projection of the code),
              so the code ignores the edits but keeps what tells images apart.
- ``sparse``  plain AE + L1 penalty on the code.
- ``vae``     variational: encoder gives (μ, log σ²), z = μ + σ·ε, KL weighted by β;
              μ is the embedding.
- ``cae``     contractive: plain AE + penalty on ‖∂z/∂x‖²_F (Hutchinson estimate).

Stops at the epoch cap (``max_epochs``, or 40 raised for a small folder to
``min_steps`` optimizer steps), at the wall-clock ``time_budget`` or when the
validation loss stops improving; the learning rate follows a cosine decay
over whichever of epochs / time runs out first. Checkpoints (at most every
10 s) let an interrupted run resume.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from . import device as dev
from .crashpoints import crash_point
from .model import AutoEncoder, ModelConfig, SiameseHead, build, reconstruction_loss
from .settings import DEFAULT_EPOCHS, TrainConfig, model_config_for  # noqa: F401 — re-exported

Progress = Callable[..., None]


@dataclass
class TrainResult:
    model: AutoEncoder
    epochs: int
    seconds: float
    stopped_by: str  # "epochs" | "time" | "early-stop"
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0
    # of the training steps: fp32, bf16 or fp16 (``TrainConfig.precision``); "bf16+fp32" when a run resumed
    # on another machine trained its epochs in both (``trained_in``)
    precision: str = "fp32"


# ---------------------------------------------------------------- augmentation
#
# Each edit is drawn (``random_*``, from one generator for a whole training batch) and applied
# (``_affine``, ``_pad``, ``_light``, ``_resample``) separately, so that ``corrupt_each`` can apply
# the same edits with parameters drawn per image (see there).

PAD_AMOUNT = 0.2  # how much a border (``random_pad``) shrinks the picture, at most
ERASE_AREA = (0.02, 0.2)  # the part of the picture an occluding box (``random_erase``) covers
ERASE_ASPECT = 3.0  # its width / height, log-uniform in [1/ERASE_ASPECT, ERASE_ASPECT]


def random_affine(
    x: torch.Tensor,
    shift: float,
    scale: float,
    flip: bool,
    gen: torch.Generator,
    aspect: float = 0.0,
    rotate: float = 0.0,
) -> torch.Tensor:
    """Per-sample random translation (± shift·side), zoom (1 ± scale), stretch of one axis
    (1 ± aspect), rotation (± rotate degrees) and horizontal flip.

    Pixels moved in from outside take the border value (the background, dark or light).
    """
    b = x.shape[0]
    u = lambda: torch.rand(b, generator=gen).mul_(2).sub_(1)  # noqa: E731  U(-1, 1)
    s = 1.0 + scale * u()
    a = 1.0 + aspect * u()
    sign = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    degrees = rotate * u()
    tx = 2 * shift * u()
    ty = 2 * shift * u()
    return _affine(x, s, a, sign, degrees, tx, ty)


def _affine(
    x: torch.Tensor, s: torch.Tensor, a: torch.Tensor, sign: torch.Tensor, degrees: torch.Tensor, tx, ty
) -> torch.Tensor:
    """Each image zoomed by s, one axis stretched by a, flipped where sign is −1, rotated and moved
    (tx, ty: in units of half the side), all (B,)."""
    sx, sy = s * a.sqrt() * sign, s / a.sqrt()
    t = torch.deg2rad(degrees)
    cos, sin = t.cos(), t.sin()
    theta = torch.zeros(x.shape[0], 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = sx * cos, -sy * sin
    theta[:, 1, 0], theta[:, 1, 1] = sx * sin, sy * cos
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    return _warp(x, theta, "border")


def _warp(x: torch.Tensor, theta: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Resample each image through its 2×3 affine ``theta`` (bilinear)."""
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _pick(b: int, prob: float, gen: torch.Generator) -> torch.Tensor | None:
    """Which of ``b`` samples an edit applied with probability ``prob`` touches (None: none)."""
    pick = torch.rand(b, generator=gen) < prob
    return pick if pick.any() else None


def photometric(
    x: torch.Tensor, light: float, saturation: float, gen: torch.Generator, grey: float = 0.0
) -> torch.Tensor:
    """Per-sample brightness shift (± light), contrast (1 ± light) around the image mean and,
    for RGB, saturation (1 ± saturation) around the grey value, or, with probability ``grey``, none
    (the picture turned grey). x ∈ [0,1]."""
    b = x.shape[0]
    u = lambda: torch.rand(b, 1, 1, 1, generator=gen).mul_(2).sub_(1).to(x.device, x.dtype)  # noqa: E731
    colour = x.shape[1] == 3
    sat = 1 + saturation * u() if saturation and colour else None
    to_grey = (torch.rand(b, generator=gen) < grey).view(b, 1, 1, 1) if grey and colour else None
    contrast = 1 + light * u() if light else None
    bright = light * u() if light else None
    return _light(x, sat, contrast, bright, to_grey)


def _light(x: torch.Tensor, sat, contrast, bright, to_grey: torch.Tensor | None = None) -> torch.Tensor:
    """Saturation factor ``sat`` (RGB; None: unchanged) — 0 where the bool mask ``to_grey`` is set —, then
    contrast factor ``contrast`` about the image mean plus ``bright`` (None: unchanged), each (B, 1, 1, 1);
    clamped to [0, 1]."""
    if to_grey is not None:
        sat = torch.where(
            to_grey.to(x.device), torch.zeros((), device=x.device, dtype=x.dtype), 1 if sat is None else sat
        )
    if sat is not None:
        grey = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, True)
        x = grey + (x - grey) * sat
    if contrast is not None:
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean + bright
    return x.clamp(0, 1)


def resample_blur(x: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """With probability ``prob`` per sample: shrink to 50–90% and scale back (the softness of a
    downsized or re-compressed copy)."""
    b, _, h, w = x.shape
    pick = _pick(b, prob, gen)
    if pick is None:
        return x
    f = float(torch.empty(1).uniform_(0.5, 0.9, generator=gen))
    out = x.clone()
    out[pick] = _resample(x[pick], _shrunk(h, w, f))
    return out


def _shrunk(h: int, w: int, f: float) -> tuple[int, int]:
    return max(2, round(h * f)), max(2, round(w * f))


def _resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Shrunk to ``size`` (antialiased) and scaled back."""
    small = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)


# ---- JPEG: the lossy steps of baseline JPEG (colour transform, 4:2:0 chroma subsampling, 8×8 DCT
# quantised with the IJG tables scaled by quality), batched in torch; entropy coding is lossless and left out.

JPEG_QUALITY = (30, 90)  # quality range a JPEG corruption draws from (Pillow saves 75 by default)
_JPEG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_JPEG_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32),
)  # fmt: skip


def jpeg_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The IJG quantisation tables (luma, chroma) at each quality in ``quality`` (B,) → two (B, 8, 8)."""
    q = quality.clamp(1, 100).to(torch.float32)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q).view(-1, 1, 1)

    def table(base):
        t = torch.tensor(base, dtype=torch.float32).view(1, 8, 8)
        return torch.floor((t * scale + 50) / 100).clamp_(1, 255)

    return table(_JPEG_LUMA), table(_JPEG_CHROMA)


@lru_cache(maxsize=1)
def _dct8() -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix (its 2-D form is JPEG's forward DCT)."""
    k = torch.arange(8, dtype=torch.float64)
    m = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m.float()


def _quantise(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """A (B, H, W) plane (0–255) through 8×8 block DCT, quantisation by ``table`` (B, 8, 8) and back;
    edges padded by replication to whole blocks, as encoders do, and cut off again."""
    b, h, w = plane.shape
    ph, pw = -h % 8, -w % 8
    x = F.pad(plane[:, None], (0, pw, 0, ph), mode="replicate")[:, 0] - 128 if ph or pw else plane - 128
    hb, wb = x.shape[1] // 8, x.shape[2] // 8
    blocks = x.reshape(b, hb, 8, wb, 8).transpose(2, 3)  # (B, hb, wb, 8, 8)
    d = _dct8().to(x.device, x.dtype)
    t = table.to(x.device, x.dtype)[:, None, None]
    coef = torch.round(d @ blocks @ d.T / t) * t
    out = (d.T @ coef @ d).transpose(2, 3).reshape(b, hb * 8, wb * 8) + 128
    return out[:, :h, :w]


def _jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Each image of x ∈ [0,1] (B, C, H, W) as baseline JPEG at ``quality`` (B,) would give it back:
    C = 1 as one luma plane, C = 3 through YCbCr with chroma averaged over 2×2 (4:2:0) and scaled back
    bilinearly; rounded to 8 bits. In float32 also under a training step's autocast (a bf16 DCT would
    add about half a grey level of noise of its own)."""
    with torch.autocast(x.device.type, enabled=False):
        return _jpeg_fp32(x, quality)


def _jpeg_fp32(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    luma, chroma = jpeg_tables(quality)
    v = x.float() * 255
    if v.shape[1] == 1:
        return (_quantise(v[:, 0], luma).round().clamp(0, 255) / 255)[:, None].to(x.dtype)
    r, g, b_ = v[:, 0], v[:, 1], v[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b_
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b_
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b_
    h, w = y.shape[1:]
    small = F.avg_pool2d(torch.stack([cb, cr], 1), 2, ceil_mode=True)  # (B, 2, ⌈H/2⌉, ⌈W/2⌉)
    small = torch.stack([_quantise(small[:, i] + 128, chroma) - 128 for i in range(2)], 1)
    up = F.interpolate(small, scale_factor=2, mode="bilinear", align_corners=False)  # each cell back to 2×2
    cb, cr = up[:, :, :h, :w].unbind(1)
    y = _quantise(y, luma)
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return (rgb.round().clamp(0, 255) / 255).to(x.dtype)


def _jpeg_quality(u: torch.Tensor) -> torch.Tensor:
    """Uniforms in [0, 1) → whole qualities spread over ``JPEG_QUALITY``."""
    lo, hi = JPEG_QUALITY
    return (lo + (hi - lo) * u).round()


def random_jpeg(x: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """With probability ``prob`` per sample: saved as JPEG at a quality drawn from ``JPEG_QUALITY``
    (blocking, ringing and colour bleeding, which a copy re-saved as JPEG carries)."""
    pick = _pick(x.shape[0], prob, gen)
    if pick is None:
        return x
    out = x.clone()
    out[pick] = _jpeg(x[pick], _jpeg_quality(torch.rand(int(pick.sum()), generator=gen)))
    return out


def random_pad(x: torch.Tensor, prob: float, gen: torch.Generator, amount: float = PAD_AMOUNT) -> torch.Tensor:
    """With probability ``prob`` per sample: shrink by up to ``amount`` about a random point and fill
    the border with white, black or the image's corner colour (a padded or letterboxed copy)."""
    pick = _pick(x.shape[0], prob, gen)
    if pick is None:
        return x
    n = int(pick.sum())
    f = 1 + amount * torch.rand(n, generator=gen)  # sampling grid scale > 1: the picture shrinks
    move = torch.rand(n, 2, generator=gen) * 2 - 1
    choice = torch.randint(0, 3, (n,), generator=gen)
    out = x.clone()
    out[pick] = _pad(x[pick], f, move, choice)
    return out


def _pad(xs: torch.Tensor, f: torch.Tensor, move: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """Each image shrunk by 1/f (B,) and moved by ``move`` (B, 2) ∈ [-1, 1]² of the room left, on
    white (choice 0), black (1) or its corner colour (2)."""
    n = len(xs)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = f
    theta[:, :, 2] = (f - 1)[:, None] * move  # keep the picture inside
    fill = torch.where(choice == 0, 1.0, 0.0).to(xs.device, xs.dtype).view(n, 1, 1, 1).expand(-1, xs.shape[1], 1, 1)
    fill = torch.where((choice == 2).to(xs.device).view(n, 1, 1, 1), xs[:, :, :1, :1], fill)
    return _warp(xs - fill, theta, "zeros") + fill


def random_erase(x: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """With probability ``prob`` per sample: a box of one random colour over part of the picture (a
    caption, a watermark, a sticker; random erasing, Zhong et al. 2017) — the model must see past it."""
    pick = _pick(x.shape[0], prob, gen)
    if pick is None:
        return x
    out = x.clone()
    out[pick] = _erase(x[pick], torch.rand(int(pick.sum()), 4 + x.shape[1], generator=gen))
    return out


def _erase(xs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Each image under one box drawn from ``u`` (B, 4 + C) U(0, 1): its area (``ERASE_AREA``), aspect
    (``ERASE_ASPECT``), place, and colour."""
    n, c, h, w = xs.shape
    area = (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * u[:, 0]) * h * w
    aspect = ERASE_ASPECT ** (2 * u[:, 1] - 1)
    bh = (area / aspect).sqrt().round().clamp(1, h)
    bw = (area * aspect).sqrt().round().clamp(1, w)
    top = ((h - bh + 1) * u[:, 2]).floor().clamp(max=h - bh)
    left = ((w - bw + 1) * u[:, 3]).floor().clamp(max=w - bw)
    rows = torch.arange(h).view(1, h)
    cols = torch.arange(w).view(1, w)
    inside_r = (rows >= top[:, None]) & (rows < (top + bh)[:, None])  # (B, H)
    inside_c = (cols >= left[:, None]) & (cols < (left + bw)[:, None])  # (B, W)
    box = (inside_r[:, None, :, None] & inside_c[:, None, None, :]).to(xs.device)
    fill = u[:, 4 : 4 + c].view(n, c, 1, 1).to(xs.device, xs.dtype)
    return torch.where(box, fill, xs)


def corrupt_views(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """One corrupted view per image: the edits a copy of a picture goes through (geometry,
    light, colour, an optional occluding box, softness, JPEG last, as a copy is saved last), then optional
    pixel noise / masking."""
    v = random_affine(x, cfg.shift, cfg.scale, cfg.flip, gen, cfg.aspect, cfg.rotate)
    if cfg.pad:
        v = random_pad(v, cfg.pad, gen)
    if cfg.light or cfg.saturation or cfg.grey:
        v = photometric(v, cfg.light, cfg.saturation, gen, cfg.grey)
    if cfg.erase:
        v = random_erase(v, cfg.erase, gen)
    if cfg.blur:
        v = resample_blur(v, cfg.blur, gen)
    if cfg.jpeg:
        v = random_jpeg(v, cfg.jpeg, gen)
    if cfg.noise_std or cfg.mask_prob:
        v = corrupt(v, cfg.noise_std, cfg.mask_prob, gen)
    return v


def corrupt(x: torch.Tensor, noise_std: float, mask_prob: float, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
    keep = (torch.rand(x.shape[0], 1, *x.shape[2:], generator=gen) >= mask_prob).to(x.device, x.dtype)
    return ((x + noise_std * noise) * keep).clamp_(0, 1)


def image_keys(pixels: np.ndarray, seed: int) -> list[int]:
    """One 128-bit key per image from ``seed`` and the image's own pixels (shape and bytes): what
    ``corrupt_each`` draws that image's edits from."""
    px = np.ascontiguousarray(pixels)
    head = int(seed).to_bytes(8, "little", signed=True) + repr(px.shape[1:]).encode() + str(px.dtype).encode()
    return [
        int.from_bytes(hashlib.blake2b(head + px[i].tobytes(), digest_size=16).digest(), "big") for i in range(len(px))
    ]


def corrupt_each(x: torch.Tensor, cfg: TrainConfig, keys: list[int]) -> torch.Tensor:
    """``corrupt_views`` with each image's edits drawn from its own key (``image_keys``), not from a
    generator shared by the batch: an image is corrupted the same way whatever else is in its
    batch and wherever it is in it. The same edits with the same ranges and probabilities; unlike
    training, the softening factor is drawn per image rather than per batch. x ∈ [0,1] (B,C,H,W) on the CPU."""
    b, c, h, w = x.shape
    if b == 0:
        return x
    rngs = [np.random.default_rng(k) for k in keys]
    # (B, 16) U(0, 1), then 2 more with a JPEG corruption, 1 more with the grey one and 5 + C with an
    # occluding box, in that order (drawn only then: other corruptions keep their draws)
    at_jpeg = 16
    at_grey = at_jpeg + (2 if cfg.jpeg else 0)
    at_erase = at_grey + (1 if cfg.grey else 0)
    n_u = at_erase + (5 + c if cfg.erase else 0)
    u = torch.from_numpy(np.stack([r.random(n_u) for r in rngs]).astype(np.float32))
    pm = u * 2 - 1  # U(-1, 1)
    sign = torch.where(u[:, 2] < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(b)
    v = _affine(
        x, 1.0 + cfg.scale * pm[:, 0], 1.0 + cfg.aspect * pm[:, 1], sign, cfg.rotate * pm[:, 3],
        2 * cfg.shift * pm[:, 4], 2 * cfg.shift * pm[:, 5],
    )  # fmt: skip
    if cfg.pad:
        pick = u[:, 6] < cfg.pad
        if pick.any():
            v = v.clone()
            choice = (u[pick, 10] * 3).long().clamp_(0, 2)
            v[pick] = _pad(v[pick], 1 + PAD_AMOUNT * u[pick, 7], pm[pick][:, 8:10], choice)
    if cfg.light or cfg.saturation or cfg.grey:
        col = lambda j: pm[:, j].view(b, 1, 1, 1).to(v.device, v.dtype)  # noqa: E731
        sat = 1 + cfg.saturation * col(11) if cfg.saturation and c == 3 else None
        to_grey = (u[:, at_grey] < cfg.grey).view(b, 1, 1, 1) if cfg.grey and c == 3 else None
        contrast = 1 + cfg.light * col(12) if cfg.light else None
        v = _light(v, sat, contrast, cfg.light * col(13) if cfg.light else None, to_grey)
    if cfg.erase:
        e = u[:, at_erase:]
        pick = e[:, 0] < cfg.erase
        if pick.any():
            v = v.clone()
            v[pick] = _erase(v[pick], e[pick, 1:])
    if cfg.blur:
        sizes = [_shrunk(h, w, 0.5 + 0.4 * float(f)) for f in u[:, 15].tolist()]
        softened = (u[:, 14] < cfg.blur).tolist()
        groups: dict[tuple[int, int], list[int]] = {}  # images shrunk to the same size go together
        for i in range(b):
            if softened[i]:
                groups.setdefault(sizes[i], []).append(i)
        if groups:
            v = v.clone()
            for size, rows in groups.items():
                v[rows] = _resample(v[rows], size)
    if cfg.jpeg:
        pick = u[:, at_jpeg] < cfg.jpeg
        if pick.any():
            v = v.clone()
            v[pick] = _jpeg(v[pick], _jpeg_quality(u[pick, at_jpeg + 1]))
    if cfg.noise_std or cfg.mask_prob:
        noise = torch.from_numpy(np.stack([r.standard_normal((c, h, w)) for r in rngs]).astype(np.float32))
        keep = torch.from_numpy(np.stack([r.random((1, h, w)) for r in rngs]) >= cfg.mask_prob).to(v.dtype)
        v = ((v + cfg.noise_std * noise.to(v.device)) * keep.to(v.device)).clamp_(0, 1)
    return v


def corrupt_pixels(pixels: np.ndarray, cfg: TrainConfig, seed: int = 0) -> np.ndarray:
    """uint8 (N, C, H, W) → uint8 (N, C, H, W): each image corrupted by ``corrupt_each`` with its
    own key (``seed`` and its pixels), rounded back to uint8. What ``Index.corrupt`` returns and
    what the embedding pass measures the denoising error on (``embed``)."""
    px = np.asarray(pixels, np.uint8)
    x = torch.from_numpy(px.astype(np.float32) / 255.0)
    with torch.no_grad():
        y = corrupt_each(x, cfg, image_keys(px, seed))
    return (y.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# ---------------------------------------------------------------- losses


def objective_loss(
    model: AutoEncoder,
    x: torch.Tensor,
    cfg: TrainConfig,
    gen: torch.Generator,
    head: SiameseHead | None = None,
    target: AutoEncoder | None = None,
) -> tuple[torch.Tensor, dict]:
    """Loss for one batch x ∈ [0,1]^(B,C,H,W) under ``cfg.objective``; returns (loss, parts).
    ``head``: the invariance branch (``dae`` with ``cfg.invariance`` > 0); ``target``: the encoder
    of its second view when that view has no gradient (default: ``model`` itself)."""
    obj = cfg.objective
    if obj == "vae":
        mu, logvar = model.encode_stats(x)
        if logvar is None:  # a plain autoencoder: encode_stats gives (z, None)
            raise ValueError("objective 'vae' needs a variational model: ModelConfig(variational=True)")
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = reconstruction_loss(model.decode(z), x, cfg.loss)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean()
        npix = x[0].numel()
        return rec + cfg.beta * kl / npix, {"rec": rec.item(), "kl": kl.item()}
    if obj == "cae":
        x = x.detach().requires_grad_(True)
        z = model.encode(x)
        rec = reconstruction_loss(model.decode(z), x.detach(), cfg.loss)
        v = torch.randint(0, 2, z.shape, generator=gen).to(z.device, z.dtype).mul_(2).sub_(1)
        (jtv,) = torch.autograd.grad(z, x, v, create_graph=True)  # Jᵀv, E‖Jᵀv‖² = ‖J‖²_F
        jac = jtv.pow(2).flatten(1).sum(1).mean() / z.shape[1]
        return rec + cfg.contractive * jac, {"rec": rec.item(), "jac": jac.item()}
    inp = corrupt_views(x, cfg, gen) if obj == "dae" else x
    z = model.encode(inp)
    rec = reconstruction_loss(model.decode(z), x, cfg.loss)
    loss, parts = rec, {"rec": rec.item()}
    if obj == "dae" and head is not None:  # invariance: a second view's code must predict the first's
        v2 = corrupt_views(x, cfg, gen)
        if cfg.invariance_grad:
            z2 = model.encode(v2)
        else:
            with torch.no_grad():
                z2 = (target or model).encode(v2)
        inv = head(z, z2)
        loss, parts = loss + cfg.invariance * inv, {**parts, "inv": inv.item()}
    if obj == "dae" and cfg.koleo:
        spread = koleo_loss(z)
        loss, parts = loss + cfg.koleo * spread, {**parts, "koleo": spread.item()}
    if obj == "sparse":
        l1 = z.abs().mean()
        loss, parts = loss + cfg.sparsity * l1 * z.shape[1], {**parts, "l1": l1.item()}
    return loss, parts


def koleo_loss(z: torch.Tensor) -> torch.Tensor:
    """The KoLeo spreading term (Sablayrolles et al. 2019): −mean over the batch of the log distance of
    each L2-normalised code to its nearest other code. Lower when the codes cover the sphere evenly."""
    u = F.normalize(z.float(), dim=1)
    sim = u @ u.T
    sim.fill_diagonal_(-2.0)  # never one's own nearest
    nearest = sim.max(dim=1).values  # cosine to the nearest other code
    dist = (2.0 - 2.0 * nearest).clamp_min(0.0).sqrt()
    return -torch.log(dist + 1e-8).mean()


@torch.no_grad()
def _held_out_mean(modules, pixels: torch.Tensor, device, batch: int, ragged: bool, per_image) -> float:
    """Mean over held-out images of ``per_image(x)`` (a batch's summed loss), in eval mode (each module
    goes back to the mode it was in: the model being trained to train, an average of its weights to
    eval); ``ragged``: include the last, smaller batch."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    total, n = 0.0, 0
    for i in range(0, len(pixels) if ragged else len(pixels) - batch + 1, batch):
        x = dev.to_device(pixels[i : i + batch], device)
        total += per_image(x)
        n += len(x)
    for m, mode in zip(modules, modes):
        m.train(mode)
    return total / max(n, 1)


def _val_loss(model: AutoEncoder, pixels: torch.Tensor, device: torch.device, batch: int) -> float:
    """Plain reconstruction loss on held-out images: comparable across objectives and epochs."""

    def summed(x):
        with dev.autocast(device):
            logits = model(x)
        return F.binary_cross_entropy_with_logits(logits.float(), x, reduction="sum").item() / x[0].numel()

    return _held_out_mean([model], pixels, device, batch, True, summed)


def _val_objective(
    model: AutoEncoder, head: SiameseHead, pixels: torch.Tensor, device: torch.device, cfg: TrainConfig
) -> float:
    """The training objective (reconstruction + invariance) on held-out images, with the same
    corruptions every epoch: with an invariance term, reconstruction alone stops improving long
    before the codes do, so it would end training too early."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)

    def summed(x):
        with dev.autocast(device):
            loss, _ = objective_loss(model, x, cfg, gen, head)
        return float(loss) * len(x)

    return _held_out_mean([model, head], pixels, device, min(cfg.batch_size, len(pixels)), False, summed)


# ---------------------------------------------------------------- loop


def _signature(mcfg: ModelConfig, tcfg: TrainConfig, pixels: np.ndarray) -> str:
    h = hashlib.sha256(json.dumps([mcfg.to_dict(), tcfg.to_dict()], sort_keys=True).encode())
    h.update(str(pixels.shape).encode())
    step = max(1, len(pixels) // 64)
    h.update(np.ascontiguousarray(pixels[::step]).tobytes())  # cheap data fingerprint
    return h.hexdigest()


CHECKPOINT_EVERY = 10.0  # seconds between training checkpoints (a crash loses at most this much)


@dataclass(frozen=True)
class Schedule:
    """How long a run is and when it stops (``schedule``)."""

    batch: int
    steps_per_epoch: int
    max_epochs: int
    total_steps: int
    warmup: int  # steps of linear learning-rate warm-up
    patience: int  # epochs without validation improvement before stopping
    budget: float  # seconds (inf = no limit)


def schedule(tcfg: TrainConfig, n_train: int) -> Schedule:
    batch = min(tcfg.batch_size, n_train)
    steps_per_epoch = max(1, n_train // batch)  # drop the ragged last batch (BatchNorm, InfoNCE)
    max_epochs = epoch_cap(tcfg, steps_per_epoch)
    total = steps_per_epoch * max_epochs
    return Schedule(
        batch=batch,
        steps_per_epoch=steps_per_epoch,
        max_epochs=max_epochs,
        total_steps=total,
        warmup=min(200, total // 20 + 1),
        patience=max(tcfg.patience, math.ceil(max_epochs / 10)),  # tiny epochs: judge on more than a few steps
        budget=tcfg.time_budget if tcfg.time_budget and tcfg.time_budget > 0 else math.inf,
    )


def epoch_cap(tcfg: TrainConfig, steps_per_epoch: int) -> int:
    """Epochs to train: ``max_epochs`` when given; else ``DEFAULT_EPOCHS``, raised so that a small
    folder still gets ``min_steps`` optimizer steps."""
    if tcfg.max_epochs is not None:
        return tcfg.max_epochs
    return max(DEFAULT_EPOCHS, math.ceil(tcfg.min_steps / steps_per_epoch))


def get_lr(peak: float, step: int, warmup: int, progress: float) -> float:
    """Learning rate: linear warm-up over ``warmup`` steps, then a cosine from ``peak`` to 0 as
    ``progress`` (the larger of steps done / planned and seconds spent / time budget) goes 0 → 1."""
    return peak * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def split_validation(pixels: np.ndarray, tcfg: TrainConfig, rng: np.random.Generator):
    """→ (validation, training) uint8 tensors: a random ``val_fraction`` held out (none under 50 images)."""
    data = torch.from_numpy(np.ascontiguousarray(pixels))
    order = rng.permutation(len(data))
    n_val = int(len(data) * tcfg.val_fraction) if len(data) >= 50 else 0
    return data[order[:n_val]], data[order[n_val:]]


class WeightAverage:
    """An exponential moving average of a model's weights and BatchNorm statistics (``TrainConfig.ema``),
    updated after each optimizer step. The decay ramps up as (1 + n) / (10 + n) over the first updates,
    so that the average does not start out weighed down by the random initial weights. The average is
    a model of its own, kept in eval mode, never trained."""

    def __init__(self, model: AutoEncoder, decay: float):
        self.model = copy.deepcopy(model).requires_grad_(False).eval()
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: AutoEncoder) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        mine, theirs = self.model.state_dict(), model.state_dict()
        floats = [k for k, v in mine.items() if v.is_floating_point()]
        torch._foreach_lerp_([mine[k] for k in floats], [theirs[k].detach() for k in floats], 1.0 - d)
        for k, v in mine.items():
            if not v.is_floating_point():
                v.copy_(theirs[k])

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]


@dataclass
class Run:
    """A training run's state from epoch to epoch: what a checkpoint saves and a re-run resumes."""

    model: AutoEncoder
    head: SiameseHead | None  # the invariance branch: training-only, never saved with the model
    opt: torch.optim.Optimizer
    gen: torch.Generator
    history: list[dict] = field(default_factory=list)
    epoch: int = 0
    elapsed: float = 0.0  # seconds trained before this process (a resumed run)
    best_loss: float = math.inf
    best_state: dict | None = None
    bad_epochs: int = 0
    finished: str | None = None  # how a completed run stopped
    amp: torch.dtype | None = None  # autocast dtype of the training steps (None: fp32; ``device.amp_dtype``)
    ema: WeightAverage | None = None  # the average of the weights (``TrainConfig.ema``): the model kept
    ema_target: bool = False  # ``TrainConfig.ema_target``

    @property
    def kept(self) -> AutoEncoder:
        """The model that is validated and returned: the average of the weights if there is one."""
        return self.ema.model if self.ema is not None else self.model

    @property
    def target(self) -> AutoEncoder | None:
        """The encoder of the invariance term's gradient-free second view (None: the model itself)."""
        return self.ema.model if self.ema is not None and self.ema_target else None


def start_run(mcfg: ModelConfig, tcfg: TrainConfig, device: torch.device, gen: torch.Generator) -> Run:
    model = build(mcfg).to(device)
    if device.type in ("cuda", "cpu"):  # faster convolutions (CPU: ~20% per step, measured)
        model = model.to(memory_format=torch.channels_last)
    head = None
    if tcfg.objective == "dae" and tcfg.invariance > 0:
        head = SiameseHead(mcfg.latent_dim, tcfg.invariance_loss, tcfg.temperature).to(device)
    params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    ema = WeightAverage(model, tcfg.ema) if tcfg.ema > 0 else None
    amp = dev.amp_dtype(device, tcfg.precision, training=True)
    return Run(model, head, opt, gen, amp=amp, ema=ema, ema_target=tcfg.ema_target)


def train_epoch(run: Run, trn: torch.Tensor, sch: Schedule, tcfg: TrainConfig, device, scaler, t0, progress):
    """One pass over the training images (or until the time budget runs out);
    → (mean of each loss part over the steps taken, steps taken, last learning rate, out of time)."""
    perm = torch.randperm(len(trn), generator=run.gen)
    sums: dict[str, float] = {}
    done, lr, step = 0, 0.0, run.epoch * sch.steps_per_epoch
    for b in range(sch.steps_per_epoch):
        elapsed = time.perf_counter() - t0
        if elapsed > sch.budget:
            return _means(sums, done), done, lr, True
        lr = get_lr(tcfg.lr, step, sch.warmup, max(step / sch.total_steps, elapsed / sch.budget))
        for g in run.opt.param_groups:
            g["lr"] = lr
        x = dev.to_device(trn[perm[b * sch.batch : (b + 1) * sch.batch]], device)
        with dev.autocast(device, dtype=run.amp):
            loss, parts = objective_loss(run.model, x, tcfg, run.gen, run.head, run.target)
        run.opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(run.opt)
            scaler.update()
        else:
            loss.backward()
            run.opt.step()
        if run.ema is not None:
            run.ema.update(run.model)
        step += 1
        done += 1
        for k, v in {"loss": loss.item(), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v
        if progress:
            progress("train", b + 1, sch.steps_per_epoch, epoch=run.epoch + 1, loss=sums["loss"] / done)
    return _means(sums, done), done, lr, False


def _means(sums: dict[str, float], n: int) -> dict[str, float]:
    return {k: v / n for k, v in sums.items()} if n else {}


def validate(run: Run, val: torch.Tensor, device: torch.device, tcfg: TrainConfig) -> float:
    """Validation objective after an epoch; remembers the best weights and counts epochs without improvement."""
    model, head = run.kept, run.head
    loss = _val_loss(model, val, device, 1024) if head is None else _val_objective(model, head, val, device, tcfg)
    if loss < run.best_loss - 1e-5:
        run.best_loss, run.bad_epochs = loss, 0
        run.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        run.bad_epochs += 1
    return loss


def train(
    pixels: np.ndarray,
    mcfg: ModelConfig,
    tcfg: TrainConfig | None = None,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
    checkpoint: str | Path | None = None,
    time_budget: float | None = None,
) -> TrainResult:
    """Train an autoencoder on uint8 pixels (N, C, H, W) (``tcfg``: default TrainConfig()); see the
    module docstring. ``time_budget``: seconds of training instead of ``tcfg.time_budget`` (a
    build's own deadline, ``indexer.training_budget``; not part of the run's identity, so a
    re-run with another estimate still resumes)."""
    tcfg = tcfg or TrainConfig()
    if pixels.ndim != 4 or pixels.shape[1:] != (mcfg.channels, mcfg.image_size, mcfg.image_size):
        raise ValueError(f"pixels shape {pixels.shape} does not fit model input {mcfg.channels}×{mcfg.image_size}²")
    if len(pixels) < 2:
        raise ValueError("need at least 2 images to train a model")
    device = dev.pick_device(device)
    torch.manual_seed(tcfg.seed)
    gen = torch.Generator().manual_seed(tcfg.seed)
    val, trn = split_validation(pixels, tcfg, np.random.default_rng(tcfg.seed))
    sch = schedule(tcfg, len(trn))
    if time_budget is not None:
        sch = replace(sch, budget=time_budget if time_budget > 0 else math.inf)
    run = start_run(mcfg, tcfg, device, gen)
    scaler = torch.amp.GradScaler("cuda") if dev.needs_grad_scaler(device, run.amp) else None

    sig = _signature(mcfg, tcfg, pixels)
    ckpt_path = Path(checkpoint) if checkpoint else None
    start_epoch = _resume(run, ckpt_path, sig) if ckpt_path is not None else 0
    if run.finished:  # the run had completed: nothing left to train
        run.kept.eval()
        return TrainResult(
            run.kept.to(memory_format=torch.contiguous_format).cpu(),
            run.epoch,
            run.elapsed,
            run.finished,
            run.history,
            start_epoch,
            trained_in(run),
        )

    t0 = time.perf_counter() - run.elapsed
    saved = -math.inf  # when the last checkpoint was written
    stopped_by = "epochs"
    run.model.train()
    while run.epoch < sch.max_epochs:
        losses, done, lr, out_of_time = train_epoch(run, trn, sch, tcfg, device, scaler, t0, progress)
        if done == 0:
            stopped_by = "time" if out_of_time else stopped_by
            break
        run.epoch += 1
        row = {"epoch": run.epoch, "seconds": round(time.perf_counter() - t0, 2), "lr": lr, **losses}
        row["precision"] = dev.precision_name(run.amp)
        if len(val):
            row["val_loss"] = validate(run, val, device, tcfg)
        run.history.append(row)
        if progress:
            progress("epoch", run.epoch, sch.max_epochs, **row)
        if ckpt_path is not None:
            if time.perf_counter() - saved >= CHECKPOINT_EVERY:  # tiny epochs: not a file write each
                _save_checkpoint(ckpt_path, sig, run, time.perf_counter() - t0)
                saved = time.perf_counter()
            crash_point("train-epoch")
        if out_of_time:
            stopped_by = "time"
            break
        if len(val) and run.bad_epochs >= sch.patience:
            stopped_by = "early-stop"
            break
    # with a time budget the cosine schedule ends at the deadline, so the last epoch is
    # usually the best; keep the best validation epoch only if early stopping kicked in
    if stopped_by == "early-stop" and run.best_state is not None:
        run.kept.load_state_dict(run.best_state)
    if ckpt_path is not None:
        run.finished = stopped_by
        _save_checkpoint(ckpt_path, sig, run, time.perf_counter() - t0)
    run.kept.eval()
    model = run.kept.to(memory_format=torch.contiguous_format).cpu()
    return TrainResult(
        model, run.epoch, time.perf_counter() - t0, stopped_by, run.history, start_epoch, trained_in(run)
    )


def trained_in(run: Run) -> str:
    """The precision(s) ``run``'s epochs were trained in, from its history (each epoch records its own,
    so a run resumed from a checkpoint made on another machine tells both: "bf16+fp32"); an epoch
    recorded before precisions were (or a run with no epoch yet) counts as this machine's."""
    here = dev.precision_name(run.amp)
    names = dict.fromkeys(row.get("precision", here) for row in run.history) or {here: None}
    return "+".join(names)


def _resume(run: Run, path: Path, sig: str) -> int:
    """Load a checkpoint of the same run into ``run`` (if there is one); → the epoch it resumes from."""
    state = _load_checkpoint(path, sig) if path.exists() else None
    if state is None:
        return 0
    run.model.load_state_dict(state["model"])
    if run.head is not None and state.get("head"):
        run.head.load_state_dict(state["head"])
    if run.ema is not None and state.get("ema"):
        run.ema.load_state_dict(state["ema"])
    run.opt.load_state_dict(state["opt"])
    run.gen.set_state(state["gen"])
    run.history, run.epoch, run.elapsed = state["history"], state["epoch"], state["elapsed"]
    run.best_loss, run.best_state, run.bad_epochs = state["best_loss"], state["best_state"], state["bad_epochs"]
    run.finished = state.get("finished")
    return run.epoch


def _save_checkpoint(path: Path, sig: str, run: Run, elapsed: float) -> None:
    import io

    from .store import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(
        {
            "signature": sig,
            "model": run.model.state_dict(),
            "head": run.head.state_dict() if run.head is not None else None,
            "ema": run.ema.state_dict() if run.ema is not None else None,
            "opt": run.opt.state_dict(),
            "gen": run.gen.get_state(),
            "history": run.history,
            "epoch": run.epoch,
            "elapsed": elapsed,
            "best_loss": run.best_loss,
            "best_state": run.best_state,
            "bad_epochs": run.bad_epochs,
            "finished": run.finished,
        },
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


def _load_checkpoint(path: Path, sig: str) -> dict | None:
    """A checkpoint of the same run (same data, configs), or None (stale or unreadable: start over)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        return state if state.get("signature") == sig else None
    except Exception:
        return None

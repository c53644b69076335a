"""The convolutional autoencoder: encoder → latent bottleneck → mirrored decoder.

One readable file. Shapes for the Fashion-MNIST default (28×28, 1 channel,
width 32, 2 downsampling stages, latent 128) are given in the comments.

The embedding used for search is the encoder's output (for the VAE, the mean
μ of the posterior).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .constants import OBJECTIVES  # noqa: F401 — re-exported: the training objectives
from .errors import ModelMismatchError, SimsearchError
from .settings import ModelConfig  # noqa: F401 — the model's settings (torch-free), re-exported

MODEL_FORMAT = 1


def _conv(c_in: int, c_out: int, k: int, stride: int, transpose: bool = False) -> nn.Sequential:
    """conv (k×k, stride) → BatchNorm → ReLU."""
    Conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    # padding 1 keeps the side for 3×3/stride 1 and exactly halves (doubles) it for 4×4/stride 2
    return nn.Sequential(
        Conv(c_in, c_out, k, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class ResBlock(nn.Module):
    """x + BN(conv3(ReLU(BN(conv3(x))))), then ReLU."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = cfg.stage_widths()
        layers: list[nn.Module] = []
        c = cfg.channels
        if cfg.stem:  # (B,1,28,28) → (B,16,28,28)
            layers.append(_conv(c, cfg.width, 3, 1))
            c = cfg.width
        for wi in w:  # 4×4 stride-2 convs: (B,1,28,28) → (B,32,14,14) → (B,64,7,7)
            layers.append(_conv(c, wi, 4, 2))
            layers += [ResBlock(wi) for _ in range(cfg.depth)]
            c = wi
        self.features = nn.Sequential(*layers)
        out = cfg.latent_dim * (2 if cfg.variational else 1)
        self.head = nn.Linear(w[-1] * cfg.final_side**2, out)  # (B,3136) → (B,128)  [VAE: μ‖log σ²]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class Decoder(nn.Module):
    """Mirror of the encoder: linear → (B,64,7,7) → transposed convs back to (B,C,H,W) logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = cfg.stage_widths()
        self.shape = (w[-1], cfg.final_side, cfg.final_side)
        self.head = nn.Linear(cfg.latent_dim, w[-1] * cfg.final_side**2)  # (B,128) → (B,3136)
        layers: list[nn.Module] = [nn.BatchNorm2d(w[-1]), nn.ReLU(inplace=True)]
        outs = ([cfg.width] if cfg.stem else [cfg.channels]) + w[:-1]  # channels after each up-stage
        for i in reversed(range(cfg.n_down)):  # (B,64,7,7) → (B,32,14,14) → (B,1,28,28)
            layers += [ResBlock(w[i]) for _ in range(cfg.depth)]
            last = i == 0 and not cfg.stem
            if last:
                layers.append(nn.ConvTranspose2d(w[i], outs[i], 4, stride=2, padding=1))
            else:
                layers.append(_conv(w[i], outs[i], 4, 2, transpose=True))
        if cfg.stem:
            layers.append(nn.Conv2d(cfg.width, cfg.channels, 3, padding=1))
        self.features = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(self.head(z).view(-1, *self.shape))


class AutoEncoder(nn.Module):
    """``encode`` gives the search embedding; ``forward`` returns reconstruction logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(μ, log σ²) for a VAE, (z, None) otherwise."""
        h = self.encoder(x)
        if self.config.variational:
            mu, logvar = h.chunk(2, dim=1)
            return mu, logvar.clamp(-12, 12)
        return h, None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W) in [0,1] → (B,latent_dim) embedding (μ for a VAE)."""
        return self.encode_stats(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class SiameseHead(nn.Module):
    """Training-only invariance branch on the bottleneck; dropped after training.

    ``simsiam`` (Chen & He 2021): a projector and a predictor; each view's prediction must match the
    other view's projection (gradient stopped on the target) — pulls two views of an image together.
    ``nce`` (instance discrimination, as in SimCLR / SSCD): the projections of two views of one image
    must be closer to each other than to any other image of the batch (NT-Xent at ``temperature``) —
    also pushes different images apart, which near-copy search needs."""

    def __init__(self, dim: int, kind: str = "simsiam", temperature: float = 0.2, hidden: int = 512):
        super().__init__()
        if kind not in ("simsiam", "nce"):
            raise ValueError(f"unknown invariance loss {kind!r} (simsiam or nce)")
        self.kind, self.temperature = kind, temperature
        self.project = nn.Sequential(
            nn.Linear(dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim, bias=False),
            nn.BatchNorm1d(dim),
        )
        self.predict = (
            nn.Sequential(
                nn.Linear(dim, hidden // 4, bias=False),
                nn.BatchNorm1d(hidden // 4),
                nn.ReLU(inplace=True),
                nn.Linear(hidden // 4, dim),
            )
            if kind == "simsiam"
            else None
        )

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        p1, p2 = self.project(z1), self.project(z2)
        if self.predict is not None:  # symmetric negative cosine, in [-1, 1]
            q1, q2 = self.predict(p1), self.predict(p2)
            return -0.5 * (F.cosine_similarity(q1, p2.detach()).mean() + F.cosine_similarity(q2, p1.detach()).mean())
        p1, p2 = F.normalize(p1.float(), dim=1), F.normalize(p2.float(), dim=1)
        logits = p1 @ p2.T / self.temperature  # (B, B): the diagonal holds the positive pairs
        target = torch.arange(len(p1), device=p1.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def build(cfg: ModelConfig) -> AutoEncoder:
    return AutoEncoder(cfg)


# ---------------------------------------------------------------- persistence


def save(model: AutoEncoder, path: str | os.PathLike, extra: dict | None = None) -> str:
    """Write weights + config atomically; return the file's sha256."""
    buf = io.BytesIO()
    torch.save(
        {
            "format": MODEL_FORMAT,
            "config": model.config.to_dict(),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            "extra": extra or {},
        },
        buf,
    )
    data = buf.getvalue()
    from .store import atomic_write_bytes  # local import: store has no torch dependency

    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def load(path: str | os.PathLike, expected_sha256: str | None = None) -> tuple[AutoEncoder, dict]:
    """Load a saved model; verify its hash when ``expected_sha256`` is given."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SimsearchError(f"{path}: model file not found") from None
    except OSError as e:
        raise SimsearchError(f"{path}: cannot read model file ({e.strerror or e})") from None
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise ModelMismatchError(
            f"{path}: model hash {digest[:12]} does not match the index's model {expected_sha256[:12]}"
            " (rebuild the index with `simsearch index --retrain` or use the model that built it)"
        )
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
            raise ValueError("not a simsearch model file")
        if int(ckpt.get("format", 0)) > MODEL_FORMAT:
            raise ValueError(f"model format {ckpt['format']} is newer than this simsearch supports")
        cfg = ModelConfig.from_dict(ckpt["config"])
        model = AutoEncoder(cfg)
        model.load_state_dict(ckpt["state_dict"])
    except SimsearchError:
        raise
    except Exception as e:  # pickle/zip/shape errors all mean the same thing to a user
        raise SimsearchError(f"{path}: not a usable simsearch model ({e})") from None
    model.eval()
    return model, {"sha256": digest, "extra": ckpt.get("extra", {})}


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Mean per-pixel loss between decoder logits and the [0,1] target."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    if kind == "mse":
        return F.mse_loss(torch.sigmoid(logits), target)
    raise ValueError(f"unknown reconstruction loss {kind!r} (bce or mse)")

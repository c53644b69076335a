"""The settings of a model and of its training, as plain dataclasses without torch: the CLI and
the indexer build them (and an index records them) without loading torch. ``model.py`` and
``train.py`` use them; serialisation follows ``configs`` (unknown keys ignored)."""

from __future__ import annotations

from dataclasses import dataclass

from . import configs
from .constants import OBJECTIVES, PRECISIONS

DEFAULT_EPOCHS = 40  # the epoch cap when none is given (raised for a small folder: TrainConfig.min_steps)
# Seconds a build that trains a model aims to finish in (``simsearch index``; BuildOptions.build_budget): the
# training budget is shortened by the embedding and fitting still to come, estimated on this machine. With
# the fixed 520 s training budget the 60k Fashion-MNIST build took 588 s on the 2-core machine that budget was
# set on and 628 s on a slower one (embed 43–67 s instead of 30): a fixed training budget cannot promise ten
# minutes on every machine. 570 leaves 30 s for start-up and estimation error.
BUILD_BUDGET = 570.0


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 28  # input side in px (square)
    channels: int = 1  # 1 = grayscale, 3 = RGB
    latent_dim: int = 128  # embedding size
    width: int = 16  # base width: stage i of the encoder has width·2^(i+1) channels (capped)
    max_width: int = 256
    stem: bool = False  # a full-resolution 3×3 conv (width channels) before the first downsampling
    depth: int = 0  # residual blocks after each downsampling stage
    variational: bool = False  # encoder predicts (μ, log σ²) instead of z

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if not 8 <= self.image_size <= 1024 or self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 in 8..1024, got {self.image_size}")
        if not 2 <= self.latent_dim <= 4096:
            raise ValueError(f"latent_dim must be in 2..4096, got {self.latent_dim}")
        if not 0 <= self.depth <= 4:
            raise ValueError(f"depth must be in 0..4, got {self.depth}")
        if not 4 <= self.width <= self.max_width:
            raise ValueError(f"width must be in 4..{self.max_width}, got {self.width}")

    @property
    def n_down(self) -> int:
        """Stride-2 stages: halve while the side is even and > 8, at most 4 (28→14→7, 64→32→16→8)."""
        n, side = 0, self.image_size
        while n < 4 and side > 8 and side % 2 == 0:
            side //= 2
            n += 1
        return n

    @property
    def final_side(self) -> int:
        return self.image_size >> self.n_down

    def stage_widths(self) -> list[int]:
        """Channels after each downsampling stage, e.g. [32, 64] for width 16 at 28 px."""
        return [min(self.width * 2 ** (i + 1), self.max_width) for i in range(self.n_down)]

    def to_dict(self) -> dict:
        return configs.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return configs.from_dict(cls, d)


@dataclass(frozen=True)
class TrainConfig:
    objective: str = "dae"
    max_epochs: int | None = None  # None: DEFAULT_EPOCHS, raised for a small folder to min_steps; a number is kept
    # with the default epoch cap, a small folder gets at least this many optimizer steps (the time
    # budget still binds; an explicit max_epochs is kept as given). Digits (900 images, 3 steps
    # an epoch): P@10 +0.011 / +0.013 / +0.019 on three development splits; clip art (4,000
    # images) level; Fashion-MNIST untouched (40 epochs are 8,900 steps)
    min_steps: int = 2000
    # seconds of training; 0 = no limit. 520 (was 540) since format 4's embedding pass also stores the denoising
    # error: the 60k Fashion-MNIST build took 604.7 s with 540 (train 541.6, embed 29.3 s, was 10.3) on a quiet
    # 2-core machine, and must stay under 10 minutes
    time_budget: float = 520.0
    # the training set: at most this many images, a uniform random sample (seeded by ``seed``) when
    # the folder has more; 0 = every image. 100k keeps Fashion-MNIST's 60k train folder whole, and
    # more than 100k images of 28 px would not all be seen in the default time budget anyway.
    max_images: int = 100_000
    # and at most this many bytes of decoded pixels (C·S·S per image): 2 GiB is 174k images of
    # 64 px RGB and 10,900 of 256 px RGB, so large inputs stay bounded too; 0 = no byte limit
    max_sample_bytes: int = 2 << 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    loss: str = "bce"  # reconstruction loss: bce | mse
    val_fraction: float = 0.05
    patience: int = 4  # epochs without validation improvement before stopping (at least a tenth of the run)
    seed: int = 0
    # objective knobs
    noise_std: float = 0.0  # dae: Gaussian noise on the input
    mask_prob: float = 0.0  # dae: fraction of input pixels zeroed
    sparsity: float = 1e-3  # sparse: L1 weight on the code
    beta: float = 0.5  # vae: KL weight (per latent unit, relative to per-pixel recon)
    contractive: float = 1e-2  # cae: Jacobian penalty weight
    # dae corruption, per sample (see ``corrupt_views``): the edits a copy goes through.
    # Chosen on the clip-art development half and the Fashion-MNIST validation split (README, ablation).
    shift: float = 0.06  # translation, fraction of the side (±)
    scale: float = 0.15  # zoom (1 ± scale)
    flip: bool = True  # horizontal flip, p = 0.5
    aspect: float = 0.1  # anisotropic stretch (1 ± aspect on one axis)
    rotate: float = 5.0  # degrees (±)
    light: float = 0.15  # brightness shift ± light and contrast factor 1 ± light
    saturation: float = 0.25  # colour saturation factor 1 ± saturation (RGB models)
    blur: float = 0.3  # probability of a down-and-up resampling (a copy that was shrunk, or re-compressed)
    pad: float = 0.3  # probability of a border: shrunk by up to 20% onto white, black or the edge colour
    # probability of a grey view (saturation 0; RGB models). Measured 2026-12-03 (README ablation), clip art: grey
    # copies +0.25–0.29 R@1, but framed −0.09–0.13, cropped −0.05–0.07, the bench's default strength −0.01; off
    grey: float = 0.0
    # probability of an occluding box of one colour over 2–20% of the view (``train.random_erase``: a caption,
    # a watermark, a sticker). Measured 2026-12-03 (README ablation): Fashion-MNIST validation +0.009 P@10 and
    # +0.011 mAP (two seeds); clip art at the default budget: strong copies +0.03 R@1, framed and cropped +0.08,
    # watermarked +0.05, light −0.02, the rest level; digits +0.005 P@10
    erase: float = 0.3
    jpeg: float = 0.0  # probability of a JPEG re-save at quality 30–90 (``train.random_jpeg``), last of the edits
    # invariance: weight of a term between the codes of two corrupted views (0 = off), its kind
    # (model.SiameseHead: "simsiam" pulls views together, "nce" also pushes other images apart)
    invariance: float = 0.1
    invariance_loss: str = "nce"
    # the second view is encoded without gradient: the branch costs one encoder pass, not three
    # (28 px: 76 vs 104 ms per step on 2 cores; same clip-art recall, more epochs in the budget)
    invariance_grad: bool = False
    temperature: float = 0.2  # nce
    # dae: weight of a spreading term on the (first) corrupted view's L2-normalised code (KoLeo: −mean log
    # of each code's distance to its nearest other code in the batch; Sablayrolles et al. 2019, used by SSCD
    # for copy detection); 0 = off. Measured 2026-12-03 (README ablation): clip-art copies level at 0.1 and worse at 1.0
    # (strong copies −0.08 R@1), Fashion-MNIST validation mAP −0.031 at 0.1 (it spreads the classes apart too)
    koleo: float = 0.0
    # an exponential moving average of the weights, updated after every step, is the model that is kept
    # (and validated): its decay per step (0 = off: the last weights). ``ema_target``: it also encodes
    # the invariance term's second view (a momentum encoder, as in BYOL/MoCo) instead of the model itself
    ema: float = 0.0
    ema_target: bool = False
    # arithmetic of the training steps: "auto" = mixed precision where the hardware does it natively
    # (CUDA; a CPU with AVX512-BF16 or AMX: bf16, steps 1.42× faster at 28 px and 1.84× at 64 px RGB on
    # a 2-core VM, same quality at equal epochs), else fp32; "fp32"; "bf16" (forced, also on a CPU that
    # only emulates it: slow). Weights, validation and embeddings stay fp32 on the CPU.
    precision: str = "auto"

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r} (choose from {', '.join(OBJECTIVES)})")
        if self.loss not in ("bce", "mse"):
            raise ValueError(f"unknown loss {self.loss!r} (bce or mse)")
        if self.batch_size < 2:
            raise ValueError("batch_size must be ≥ 2")
        if self.max_images < 0 or self.max_images == 1:
            raise ValueError(f"the training sample needs at least 2 images (0 = all), got {self.max_images}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (choose from {', '.join(PRECISIONS)})")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1) (0 = off), got {self.ema}")
        if self.ema_target and not self.ema:
            raise ValueError("ema_target needs an average of the weights: set ema > 0")
        if self.koleo < 0:
            raise ValueError(f"koleo must be ≥ 0 (0 = off), got {self.koleo}")
        if self.koleo and self.objective != "dae":
            raise ValueError(f"koleo is a term of the dae objective, not of {self.objective!r}")
        if self.max_sample_bytes < 0:
            raise ValueError(f"max_sample_bytes must be ≥ 0 (0 = no limit), got {self.max_sample_bytes}")

    def to_dict(self) -> dict:
        return configs.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return configs.from_dict(cls, d)


def corruption_config(train: dict | None) -> TrainConfig:
    """The corruptions of a model's training (``ModelRecord.train``, what a model file records
    under ``extra["train"]``; None or without a config: the defaults): what ``Index.corrupt`` and
    the denoising error of the embedding pass apply."""
    config = ((train or {}).get("config")) or {}
    if config:  # a model trained before a corruption existed was not trained with it: off, not today's default
        config = {**CORRUPTIONS_ADDED_LATER, **config}
    return TrainConfig.from_dict(config)


def corruption_edits(cfg: TrainConfig) -> list[str]:
    """The edits of ``cfg``'s training corruption that are on, in the order ``train.corrupt_views``
    applies them, as a person would name them (a sheet's caption, ``Index.corruption_edits``)."""
    edits = [
        ("shift", cfg.shift),
        ("zoom", cfg.scale),
        ("mirror", cfg.flip),
        ("stretch", cfg.aspect),
        ("rotation", cfg.rotate),
        ("border", cfg.pad),
        ("light", cfg.light),
        ("saturation", cfg.saturation),
        ("grey", cfg.grey),
        ("occluding box", cfg.erase),
        ("blur", cfg.blur),
        ("JPEG", cfg.jpeg),
        ("noise", cfg.noise_std),
        ("masked pixels", cfg.mask_prob),
    ]
    return [name for name, on in edits if on]


# corruptions added after models were first recorded, with the value that turns each off
CORRUPTIONS_ADDED_LATER: dict[str, float] = {"jpeg": 0.0, "grey": 0.0, "erase": 0.0}


def model_config_for(objective: str, **kw) -> ModelConfig:
    return ModelConfig(variational=(objective == "vae"), **kw)

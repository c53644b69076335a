"""Where tensors live: device choice, mixed precision, host→device copies.

Imported only by the torch stages (model, train, embed); never by the CLI's
``--help`` path.
"""

from __future__ import annotations

import contextlib

import torch

from .constants import PRECISIONS
from .errors import SimsearchError

DEVICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """cuda > mps > cpu for ``auto``; an explicit name must be available; a ``torch.device`` as it is."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICES[1:]:
        raise SimsearchError(f"unknown device {name!r} (choose from {', '.join(DEVICES)})")
    if kind == "cuda" and not torch.cuda.is_available():
        raise SimsearchError("--device cuda: no CUDA GPU is available on this machine")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SimsearchError("--device mps: Apple MPS is not available on this machine")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """The CPU has bf16 instructions (AVX512-BF16 or AMX): oneDNN's bf16 convolutions run there
    faster than fp32 (training steps 1.42× at 28 px, 1.84× at 64 px RGB on a 2-core AVX512-BF16 VM;
    ``scripts/bench_speed.py`` row 7); emulated on older CPUs they were 12× slower, so ``auto``
    never picks them there."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        probe = getattr(torch.cpu, name, None)  # private helpers (torch ≥ 2.3); absent: assume none
        try:
            if probe is not None and probe():
                return True
        except Exception:  # noqa: BLE001 — a failing capability probe means "no"
            pass
    return False


def amp_dtype(device: torch.device, precision: str = "auto", training: bool = False) -> torch.dtype | None:
    """The autocast dtype for work on ``device`` (None: fp32 throughout).

    CUDA: bf16 where supported, else fp16, unless ``precision`` is ``fp32``. CPU: only for
    ``training`` (embeddings stay fp32 on the CPU), bf16 when asked for or, with ``auto``, when
    the CPU computes it natively (``cpu_has_native_bf16``). Elsewhere (MPS): None."""
    if precision not in PRECISIONS:
        raise SimsearchError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and training and (precision == "bf16" or cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """An ``amp_dtype`` as the name a user sees: fp32 (None), bf16 or fp16."""
    names: dict[torch.dtype | None, str] = {torch.bfloat16: "bf16", torch.float16: "fp16"}
    return names.get(dtype, "fp32")


def autocast(device: torch.device, enabled: bool = True, dtype: torch.dtype | str | None = "default"):
    """Mixed precision: ``dtype`` (default: ``amp_dtype(device)``, i.e. CUDA only); None or
    ``enabled=False``: a no-op."""
    if dtype == "default":
        dtype = amp_dtype(device)
    if enabled and isinstance(dtype, torch.dtype):
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


def needs_grad_scaler(device: torch.device, dtype: torch.dtype | str | None = "default") -> bool:
    """fp16 autocast needs loss scaling; bf16 and fp32 do not."""
    if dtype == "default":
        dtype = amp_dtype(device)
    return dtype == torch.float16


def to_device(batch_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N,C,H,W) on the host → float in [0,1] on ``device``.

    The uint8 tensor travels (4× less traffic than float); on CUDA it is pinned
    and copied asynchronously, and converted on the GPU.
    """
    if device.type == "cuda":
        batch_u8 = batch_u8.pin_memory().to(device, non_blocking=True)
    else:
        batch_u8 = batch_u8.to(device)
    x = batch_u8.float().div_(255.0)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x

"""Where tensors live: device choice, mixed precision, host→device copies.

Imported only by the torch stages (model, train, embed); never by the CLI's
``--help`` path.
"""

from __future__ import annotations

import contextlib

import torch

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


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def needs_grad_scaler(device: torch.device) -> bool:
    """fp16 autocast needs loss scaling; bf16 and fp32 do not."""
    return device.type == "cuda" and not torch.cuda.is_bf16_supported()


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

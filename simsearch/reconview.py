"""What the model sees and redraws (``simsearch reconstruct``): each image as the model input,
beside the autoencoder's reconstruction of it; for a denoising model (``--objective dae``) also a
corrupted version (the training corruption: ``Index.corrupt``) beside what the model makes of it.

One PNG per image in the output folder (``<n>-<name>.png``), plus ``reconstructions.png`` with
all of them. Uses ``Index.preprocess`` / ``reconstruct`` / ``corrupt`` (torch, for the decoder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import reconerror
from .errors import ImageError, SimsearchError

THUMB = 160


@dataclass
class Shown:
    source: str
    png: Path
    mse: float  # reconstruction error of the image itself (0–1 pixel scale)
    denoised_mse: float | None = None  # of the corrupted version's output against the clean image


def load_pixels(index, images) -> tuple[np.ndarray, list[str]]:
    """Model-input pixels of image files (or indexed ids) → (uint8 (N, C, S, S), their names).
    A file that cannot be read raises SimsearchError naming it and the reason."""
    from .decode import open_image
    from .preprocess import preprocess

    pre = index.preprocess
    out, names = [], []
    for item in images:
        path = index.path_of(int(item)) if isinstance(item, int) else Path(item)
        try:
            out.append(preprocess(open_image(path), pre))
        except ImageError as e:
            raise SimsearchError(f"{path}: {e}") from None
        except OSError as e:
            raise SimsearchError(f"{path}: cannot read ({e.strerror or e})") from None
        names.append(os.fsdecode(path))
    return np.stack(out), names


def show(index, images, out_dir: str | os.PathLike, thumb: int = THUMB, seed: int = 0) -> list[Shown]:
    """Write the reconstruction sheets for ``images`` into ``out_dir``; → what was written."""
    from .render import strips_sheet

    if not images:
        raise SimsearchError("no images given")
    pixels, names = load_pixels(index, images)
    recon = index.reconstruct(pixels)
    err = reconerror.stats(pixels, recon)[:, 0]
    denoising = (index.info().get("objective") or "") == "dae"
    if denoising:
        noisy = index.corrupt(pixels, seed=seed)
        fixed = index.reconstruct(noisy)
        noisy_err = reconerror.stats(pixels, fixed)[:, 0]
        labels = ["model input", "reconstruction", "corrupted", "model output"]
    else:
        labels = ["model input", "reconstruction"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shown, cells = [], []
    for i, name in enumerate(names):
        imgs = [pixels[i], recon[i]] + ([noisy[i], fixed[i]] if denoising else [])
        caption = [Path(name).name, f"reconstruction error {err[i]:.4f}"]
        if denoising:
            caption.append(f"model output vs the clean input: error {noisy_err[i]:.4f}")
        cells.append((imgs, caption))
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).stem)[:60]
        png = strips_sheet([(imgs, caption)], out_dir / f"{i + 1:03d}-{stem}.png", labels, thumb)
        shown.append(Shown(name, png, float(err[i]), float(noisy_err[i]) if denoising else None))
    pre = index.preprocess
    dim = index.meta.embedding.dim
    title = (
        f"What the autoencoder keeps of an image. Model input: the image as the model sees it "
        f"({pre.channels}x{pre.size}x{pre.size}). Reconstruction: redrawn from its {dim}-number code."
    )
    if denoising:
        title += (
            f" Corrupted: a copy with the edits the denoising model was trained to undo, each drawn at random"
            f" ({', '.join(index.corruption_edits())}). Model output: what it makes of that copy."
        )
    title += " Error: mean squared difference, pixels 0-1."
    strips_sheet(cells, out_dir / "reconstructions.png", labels, thumb, columns=1 if denoising else 2, title=title)
    return shown

#!/usr/bin/env python3
"""Training settings compared on the Fashion-MNIST VALIDATION split, through the product.

Validation (``simsearch.evaluate.split_folder``): train images 00000-09999
query, 10000-59999 are the gallery (labels = class folders, scoring only). Each
config trains a model on the gallery with ``simsearch.Index.build``
(``BuildOptions.train`` overrides ``TrainConfig``), then ``simsearch.evaluate``
scores the queries. Prints one JSON line per config.

    python scripts/research/train_sweep.py --epochs 30 --device cuda \\
        --config base='{}' --config inv='{"invariance": 0.5}'

A config's ``width``, ``depth`` and ``dim`` set the architecture (``ModelConfig``), ``fit`` the
preprocessing; ``--budget S`` trains each config for S seconds (the default epoch cap) instead of a
fixed ``--epochs``, so that a costlier config is compared at equal time.

``--probe`` instead times training steps on this machine for each config
(ms per 256-image step at 28x28x1 and 64x64x3, in the precision training would use
here), to turn a time budget into epochs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import simsearch
from simsearch.evaluate import evaluate_index, split_folder
from simsearch.indexer import BuildOptions

BUILD_KEYS = ("fit",)  # BuildOptions fields a config may set besides the architecture


def split_architecture(cfg: dict) -> tuple[dict, dict]:
    """A config → (its TrainConfig overrides, its architecture keys: ``BuildOptions.MODEL_NAMES``, and
    ``BUILD_KEYS``)."""
    arch = {k: v for k, v in cfg.items() if k in BuildOptions.MODEL_NAMES or k in BUILD_KEYS}
    return {k: v for k, v in cfg.items() if k not in arch}, arch


def probe(name: str, cfg: dict, steps: int = 8) -> dict:
    import torch

    from simsearch import device as D
    from simsearch import model as M
    from simsearch import train as T

    cfg, arch = split_architecture(cfg)
    arch = {BuildOptions.MODEL_NAMES[k]: v for k, v in arch.items() if k in BuildOptions.MODEL_NAMES}  # ModelConfig's
    cpu = torch.device("cpu")
    amp = D.amp_dtype(cpu, T.TrainConfig(**cfg).precision, training=True)
    out = {"config": name, "precision": D.precision_name(amp)}
    for size, ch in ((28, 1), (64, 3)):
        tcfg = T.TrainConfig(**cfg)
        mcfg = T.model_config_for(tcfg.objective, image_size=size, channels=ch, **arch)
        model = M.build(mcfg).to(memory_format=torch.channels_last)
        head = M.SiameseHead(mcfg.latent_dim, tcfg.invariance_loss, tcfg.temperature) if tcfg.invariance > 0 else None
        params = list(model.parameters()) + (list(head.parameters()) if head else [])
        opt = torch.optim.AdamW(params, lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(256, ch, size, size)
        times = []
        for i in range(steps + 2):
            t = time.perf_counter()
            with D.autocast(cpu, dtype=amp):  # the precision training would use here
                loss, _ = T.objective_loss(model, x, tcfg, gen, head)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= 2:
                times.append(time.perf_counter() - t)
        out[f"ms_step_{size}x{ch}"] = round(1000 * float(np.median(times)), 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, default=Path("data/fashion-mnist/train"))
    ap.add_argument("--work", type=Path, default=Path("data/fmnist-val"))
    ap.add_argument("--config", action="append", default=[], help="NAME=JSON of TrainConfig overrides")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="train for this many seconds under the default epoch cap instead of --epochs",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("--limit-queries", type=int, default=None, help="score a random sample of the 10k queries")
    a = ap.parse_args()
    configs = {c.split("=", 1)[0]: json.loads(c.split("=", 1)[1]) for c in a.config} or {"default": {}}
    if a.probe:
        for name, cfg in configs.items():
            print(json.dumps(probe(name, cfg)), flush=True)
        return 0
    q, g = split_folder(a.train, a.work)
    for name, cfg in configs.items():
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            cfg, arch = split_architecture(cfg)
            if a.budget is not None:
                length = {"max_epochs": None, "time_budget": a.budget}
            else:
                length = {"max_epochs": a.epochs, "time_budget": 0}
            opts = BuildOptions.of(device=a.device, train=cfg, **length, **arch)
            idx = simsearch.Index.build(g, Path(tmp) / "idx", options=opts)
            m = evaluate_index(idx, str(q), limit=a.limit_queries)
            print(
                json.dumps(
                    {
                        "config": name,
                        "epochs": idx.info()["trained_epochs"],
                        "P@1": round(m["P@1"], 4),
                        "P@10": round(m["P@10"], 4),
                        "mAP": round(m["mAP"], 4),
                        "train_s": idx.info()["train_seconds"],
                        "seconds": round(time.perf_counter() - t),
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

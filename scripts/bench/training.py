"""Row 7: training throughput of the default objective, fp32 against the precision ``auto`` picks here."""

from __future__ import annotations

import numpy as np

from .common import faster, log, row
from .context import Ctx

SHAPES = ((1, 28), (3, 64))  # Fashion-MNIST's input, and what a colour folder of larger images gets


def row_train(ctx: Ctx) -> list[dict]:
    import torch

    from simsearch import device, train

    auto_name = device.precision_name(device.amp_dtype(torch.device("cpu"), "auto", training=True))
    steps = 3 if ctx.a.quick else 30
    rows = []
    for channels, side in SHAPES:
        batch = train.TrainConfig().batch_size
        n = batch * (steps // 3)  # three epochs of steps // 3 optimizer steps each
        pixels = np.random.default_rng(0).integers(0, 256, (n, channels, side, side), dtype=np.uint8)
        cfg = train.model_config_for(train.TrainConfig().objective, image_size=side, channels=channels)
        times: dict[str, list[float]] = {"fp32": [], auto_name: []}
        log(f"row 7: training {3 * (n // batch)} steps at {channels}×{side}×{side}, fp32 and {auto_name}")
        for rep in range(max(1, ctx.a.reps) + 1):  # interleaved, so that load from elsewhere hits both alike
            for precision in dict.fromkeys(("fp32", auto_name)):
                tcfg = train.TrainConfig(max_epochs=3, time_budget=0, val_fraction=0, precision=precision)
                res = train.train(pixels, cfg, tcfg, "cpu")
                if rep:  # the first round warms the allocator and oneDNN's kernel cache
                    times[precision].append(res.seconds / (3 * (n // batch)))
        fp32 = float(np.median(times["fp32"]))
        what = f"train.train on cpu, default objective, {channels}×{side}×{side}, batch {batch}"
        rows.append(row("7", f"{what}, fp32", batch / fp32, "images/s", notes=f"{1000 * fp32:.0f} ms a step"))
        if auto_name != "fp32":
            t = float(np.median(times[auto_name]))
            rows.append(
                row(
                    "7",
                    f"{what}, {auto_name} (what precision auto picks on this CPU)",
                    batch / t,
                    "images/s",
                    "fp32",
                    faster(t, fp32),
                    f"{1000 * t:.0f} ms a step; autocast on the CPU's bf16 instructions",
                )
            )
        else:
            rows.append(
                row("7", f"{what}, bf16", None, "images/s", notes="skipped: auto stays fp32 (no bf16 instructions)")
            )
    return rows

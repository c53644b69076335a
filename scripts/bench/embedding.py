"""Row 2: embedding throughput (torch on CPU, CUDA if present) and the torch-free numpy query encoder."""

from __future__ import annotations

import numpy as np

from .common import faster, log, ms, row, timeit
from .context import Ctx


def row_embed(ctx: Ctx) -> list[dict]:
    import torch

    from simsearch import embed, train
    from simsearch import model as model_mod

    objective = train.TrainConfig().objective
    cfg = train.model_config_for(objective, image_size=28, channels=1)
    n, reps = ctx.a.embed_n, ctx.a.reps
    pixels = np.random.default_rng(0).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    what = f"default '{objective}' model 1×28×28 → {cfg.latent_dim}-d (untrained)"
    rows = []
    model = model_mod.build(cfg).eval()
    n_params = sum(p.numel() for p in model.encoder.parameters())
    log(f"row 2: embedding {n} images on cpu ({reps} reps)")
    cpu = timeit(lambda i: embed.embed(model, pixels, "cpu"), reps, warmup=1)
    bs = embed.default_batch_size
    rows.append(
        row(
            "2",
            f"embed.embed on cpu, {what}, {n} images",
            n / cpu.median,
            "images/s",
            notes=f"batch {bs(torch.device('cpu'))}, {torch.get_num_threads()} torch threads, "
            f"encoder {n_params / 1e6:.2f} M params; 1 warm-up call",
        )
    )
    from simsearch.views import tta_views_for

    views = tta_views_for(28)
    log(f"row 2: embedding {n} images on cpu with the default {len(views)} test-time views ({reps} reps)")
    tta = timeit(lambda i: embed.embed(model, pixels, "cpu", views=views), reps, warmup=1)
    rows.append(
        row(
            "2",
            f"… the same with simsearch's default {len(views)} test-time views (index default)",
            n / tta.median,
            "images/s",
            "one view",
            faster(tta.median, cpu.median),
            f"{len(views)} encoder passes per image (the image and its 1-px shifts), codes averaged; "
            "--no-tta gives the one-view figure",
        )
    )
    rows += colour_rows(ctx)
    rows += numpy_encoder_rows(ctx, model, pixels, cpu.median / n)
    if not torch.cuda.is_available():
        rows.append(row("2", f"embed.embed on cuda, {what}", None, "images/s", notes="skipped: CUDA not available"))
        return rows
    gpu_model = model_mod.build(cfg)
    log(f"row 2: embedding {n} images on cuda ({reps} reps)")
    gpu = timeit(lambda i: embed.embed(gpu_model, pixels, "cuda"), max(reps, 3), warmup=1)
    rows.append(
        row(
            "2",
            f"embed.embed on cuda, {what}, {n} images",
            n / gpu.median,
            "images/s",
            "embed.embed on cpu",
            faster(gpu.median, cpu.median),
            f"batch {bs(torch.device('cuda'))}, {torch.cuda.get_device_name(0)}, autocast; incl. host→device copies",
        )
    )
    return rows


def numpy_encoder_rows(ctx: Ctx, model, pixels: np.ndarray, torch_s_per_image: float) -> list[dict]:
    """The torch-free encoder simsearch uses for small CPU query batches, next to torch."""
    try:
        from simsearch import numpy_encoder
    except ImportError:
        return []
    from simsearch import embed

    path = ctx.tmp / "encoder.npz"
    path.write_bytes(numpy_encoder.export(model))
    enc = numpy_encoder.NumpyEncoder(path)
    reps = ctx.a.reps
    batch = pixels[:256]
    log(f"row 2: numpy encoder, batch of {len(batch)} and single images")
    t_np = timeit(lambda i: enc(batch), reps, warmup=1)
    err = float(np.abs(enc(batch[:8]) - embed.embed(model, batch[:8], "cpu")).max())
    rows = [
        row(
            "2",
            f"numpy_encoder (simsearch's CPU query encoder), batch of {len(batch)}",
            len(batch) / t_np.median,
            "images/s",
            "embed.embed on cpu",
            faster(t_np.median / len(batch), torch_s_per_image),
            f"max |numpy − torch| = {err:.2g}",
        )
    ]
    n1 = max(10, ctx.a.single // 3)
    one_t = timeit(lambda i: embed.embed(model, pixels[i : i + 1], "cpu"), n1, warmup=2)
    one_np = timeit(lambda i: enc(pixels[i : i + 1]), n1, warmup=2)
    rows.append(
        row(
            "2",
            "one image: embed.embed on cpu (torch)",
            one_t.median * 1e3,
            "ms p50",
            notes=f"p99 {ms(one_t.p99)}, n={one_t.n}",
        )
    )
    rows.append(
        row(
            "2",
            "one image: numpy_encoder",
            one_np.median * 1e3,
            "ms p50",
            "torch, one image",
            faster(one_np.median, one_t.median),
            f"p99 {ms(one_np.p99)}, n={one_np.n}",
        )
    )
    return rows


def colour_rows(ctx: Ctx) -> list[dict]:
    """The model a colour folder gets (3×64×64, e.g. clip art or photos): the embedding cost that
    docs/scale.md's cost model uses, one view and the default test-time views."""
    from simsearch import embed, train
    from simsearch import model as model_mod
    from simsearch.views import tta_views_for

    cfg = train.model_config_for(train.TrainConfig().objective, image_size=64, channels=3)
    model = model_mod.build(cfg).eval()
    n = max(ctx.a.embed_n // 8, 64)
    pixels = np.random.default_rng(1).integers(0, 256, (n, 3, 64, 64), dtype=np.uint8)
    views = tta_views_for(64)
    log(f"row 2: embedding {n} 3×64×64 images on cpu, 1 and {len(views)} views ({ctx.a.reps} reps)")
    one = timeit(lambda i: embed.embed(model, pixels, "cpu"), ctx.a.reps, warmup=1)
    tta = timeit(lambda i: embed.embed(model, pixels, "cpu", views=views), ctx.a.reps, warmup=1)
    what = f"3×64×64 → {cfg.latent_dim}-d (untrained; the input colour folders get)"
    return [
        row("2", f"embed.embed on cpu, {what}, {n} images, one view", n / one.median, "images/s"),
        row(
            "2",
            f"… the same with the default {len(views)} test-time views",
            n / tta.median,
            "images/s",
            "one view",
            faster(tta.median, one.median),
        ),
    ]

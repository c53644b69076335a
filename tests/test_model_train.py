"""The autoencoder, every training objective, embedding and resume."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from simsearch import model as M
from simsearch import train as T
from simsearch.constants import OBJECTIVES
from simsearch.embed import embed
from simsearch.errors import ModelMismatchError, SimsearchError


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 1), (16, 3), (96, 3)])
def test_shapes_round_trip(size, channels):
    cfg = M.ModelConfig(image_size=size, channels=channels, latent_dim=32, width=8, depth=0)
    m = M.build(cfg)
    x = torch.rand(3, channels, size, size)
    z = m.encode(x)
    assert z.shape == (3, 32)
    assert m.decode(z).shape == x.shape


def test_vae_encodes_mu():
    m = M.build(M.ModelConfig(latent_dim=16, width=8, depth=0, variational=True)).eval()
    x = torch.rand(2, 1, 28, 28)
    mu, logvar = m.encode_stats(x)
    assert mu.shape == logvar.shape == (2, 16)
    assert torch.equal(m.encode(x), mu)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError):
        M.ModelConfig(channels=2)
    with pytest.raises(ValueError):
        M.ModelConfig(image_size=30)
    with pytest.raises(ValueError):
        T.TrainConfig(objective="gan")


def pixels(n=64, size=28, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_trains_and_lowers_the_loss(objective):
    data = np.zeros((96, 1, 28, 28), np.uint8)
    data[:, :, 8:20, 8:20] = np.random.default_rng(0).integers(100, 255, (96, 1, 1, 1))  # learnable structure
    mcfg = T.model_config_for(objective, latent_dim=16, width=8, depth=0)
    tcfg = T.TrainConfig(objective=objective, max_epochs=6, time_budget=0, batch_size=32, lr=3e-3, val_fraction=0)
    res = T.train(data, mcfg, tcfg, "cpu")
    assert res.epochs == 6 and res.stopped_by == "epochs"
    first, last = res.history[0]["rec"], res.history[-1]["rec"]
    assert np.isfinite(last) and last < first
    z = embed(res.model, data, "cpu")
    assert z.shape == (96, 16) and z.dtype == np.float32 and np.isfinite(z).all()


def test_time_budget_stops_training():
    # no validation split, so early stopping cannot end the run before the budget does
    tcfg = T.TrainConfig(objective="ae", max_epochs=1000, time_budget=1.0, batch_size=16, val_fraction=0)
    res = T.train(pixels(256), T.model_config_for("ae", latent_dim=8, width=8, depth=0), tcfg, "cpu")
    assert res.stopped_by == "time" and res.epochs < 1000 and res.seconds < 10


def test_a_given_time_budget_replaces_the_configs_and_keeps_the_run_resumable(tmp_path):
    """``train(time_budget=…)`` (a build's deadline) stops the run by time without changing its identity:
    a re-run with another budget resumes the same checkpoint."""
    mcfg = T.model_config_for("ae", latent_dim=8, width=8, depth=0)
    tcfg = T.TrainConfig(objective="ae", max_epochs=1000, time_budget=600.0, batch_size=16, val_fraction=0)
    ck = tmp_path / "train.ckpt"
    res = T.train(pixels(256), mcfg, tcfg, "cpu", checkpoint=ck, time_budget=1.0)
    assert res.stopped_by == "time" and res.epochs < 1000 and res.seconds < 10
    again = T.train(pixels(256), mcfg, tcfg, "cpu", checkpoint=ck, time_budget=2.0)
    assert again.resumed_from == res.epochs  # the checkpoint recorded a finished run: nothing trained again
    assert again.epochs == res.epochs


def test_training_is_seeded():
    mcfg = T.model_config_for("ae", latent_dim=8, width=8, depth=0)
    tcfg = T.TrainConfig(objective="dae", max_epochs=2, time_budget=0, batch_size=16)
    a = embed(T.train(pixels(), mcfg, tcfg, "cpu").model, pixels(8, seed=1), "cpu")
    b = embed(T.train(pixels(), mcfg, tcfg, "cpu").model, pixels(8, seed=1), "cpu")
    assert np.allclose(a, b, atol=1e-5)


def test_checkpoint_resumes(tmp_path):
    mcfg = T.model_config_for("ae", latent_dim=8, width=8, depth=0)
    ck = tmp_path / "train.ckpt"
    full = T.train(pixels(), mcfg, T.TrainConfig(objective="ae", max_epochs=4, time_budget=0, batch_size=16), "cpu")
    # an "interrupted" run: 2 epochs with a checkpoint, then the same run with 4 resumes at epoch 2
    T.train(
        pixels(), mcfg, T.TrainConfig(objective="ae", max_epochs=2, time_budget=0, batch_size=16), "cpu", checkpoint=ck
    )
    assert ck.exists()
    res = T.train(
        pixels(), mcfg, T.TrainConfig(objective="ae", max_epochs=4, time_budget=0, batch_size=16), "cpu", checkpoint=ck
    )
    # different max_epochs → different signature → a fresh start, not a wrong resume
    assert res.resumed_from == 0
    again = T.train(
        pixels(), mcfg, T.TrainConfig(objective="ae", max_epochs=4, time_budget=0, batch_size=16), "cpu", checkpoint=ck
    )
    assert again.resumed_from == 4 and again.epochs == 4
    probe = pixels(8, seed=3)
    assert np.allclose(embed(again.model, probe, "cpu"), embed(res.model, probe, "cpu"), atol=1e-5)
    assert np.allclose(embed(full.model, probe, "cpu"), embed(res.model, probe, "cpu"), atol=1e-4)


def test_save_load_and_hash(tmp_path):
    m = M.build(M.ModelConfig(latent_dim=8, width=8, depth=0)).eval()
    p = tmp_path / "m.pt"
    sha = M.save(m, p)
    from simsearch.store import file_sha256

    assert sha == file_sha256(p)
    back, info = M.load(p, expected_sha256=sha)
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(back.encode(x), m.encode(x))
    with pytest.raises(ModelMismatchError, match="does not match"):
        M.load(p, expected_sha256="f" * 64)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(SimsearchError, match="not a usable simsearch model"):
        M.load(tmp_path / "junk.pt")


def test_device_pick():
    from simsearch.device import pick_device

    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(SimsearchError):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SimsearchError, match="no CUDA"):
            pick_device("cuda")


def test_training_precision_follows_the_hardware_unless_told(monkeypatch):
    """``auto``: bf16 autocast for CPU training only where the CPU has bf16 instructions; embeddings
    and ``fp32`` stay in fp32; CUDA keeps its mixed precision (fp16 needs a grad scaler)."""
    from simsearch import device as D

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(D, "cpu_has_native_bf16", lambda: False)
    assert D.amp_dtype(cpu, "auto", training=True) is None
    assert D.amp_dtype(cpu, "bf16", training=True) == torch.bfloat16  # forced
    monkeypatch.setattr(D, "cpu_has_native_bf16", lambda: True)
    assert D.amp_dtype(cpu, "auto", training=True) == torch.bfloat16
    assert D.amp_dtype(cpu, "auto") is None and D.amp_dtype(cpu, "fp32", training=True) is None
    for bf16, want in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert D.amp_dtype(cuda) == want and D.amp_dtype(cuda, "fp32") is None
        assert D.needs_grad_scaler(cuda) == (want == torch.float16)
    assert not D.needs_grad_scaler(cpu, torch.bfloat16)
    with pytest.raises(SimsearchError, match="unknown precision"):
        D.amp_dtype(cpu, "fp8")
    with pytest.raises(ValueError, match="unknown precision"):
        T.TrainConfig(precision="fp8")


def test_the_bf16_probe_answers_on_any_machine():
    from simsearch import device as D

    assert D.cpu_has_native_bf16() in (True, False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_in_either_precision_learns_and_says_which(precision):
    data = np.zeros((96, 1, 28, 28), np.uint8)
    data[:, :, 8:20, 8:20] = np.random.default_rng(0).integers(100, 255, (96, 1, 1, 1))
    mcfg = T.model_config_for("dae", latent_dim=16, width=8, depth=0)
    tcfg = T.TrainConfig(max_epochs=6, time_budget=0, batch_size=32, lr=3e-3, val_fraction=0, precision=precision)
    res = T.train(data, mcfg, tcfg, "cpu")
    assert res.precision == precision
    assert res.history[-1]["rec"] < res.history[0]["rec"]
    z = embed(res.model, data, "cpu")
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert next(res.model.parameters()).dtype == torch.float32  # the saved weights are fp32 either way


class Interrupted(Exception):
    """Raised in place of the SIGKILL at the training checkpoint's crash point (``interrupt_at_epoch``)."""


def interrupt_at_epoch(monkeypatch, n: int = 2) -> None:
    """Make ``train`` write a checkpoint after every epoch and stop with ``Interrupted`` after epoch ``n``
    (at its "train-epoch" crash point): an interrupted run, without a child process to kill."""
    calls: list[str] = []

    def stop(name):
        if name == "train-epoch" and calls.append(name) is None and len(calls) == n:
            raise Interrupted

    monkeypatch.setattr(T, "CHECKPOINT_EVERY", 0)
    monkeypatch.setattr(T, "crash_point", stop)


def test_a_run_resumed_on_another_machine_says_it_trained_in_both_precisions(tmp_path, monkeypatch):
    """Each epoch records the precision it trained in, so a checkpoint made where the CPU has bf16
    instructions and finished where it has not reports "bf16+fp32", also when re-run after finishing."""
    from simsearch import device as D

    mcfg = T.model_config_for("dae", latent_dim=8, width=8, depth=0)
    tcfg = T.TrainConfig(max_epochs=4, time_budget=0, batch_size=32, val_fraction=0)
    ck = tmp_path / "train.ckpt"
    interrupt_at_epoch(monkeypatch)
    monkeypatch.setattr(D, "cpu_has_native_bf16", lambda: True)
    with pytest.raises(Interrupted):
        T.train(pixels(96), mcfg, tcfg, "cpu", checkpoint=ck)
    monkeypatch.setattr(D, "cpu_has_native_bf16", lambda: False)  # the checkpoint moved to another machine
    res = T.train(pixels(96), mcfg, tcfg, "cpu", checkpoint=ck)
    assert res.resumed_from == 2 and res.epochs == 4
    assert [row["precision"] for row in res.history] == ["bf16", "bf16", "fp32", "fp32"]
    assert res.precision == "bf16+fp32"
    again = T.train(pixels(96), mcfg, tcfg, "cpu", checkpoint=ck)  # finished: nothing trained, same answer
    assert again.resumed_from == 4 and again.precision == "bf16+fp32"
    monkeypatch.setattr(D, "cpu_has_native_bf16", lambda: True)
    assert T.train(pixels(96), mcfg, tcfg, "cpu").precision == "bf16"  # one machine: one name


def _clip_art(h: int, w: int, channels: int) -> np.ndarray:
    """A drawing with flat colours and hard edges (where JPEG rings), uint8 (h, w, channels)."""
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.full((h, w, 3), 255, np.uint8)
    a[(xx - w // 2) ** 2 + (yy - h // 2) ** 2 < (min(h, w) // 3) ** 2] = (200, 30, 40)
    a[h // 6 : h // 3, 3 : w - 7] = (20, 120, 220)
    a[2 * h // 3 : 2 * h // 3 + 3] = 0
    return a[..., :channels].copy()


@pytest.mark.parametrize("channels,quality", [(3, 30), (3, 75), (3, 90), (1, 50)])
@pytest.mark.parametrize("h,w", [(64, 64), (37, 53)])
def test_the_jpeg_corruption_gives_what_pillow_gives(channels, quality, h, w):
    """``train._jpeg`` (colour transform, 4:2:0 chroma, 8×8 DCT quantised by the IJG tables) against a
    real JPEG round trip through Pillow: about a grey level apart on average, while the JPEG itself moved
    the pixels four to ten times that — the corruption is JPEG's, not some other blur."""
    import io

    from PIL import Image

    a = _clip_art(h, w, channels)
    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if channels == 1 else a).save(buf, "JPEG", quality=quality)
    ref = np.asarray(Image.open(buf), np.float32).reshape(h, w, channels)
    x = torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None]
    out = T._jpeg(x, torch.tensor([float(quality)]))
    assert out.shape == x.shape and out.dtype == x.dtype
    sim = out[0].permute(1, 2, 0).numpy() * 255
    jpeg_error = np.abs(ref - a).mean()
    assert np.abs(sim - ref).mean() < min(1.5, jpeg_error / 4)  # measured 0.4–1.1 against 1.9–9.8
    assert np.allclose(sim, np.round(sim), atol=1e-3)  # 8-bit, as a decoded file
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in a bf16 training step: still float32 arithmetic
        assert torch.equal(T._jpeg(x, torch.tensor([float(quality)])), out)


def test_jpeg_tables_follow_the_ijg_quality_scale():
    luma, chroma = T.jpeg_tables(torch.tensor([50.0, 100.0, 10.0]))
    assert luma[0, 0, 0] == 16 and chroma[0, 0, 0] == 17  # quality 50: the base tables
    assert (luma[1] == 1).all() and (chroma[1] == 1).all()  # 100: no quantisation left
    assert luma[2, 0, 0] == 80 and luma[2].max() == 255  # 10: scale 500, clamped to 8 bits


def test_a_jpeg_corruption_is_drawn_only_when_asked_and_per_image():
    """``jpeg`` = 0 (models trained before it existed) leaves every other corruption's draws as they were;
    with ``jpeg`` > 0 each image's re-save depends on its own key only."""
    x = torch.from_numpy(np.stack([_clip_art(32, 32, 3)] * 4).astype(np.float32) / 255).permute(0, 3, 1, 2)
    keys = [11, 12, 13, 14]
    plain = T.corrupt_each(x, T.TrainConfig(), keys)
    assert torch.equal(plain, T.corrupt_each(x, T.TrainConfig(jpeg=0.0), keys))
    always = T.TrainConfig(jpeg=1.0, shift=0, scale=0, aspect=0, rotate=0, flip=False, pad=0, light=0,
                           saturation=0, blur=0)  # fmt: skip
    a = T.corrupt_each(x, always, keys)
    b = T.corrupt_each(x[[2, 0]], always, [keys[2], keys[0]])
    assert torch.equal(a[[2, 0]], b)  # the same image and key: the same JPEG, whatever the batch
    assert not torch.equal(a, x)  # every image went through JPEG (flat white alone would survive it)
    views = T.corrupt_views(x, always, torch.Generator().manual_seed(0))
    assert (views - x).abs().mean() > 0.002 and (views - x).abs().mean() < 0.05


def test_a_grey_corruption_turns_colour_views_grey_and_is_drawn_only_when_asked():
    """``grey`` = 1 gives grey views (R = G = B) of a colour picture in training and per image, and leaves
    a grey model's input alone: turning it on moves no other corruption's draws. (The occluding box, whose
    colour is not grey, is off here.)"""
    x = torch.from_numpy(np.stack([_clip_art(32, 32, 3)] * 4).astype(np.float32) / 255).permute(0, 3, 1, 2)
    keys = [11, 12, 13, 14]
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    no_box = T.TrainConfig(erase=0.0)
    always = replace(no_box, grey=1.0)
    for v in (T.corrupt_each(x, always, keys), T.corrupt_views(x, always, gen())):
        assert (v[:, 0] - v[:, 1]).abs().max() < 1e-5 and (v[:, 1] - v[:, 2]).abs().max() < 1e-5
        assert (v - x).abs().mean() > 0.01
    colourful = T.corrupt_each(x, no_box, keys)
    assert (colourful[:, 0] - colourful[:, 1]).abs().max() > 0.1  # without it, views keep their colour
    half = T.corrupt_views(x.repeat(64, 1, 1, 1), replace(no_box, grey=0.5), gen())
    grey_views = ((half[:, 0] - half[:, 1]).abs().amax((1, 2)) < 1e-5).float().mean()
    assert 0.35 < grey_views < 0.65
    g = x[:, :1]
    assert torch.equal(T.corrupt_each(g, always, keys), T.corrupt_each(g, no_box, keys))


def test_an_occluding_box_covers_a_part_of_the_view_in_one_colour_and_is_drawn_only_when_asked():
    """``erase`` = 1 puts one box of a single colour over 2–20% of each view (``ERASE_AREA``), in training
    and per image (the same box for the same image and key, whatever its batch), grey models too; outside
    the box the view is the one without it: the box moves no other corruption's draws."""
    x = torch.from_numpy(np.stack([_clip_art(32, 32, 3)] * 4).astype(np.float32) / 255).permute(0, 3, 1, 2)
    keys = [11, 12, 13, 14]
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    # with the other corruptions on too, grey still draws from its own place
    both = T.TrainConfig(erase=1.0, grey=1.0)
    v = T.corrupt_each(x, both, keys)
    assert (v[:, 0] - v[:, 1]).abs().max() > 0.1  # the box's colour is not grey…
    grey_only = T.corrupt_each(x, T.TrainConfig(grey=1.0, erase=0.0), keys)
    outside = (v == grey_only).all(1)  # …and outside the box the view is the grey view
    assert ((~outside).float().mean((1, 2)) > 0.01).all()
    lo, hi = T.ERASE_AREA
    only = T.TrainConfig(erase=1.0, shift=0, scale=0, flip=False, aspect=0, rotate=0, pad=0, light=0, saturation=0,
                         blur=0)  # fmt: skip
    for img in (x, x[:, :1]):
        for views in (T.corrupt_each(img, only, keys), T.corrupt_views(img.repeat(8, 1, 1, 1), only, gen())):
            src = img.repeat(len(views) // len(img), 1, 1, 1)
            box = (views != src).any(1)  # (B, H, W): where the box differs from the picture
            assert (box.float().mean((1, 2)) <= hi + 0.02).all() and (box.float().mean((1, 2)) > 0).all()
            for i in range(len(views)):
                rows, cols = box[i].nonzero(as_tuple=True)
                inside = views[i][:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
                # one rectangle of one colour (a picture pixel of that colour may hide an edge cell)
                assert (inside == inside[:, :1, :1]).all()
                assert inside[0].numel() >= lo * 32 * 32 - 2
    a = T.corrupt_each(x, only, keys)
    assert torch.equal(a[[2, 0]], T.corrupt_each(x[[2, 0]], only, [keys[2], keys[0]]))
    assert not torch.equal(a[0], a[1])  # other keys: other boxes


def test_a_model_recorded_before_a_corruption_existed_is_not_given_it():
    """The denoising error of an old model's images (``corruption_config``) uses the corruptions it was
    trained with: a corruption added later is off for it, whatever today's default is."""
    from simsearch.settings import CORRUPTIONS_ADDED_LATER, corruption_config

    old = {"config": {k: v for k, v in T.TrainConfig(jpeg=0.7).__dict__.items() if k != "jpeg"}}
    assert corruption_config(old).jpeg == CORRUPTIONS_ADDED_LATER["jpeg"] == 0.0
    assert corruption_config({"config": {"jpeg": 0.7}}).jpeg == 0.7  # recorded: kept
    assert corruption_config(None) == T.TrainConfig()  # nothing recorded: the defaults


def test_the_corruption_is_named_by_the_edits_that_are_on():
    """``corruption_edits`` (a reconstruction sheet's caption) names what the config turns on, in the
    order the edits are applied, and only that: an old model's record has no occluding box."""
    from simsearch.settings import corruption_config, corruption_edits

    names = corruption_edits(T.TrainConfig())
    assert names[0] == "shift" and names.index("occluding box") < names.index("blur")
    assert "grey" not in names and "JPEG" not in names and "noise" not in names
    assert corruption_edits(T.TrainConfig(grey=0.2, jpeg=0.3, noise_std=0.1))[-3:] == ["blur", "JPEG", "noise"]
    nothing = T.TrainConfig(shift=0, scale=0, flip=False, aspect=0, rotate=0, pad=0, light=0, saturation=0, blur=0,
                            erase=0)  # fmt: skip
    assert corruption_edits(nothing) == []
    old = {"config": {k: v for k, v in T.TrainConfig().__dict__.items() if k != "erase"}}
    assert "occluding box" not in corruption_edits(corruption_config(old))


def test_the_average_of_the_weights_follows_an_exponential_moving_average():
    """``WeightAverage``: after n updates each float tensor is the running lerp with decay
    min(decay, (1 + n) / (10 + n)); BatchNorm's step counter is copied, not averaged."""
    torch.manual_seed(0)
    m = M.build(M.ModelConfig(latent_dim=8, width=8, depth=0))
    avg = T.WeightAverage(m, decay=0.5)
    name, p = next(iter(m.named_parameters()))
    expect = p.detach().clone()
    for n in range(1, 4):
        with torch.no_grad():
            for q in m.parameters():
                q.add_(1.0)
        for b in m.buffers():
            if not b.is_floating_point():
                b.add_(1)
        avg.update(m)
        d = min(0.5, (1 + n) / (10 + n))
        expect = d * expect + (1 - d) * p.detach()
    assert torch.allclose(avg.model.state_dict()[name], expect, atol=1e-6)
    assert not torch.allclose(avg.model.state_dict()[name], p.detach())
    counters = {k: v for k, v in m.state_dict().items() if not v.is_floating_point()}
    assert counters and all(torch.equal(avg.model.state_dict()[k], v) for k, v in counters.items())
    assert not avg.model.training and not any(q.requires_grad for q in avg.model.parameters())


@pytest.mark.parametrize("target", [False, True])
def test_an_averaged_run_returns_the_average_and_resumes_it(tmp_path, monkeypatch, target):
    """With ``ema`` the model kept is the average of the weights (with ``ema_target`` it also encodes the
    second view); a run interrupted after 2 of 4 epochs resumes the average from its checkpoint and ends
    where an uninterrupted run ends."""

    mcfg = T.model_config_for("dae", latent_dim=8, width=8, depth=0)
    tcfg = T.TrainConfig(max_epochs=4, time_budget=0, batch_size=16, ema=0.9, ema_target=target)
    probe = pixels(8, seed=3)
    plain = T.train(pixels(), mcfg, T.TrainConfig(max_epochs=4, time_budget=0, batch_size=16), "cpu")
    full = T.train(pixels(), mcfg, tcfg, "cpu")
    assert full.stopped_by == "epochs" and not full.model.training
    assert not np.allclose(embed(full.model, probe, "cpu"), embed(plain.model, probe, "cpu"), atol=1e-3)
    ck = tmp_path / "train.ckpt"
    interrupt_at_epoch(monkeypatch)
    with pytest.raises(Interrupted):
        T.train(pixels(), mcfg, tcfg, "cpu", checkpoint=ck)
    res = T.train(pixels(), mcfg, tcfg, "cpu", checkpoint=ck)
    assert res.resumed_from == 2 and res.epochs == 4
    assert np.allclose(embed(full.model, probe, "cpu"), embed(res.model, probe, "cpu"), atol=1e-4)


def test_a_momentum_target_needs_an_average():
    with pytest.raises(ValueError, match="ema_target"):
        T.TrainConfig(ema_target=True)
    with pytest.raises(ValueError, match="ema"):
        T.TrainConfig(ema=1.0)


def test_the_spreading_term_is_lower_for_codes_that_cover_the_sphere():
    """KoLeo (``TrainConfig.koleo``): −mean log distance of each normalised code to its nearest other code."""
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(64, 16, generator=g)
    clustered = spread[:8].repeat(8, 1) + 0.01 * torch.randn(64, 16, generator=g)
    assert T.koleo_loss(spread) < T.koleo_loss(clustered)
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # each at distance √2 from the other
    assert T.koleo_loss(two).item() == pytest.approx(-np.log(np.sqrt(2)), abs=1e-5)
    z = spread.clone().requires_grad_(True)
    T.koleo_loss(z).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_a_run_with_the_spreading_term_records_it_in_the_history():
    data = pixels(96)
    mcfg = T.model_config_for("dae", latent_dim=16, width=8)
    tcfg = T.TrainConfig(max_epochs=3, time_budget=0, batch_size=32, val_fraction=0, koleo=0.5)
    res = T.train(data, mcfg, tcfg, "cpu")
    assert all(np.isfinite(h["koleo"]) for h in res.history)
    assert (
        "koleo" not in T.train(data, mcfg, T.TrainConfig(max_epochs=1, time_budget=0, batch_size=32), "cpu").history[0]
    )
    plain = T.TrainConfig(max_epochs=1, time_budget=0, batch_size=32, val_fraction=0, invariance=0, koleo=0.5)
    assert "koleo" in T.train(data, mcfg, plain, "cpu").history[0]  # with or without the invariance term
    with pytest.raises(ValueError, match="koleo"):
        T.TrainConfig(koleo=-1.0)
    with pytest.raises(ValueError, match="koleo"):
        T.TrainConfig(objective="ae", koleo=0.1)

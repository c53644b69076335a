#!/usr/bin/env python3
"""Label-free retrieval probe for the simsearch conv autoencoder on Fashion-MNIST.

Trains a convolutional autoencoder (encoder -> 128-d bottleneck -> mirrored decoder,
reconstruction loss always on) optionally with an invariance term on the bottleneck
between two per-sample augmented views (NT-Xent / cosine / VICReg), embeds, applies
label-free post-processing variants and prints P@1 / P@10 / mAP per variant.

Labels are used ONLY inside `evaluate()` to score rankings.

Validation protocol (default): queries = train[0:10000), gallery = train[10000:60000).
--final: queries = t10k (10k), gallery = train (60k).
The model is always trained on all 60k train images (no labels).

Example:
  python scripts/research/frozen/fmnist_probe.py --obj nce --width 32 --epochs 6 --budget 450
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = "/usr/share/datasets/fashion-mnist"


# ----------------------------------------------------------------------------- data
def load_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    if magic == 2051:
        n, r, c = struct.unpack(">III", raw[4:16])
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, r, c)
    if magic == 2049:
        n = struct.unpack(">I", raw[4:8])[0]
        return np.frombuffer(raw, dtype=np.uint8, offset=8).reshape(n)
    raise ValueError(f"bad magic {magic} in {path}")


def load_split(name: str):
    x = load_idx(f"{DATA}/{name}-images-idx3-ubyte.gz")
    y = load_idx(f"{DATA}/{name}-labels-idx1-ubyte.gz")
    x = torch.from_numpy(x.copy()).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(y.astype(np.int64))
    return x, y


# ----------------------------------------------------------------------------- model
def norm2d(c: int, kind: str) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(c)
    if kind == "gn":
        return nn.GroupNorm(8, c)
    return nn.Identity()


class ResBlock(nn.Module):
    def __init__(self, c: int, norm: str, act):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1, bias=norm == "none")
        self.n1 = norm2d(c, norm)
        self.c2 = nn.Conv2d(c, c, 3, padding=1, bias=norm == "none")
        self.n2 = norm2d(c, norm)
        self.act = act()

    def forward(self, x):
        h = self.act(self.n1(self.c1(x)))
        h = self.n2(self.c2(h))
        return self.act(x + h)


class ConvAE(nn.Module):
    """Encoder: [stem conv3x3(1->w)] | conv4x4/2(->2w) [+res] | conv4x4/2(2w->4w) [+res] | FC(4w*49->D)
    Decoder mirrors: FC(D->4w*49) | [res] convT4x4/2(4w->2w) | [res] convT4x4/2(2w->w) | conv3x3(w->1)
    (without stem: last decoder layer is convT4x4/2(2w->1)). Norm+act after every conv but the last."""

    def __init__(self, width=32, dim=128, norm="bn", res=0, act="relu", stem=True):
        super().__init__()
        A = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "lrelu": lambda: nn.LeakyReLU(0.1)}[act]
        w = width
        b = norm == "none"
        enc = [nn.Conv2d(1, w, 3, padding=1, bias=b), norm2d(w, norm), A()] if stem else []
        enc += [nn.Conv2d(w if stem else 1, 2 * w, 4, 2, 1, bias=b), norm2d(2 * w, norm), A()]
        enc += [ResBlock(2 * w, norm, A) for _ in range(res)]
        enc += [nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=b), norm2d(4 * w, norm), A()]
        enc += [ResBlock(4 * w, norm, A) for _ in range(res)]
        self.enc = nn.Sequential(*enc, nn.Flatten())
        self.fc_e = nn.Linear(4 * w * 49, dim)
        self.fc_d = nn.Linear(dim, 4 * w * 49)
        dec = [nn.Unflatten(1, (4 * w, 7, 7)), norm2d(4 * w, norm), A()]
        dec += [ResBlock(4 * w, norm, A) for _ in range(res)]
        dec += [nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=b), norm2d(2 * w, norm), A()]
        dec += [ResBlock(2 * w, norm, A) for _ in range(res)]
        if stem:
            dec += [nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=b), norm2d(w, norm), A(), nn.Conv2d(w, 1, 3, padding=1)]
        else:
            dec += [nn.ConvTranspose2d(2 * w, 1, 4, 2, 1)]
        self.dec = nn.Sequential(*dec)

    def encode(self, x):
        return self.fc_e(self.enc(x))

    def decode(self, z):  # returns logits
        return self.dec(self.fc_d(z))


# ----------------------------------------------------------------------------- augmentation
def augment(x: torch.Tensor, a, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random affine (translation, scale, rotation, h-flip) + erase + noise."""
    n = x.shape[0]
    if a.shift > 0 or a.scale > 0 or a.rot > 0 or a.flip > 0:
        t = (torch.rand(n, 2, generator=gen) * 2 - 1) * (a.shift * 2.0 / 28.0)
        s = 1.0 + (torch.rand(n, generator=gen) * 2 - 1) * a.scale
        r = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(a.rot)
        fx = torch.where(torch.rand(n, generator=gen) < a.flip, -1.0, 1.0)
        cos, sin = torch.cos(r) / s, torch.sin(r) / s
        theta = torch.stack([torch.stack([cos * fx, -sin, t[:, 0]], 1), torch.stack([sin * fx, cos, t[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, x.shape, align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if a.erase > 0:
        m = torch.rand(n, generator=gen) < a.erase
        sz = (torch.rand(n, generator=gen) * 6 + 6).long()  # 6..11 px square
        cy = torch.randint(0, 28, (n,), generator=gen)
        cx = torch.randint(0, 28, (n,), generator=gen)
        ar = torch.arange(28)
        my = (ar[None] - cy[:, None]).abs() < sz[:, None] // 2
        mx = (ar[None] - cx[:, None]).abs() < sz[:, None] // 2
        mask = (my[:, :, None] & mx[:, None, :]) & m[:, None, None]
        x = x.masked_fill(mask[:, None], 0.0)
    if a.noise > 0:
        x = (x + a.noise * torch.randn(x.shape, generator=gen)).clamp_(0, 1)
    return x


# ----------------------------------------------------------------------------- losses
def nt_xent(z1, z2, tau):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / tau
    sim.fill_diagonal_(-1e9)
    tgt = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, tgt)


def vicreg_vc(z):
    z = z - z.mean(0)
    std = torch.sqrt(z.var(0) + 1e-4)
    v = F.relu(1 - std).mean()
    cov = (z.t() @ z) / (z.shape[0] - 1)
    off = cov - torch.diag(torch.diag(cov))
    c = off.pow(2).sum() / z.shape[1]
    return v, c


def rec_loss(logits, target, kind):
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.mse_loss(torch.sigmoid(logits), target)


# ----------------------------------------------------------------------------- training
def lr_at(p: float, a) -> float:
    if a.sched == "const":
        return a.lr
    if a.sched == "cos":
        w = a.warm
        if p < w:
            return a.lr * p / w
        return a.lr * 0.5 * (1 + math.cos(math.pi * (p - w) / (1 - w)))
    if a.sched == "onecycle":
        w = a.warm
        if p < w:
            return a.lr * (0.04 + 0.96 * p / w)
        return a.lr * (0.5 * (1 + math.cos(math.pi * (p - w) / (1 - w)))) + 1e-6
    raise ValueError(a.sched)


def train(model, proj, x, a, log):
    params = list(model.parameters()) + (list(proj.parameters()) if proj is not None else [])
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.wd)
    gen = torch.Generator().manual_seed(a.seed + 1)
    n = x.shape[0]
    steps_per_epoch = n // a.bs
    total = steps_per_epoch * a.epochs
    t0 = time.time()
    step = 0
    ep_times = []
    done = False
    for ep in range(a.epochs):
        te = time.time()
        perm = torch.randperm(n, generator=gen)
        model.train()
        acc = {"rec": 0.0, "inv": 0.0, "n": 0}
        for i in range(steps_per_epoch):
            p = max(step / total, (time.time() - t0) / a.budget if a.budget > 0 else 0.0)
            if p >= 1.0:
                done = True
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(p, a)
            xb = x[perm[i * a.bs : (i + 1) * a.bs]]
            loss_inv = torch.zeros(())
            if a.obj == "ae" and not a.denoise:
                z = model.encode(xb)
                loss_rec = rec_loss(model.decode(z), xb, a.rec)
            elif a.obj == "ae":  # denoising AE: augmented -> clean
                v1 = augment(xb, a, gen)
                z = model.encode(v1)
                loss_rec = rec_loss(model.decode(z), xb, a.rec)
            else:
                v1 = augment(xb, a, gen)
                v2 = augment(xb, a, gen)
                z = model.encode(torch.cat([v1, v2]))
                z1, z2 = z.chunk(2)
                if a.rec_views == 2:
                    logits = model.decode(z)
                    tgt = torch.cat([xb, xb]) if a.denoise else torch.cat([v1, v2])
                else:  # decode view 1 only (halves decoder cost)
                    logits = model.decode(z1)
                    tgt = xb if a.denoise else v1
                loss_rec = rec_loss(logits, tgt, a.rec)
                h1, h2 = (proj(z1), proj(z2)) if proj is not None else (z1, z2)
                if a.obj == "nce":
                    loss_inv = nt_xent(h1, h2, a.tau)
                elif a.obj == "cos":
                    loss_inv = 2 - 2 * F.cosine_similarity(h1, h2).mean()
                elif a.obj == "vic":
                    inv = F.mse_loss(h1, h2)
                    v1_, c1_ = vicreg_vc(h1)
                    v2_, c2_ = vicreg_vc(h2)
                    loss_inv = 25 * inv + 25 * (v1_ + v2_) / 2 + (c1_ + c2_) / 2
                else:
                    raise ValueError(a.obj)
            loss = a.w_rec * loss_rec + a.w_inv * loss_inv
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            acc["rec"] += loss_rec.item()
            acc["inv"] += loss_inv.item()
            acc["n"] += 1
        dt = time.time() - te
        if acc["n"]:
            ep_times.append(dt * steps_per_epoch / acc["n"])  # normalised to a full epoch
            log(
                f"  epoch {ep + 1}: {acc['n']} steps {dt:.1f}s  rec {acc['rec'] / acc['n']:.4f}"
                f"  inv {acc['inv'] / acc['n']:.4f}  lr {opt.param_groups[0]['lr']:.2e}"
            )
        if done:
            break
    epochs_done = step / steps_per_epoch
    return epochs_done, time.time() - t0, ep_times


@torch.no_grad()
def embed(model, x, bs=2000, tta=""):
    """Bottleneck embedding. tta: '' | 'flip' (mean of x and h-flipped x codes) |
    'flip+shift' (also +-1 px shifts). Label-free, applied identically to queries and gallery."""
    model.eval()
    views = [lambda t: t]
    if "flip" in tta:
        views.append(lambda t: t.flip(3))
    if "shift" in tta:
        for dx, dy in [(1, 0), (-1, 0), (0, 1), (0, -1)]:
            views.append(lambda t, dx=dx, dy=dy: torch.roll(t, (dy, dx), (2, 3)))
    out = []
    for i in range(0, len(x), bs):
        xb = x[i : i + bs]
        out.append(torch.stack([model.encode(v(xb)) for v in views]).mean(0))
    return torch.cat(out)


# ----------------------------------------------------------------------------- post-processing
def l2n(x):
    return F.normalize(x, dim=1)


def knn(q, g, k):
    import faiss

    index = faiss.IndexFlatIP(g.shape[1])
    index.add(np.ascontiguousarray(g.numpy(), dtype=np.float32))
    s, i = index.search(np.ascontiguousarray(q.numpy(), dtype=np.float32), k)
    return torch.from_numpy(s), torch.from_numpy(i)


def aqe(x, g, k, alpha, self_included, beta=1.0):
    """alpha-weighted expansion of x by its top-k neighbours in g:
    x' = L2norm(x + beta * sum_j sim_j^alpha g_j). self_included (DBA, x is g): the first
    neighbour is x itself and gets weight 1."""
    s, i = knn(x, g, k + (1 if self_included else 0))
    w = s.clamp(min=0).pow(alpha) * beta
    if not self_included:  # query itself with weight 1
        agg = x + (w[:, :, None] * g[i]).sum(1)
    else:
        w[:, 0] = 1.0
        agg = (w[:, :, None] * g[i]).sum(1)
    return l2n(agg)


def _kab(spec):
    """'10a3' -> (10, 3.0, 1.0); '10a3b0.5' -> (10, 3.0, 0.5)"""
    k, rest = spec.split("a")
    beta = 1.0
    if "b" in rest:
        rest, beta = rest.split("b")
    return int(k), float(rest), float(beta)


def pca_whiten(qg_fit, power, dim=None):
    mu = qg_fit.mean(0, keepdim=True)
    xc = (qg_fit - mu).double()
    cov = xc.t() @ xc / len(xc)
    ev, V = torch.linalg.eigh(cov)
    ev, V = ev.flip(0), V.flip(1)
    if dim:
        ev, V = ev[:dim], V[:, :dim]
    scale = ev.clamp(min=1e-12).pow(-power)
    P = (V * scale[None]).float()
    return lambda x: (x - mu) @ P


def postprocess(zq, zg, variant: str):
    """Label-free. Stats (mean, PCA) learned on the gallery only."""
    parts = variant.split("+")
    q, g = zq.clone(), zg.clone()
    for p in parts:
        if p == "raw":
            q, g = l2n(q), l2n(g)
        elif p == "c":  # centre on gallery mean of L2-normalised (pre) vectors
            mu = l2n(g).mean(0, keepdim=True)
            q, g = l2n(l2n(q) - mu), l2n(l2n(g) - mu)
        elif p.startswith("w"):  # PCA whitening w<power>, fit on gallery
            f = pca_whiten(l2n(g), float(p[1:]))
            q, g = l2n(f(l2n(q))), l2n(f(l2n(g)))
        elif p.startswith("dba"):  # dba<k>a<alpha>[b<beta>]
            k, al, be = _kab(p[3:])
            g = aqe(g, g, k, al, self_included=True, beta=be)
        elif p.startswith("qe"):  # qe<k>a<alpha>[b<beta>]
            k, al, be = _kab(p[2:])
            q = aqe(q, g, k, al, self_included=False, beta=be)
        else:
            raise ValueError(p)
    return q, g


# ----------------------------------------------------------------------------- metrics
@torch.no_grad()
def evaluate(q, g, yq, yg, bs=250):
    """Full-ranking P@1, P@10, mAP (cosine; q, g L2-normalised), blockwise exact sort.
    AP = mean over relevant items of precision at that item's rank (all relevant in gallery)."""
    nrel_per_class = torch.bincount(yg, minlength=int(yg.max()) + 1).double()
    N = g.shape[0]
    ranks = torch.arange(1, N + 1, dtype=torch.float32)
    p1 = p10 = ap = 0.0
    for i in range(0, q.shape[0], bs):
        s = q[i : i + bs] @ g.t()
        yb = yq[i : i + bs]
        order = torch.argsort(s, dim=1, descending=True)
        m = yg[order] == yb[:, None]
        p1 += m[:, 0].double().sum().item()
        p10 += m[:, :10].double().mean(1).sum().item()
        cs = m.cumsum(1, dtype=torch.float32)  # exact for counts < 2^24
        ap_b = ((cs / ranks[None]) * m).sum(1).double()
        ap += (ap_b / nrel_per_class[yb]).sum().item()
    n = q.shape[0]
    return {"P@1": p1 / n, "P@10": p10 / n, "mAP": ap / n}


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--obj", default="ae", choices=["ae", "nce", "cos", "vic"])
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--norm", default="bn", choices=["bn", "gn", "none"])
    ap.add_argument("--res", type=int, default=0)
    ap.add_argument("--stem", type=int, default=0, help="1: full-res conv3x3 stem (+ mirrored decoder layer)")
    ap.add_argument("--act", default="relu")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--proj", type=int, default=0, help="projection-head width for inv term (0: none)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--bs", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--sched", default="onecycle", choices=["const", "cos", "onecycle"])
    ap.add_argument("--warm", type=float, default=0.1)
    ap.add_argument("--budget", type=float, default=0, help="seconds; schedule progress=max(step,time) frac")
    ap.add_argument("--rec", default="bce", choices=["bce", "mse"])
    ap.add_argument("--w-rec", type=float, default=1.0)
    ap.add_argument("--w-inv", type=float, default=0.1)
    ap.add_argument("--tau", type=float, default=0.2)
    ap.add_argument("--rec-views", type=int, default=1, choices=[1, 2])
    ap.add_argument("--denoise", action="store_true", help="reconstruct clean image from augmented view")
    ap.add_argument("--shift", type=float, default=0.0, help="max translation in px (per sample)")
    ap.add_argument("--scale", type=float, default=0.0, help="max relative scale change")
    ap.add_argument("--rot", type=float, default=0.0, help="max rotation degrees")
    ap.add_argument("--flip", type=float, default=0.0, help="h-flip probability")
    ap.add_argument("--erase", type=float, default=0.0, help="random-erase probability")
    ap.add_argument("--noise", type=float, default=0.0, help="gaussian pixel noise std")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nq", type=int, default=10000, help="val: use the first nq of train[0:10000) as queries")
    ap.add_argument("--final", action="store_true", help="test queries vs full train gallery")
    ap.add_argument("--post", default="c,c+dba10a3+qe10a3")
    ap.add_argument("--tag", default="")
    ap.add_argument("--jsonl", default="scripts/research/frozen/runs.jsonl")
    ap.add_argument("--save", default="", help="save model state_dict here")
    ap.add_argument("--save-emb", default="", help="save (query, gallery) raw embeddings")
    ap.add_argument("--load-emb", default="", help="skip training: post-process/evaluate saved embeddings")
    ap.add_argument("--load-model", default="", help="skip training: embed with a saved state_dict")
    ap.add_argument("--tta", default="", help="'', 'flip', 'flip+shift': embedding-time view averaging")
    ap.add_argument("--pixels", action="store_true", help="skip training: evaluate raw pixels")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)

    def log(s):
        print(s, flush=True)

    log("args: " + " ".join(sys.argv[1:]))
    xtr, ytr = load_split("train")
    if a.final:
        xte, yte = load_split("t10k")
        xq, yq, xg, yg = xte, yte, xtr, ytr
    else:
        xq, yq, xg, yg = xtr[: a.nq], ytr[: a.nq], xtr[10000:], ytr[10000:]

    info = {"args": vars(a)}
    if a.load_emb:
        zq, zg = torch.load(a.load_emb)
        zq = zq[: len(yq)]
    elif a.pixels:
        zq, zg = xq.flatten(1), xg.flatten(1)
    else:
        model = ConvAE(a.width, a.dim, a.norm, a.res, a.act, bool(a.stem))
    if a.load_model:
        model.load_state_dict(torch.load(a.load_model))
        zq, zg = embed(model, xq, tta=a.tta), embed(model, xg, tta=a.tta)
    elif not (a.load_emb or a.pixels):
        proj = None
        if a.proj:
            proj = nn.Sequential(nn.Linear(a.dim, a.proj), nn.BatchNorm1d(a.proj), nn.ReLU(), nn.Linear(a.proj, a.proj))
        log(f"params: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M")
        ep_done, secs, ep_times = train(model, proj, xtr, a, log)  # trained on all 60k train, no labels
        sec_ep = float(np.median(ep_times)) if ep_times else float("nan")
        log(f"trained {ep_done:.2f} epochs in {secs:.0f}s ({sec_ep:.1f} s/epoch)")
        info.update(epochs_done=round(ep_done, 2), train_s=round(secs, 1), sec_per_epoch=round(sec_ep, 1))
        if a.save:
            torch.save(model.state_dict(), a.save)
        zq, zg = embed(model, xq, tta=a.tta), embed(model, xg, tta=a.tta)
        if a.save_emb:
            torch.save((zq, zg), a.save_emb)

    res = {}
    log(f"{'variant':28s} {'P@1':>7s} {'P@10':>7s} {'mAP':>7s}")
    for v in a.post.split(","):
        te = time.time()
        q, g = postprocess(zq, zg, v)
        m = evaluate(q, g, yq, yg)
        res[v] = {k: round(x, 4) for k, x in m.items()}
        log(f"{v:28s} {m['P@1']:7.4f} {m['P@10']:7.4f} {m['mAP']:7.4f}   ({time.time() - te:.0f}s)")
    info["results"] = res
    info["split"] = "test" if a.final else "val"
    if a.jsonl:
        os.makedirs(os.path.dirname(a.jsonl), exist_ok=True)
        with open(a.jsonl, "a") as f:
            f.write(json.dumps(info) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Explore label-free post-processing on saved (query, gallery) embeddings (from fmnist_probe.py --save-emb).
Gallery kNN graph is computed once and reused (DBA, iterated DBA = graph smoothing); QE uses the final gallery.
Labels only for metrics."""

import argparse
import time

import fmnist_probe as fp  # the probe beside this file (a script's own folder is on sys.path)
import torch

ap = argparse.ArgumentParser()
ap.add_argument("emb")
ap.add_argument("--final", action="store_true")
ap.add_argument("--nq", type=int, default=5000)
ap.add_argument(
    "--variants", default="base;dba10a3;dba10a3,qe10a3;dba20a3,qe10a3;dba10a3x2,qe10a3;w0.25;w0.25,dba10a3,qe10a3"
)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
xtr, ytr = fp.load_split("train")
if a.final:
    _, yq = fp.load_split("t10k")
    yg = ytr
else:
    yq, yg = ytr[: a.nq], ytr[10000:]
zq, zg = torch.load(a.emb)
zq = zq[: len(yq)]
q0, g0 = fp.postprocess(zq, zg, "c")
cache = {}


def graph(g, k, key):
    if key not in cache:
        t = time.time()
        cache[key] = fp.knn(g, g, 51)
        print(f"  (knn graph {time.time() - t:.0f}s)", flush=True)
    s, i = cache[key]
    return s[:, : k + 1], i[:, : k + 1]


for v in a.variants.split(";"):
    t = time.time()
    q, g = q0.clone(), g0.clone()
    key = "c"
    for p in v.split(","):
        if p == "base":
            pass
        elif p.startswith("w"):
            f = fp.pca_whiten(g, float(p[1:]))
            q, g = fp.l2n(f(q)), fp.l2n(f(g))
            key = p
        elif p.startswith("dba"):  # dba<k>a<alpha>[b<beta>][x<rounds>]: g' = g + beta*sum_{nn != self} sim^alpha g_j
            k, rest = p[3:].split("a")
            rep = 1
            beta = 1.0
            if "x" in rest:
                rest, rep = rest.split("x")
                rep = int(rep)
            if "b" in rest:
                rest, beta = rest.split("b")
                beta = float(beta)
            s, i = graph(g, int(k), key)
            w = s.clamp(min=0).pow(float(rest))
            w[:, 1:] *= beta
            w[:, 0] = 1.0
            for _ in range(rep):
                g = fp.l2n((w[:, :, None] * g[i]).sum(1))
        elif p.startswith("qe"):  # qe<k>a<alpha>[b<beta>]: q' = q + beta*sum_{top-k} sim^alpha g_j
            k, rest = p[2:].split("a")
            beta = 1.0
            if "b" in rest:
                rest, beta = rest.split("b")
                beta = float(beta)
            s, i = fp.knn(q, g, int(k))
            w = s.clamp(min=0).pow(float(rest)) * beta
            q = fp.l2n(q + (w[:, :, None] * g[i]).sum(1))
    m = fp.evaluate(q, g, yq, yg)
    print(
        f"{v:32s} P@1 {m['P@1']:.4f}  P@10 {m['P@10']:.4f}  mAP {m['mAP']:.4f}   ({time.time() - t:.0f}s)", flush=True
    )

#!/usr/bin/env python3
"""Memory and time of the post-processing fit (whitening + the diffusion graph + every search vector)
at N images, with the graph fitted on all of them or on a uniform sample of ``max_anchors``.

The codes are the demo index's 60k Fashion-MNIST codes, repeated N/60k times with small noise.

    python scripts/research/fit_memory.py 300000 100000   # N, max_anchors (0 = the whole gallery)
"""

import resource
import sys
import time
from dataclasses import replace

import numpy as np

import simsearch
from simsearch.postprocess import PostConfig, fit

idx = simsearch.Index.open(sys.argv[3] if len(sys.argv) > 3 else "indexes/fashion-mnist")
c = idx.codes()
n = int(sys.argv[1])
ma = int(sys.argv[2])
rng = np.random.default_rng(0)
x = np.concatenate([c + 0.01 * rng.normal(size=c.shape).astype(np.float32) for _ in range(n // len(c))])[:n]
ids = np.arange(len(x))
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.time()
post = fit(x, ids, replace(PostConfig(), max_anchors=ma))
sv = np.concatenate([post.search_vectors(x[s : s + 65536], ids[s : s + 65536]) for s in range(0, len(x), 65536)])
r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(
    f"N={n} max_anchors={ma}: peak RSS before fit {r0:.0f} MiB, after fit + search vectors {r1:.0f} MiB, "
    f"+{r1 - r0:.0f} MiB, {time.time() - t:.0f}s, anchors {len(post.anchor_ids)}"
)

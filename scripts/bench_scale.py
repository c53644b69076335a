#!/usr/bin/env python3
"""Issue #12's benchmarks, one entry point: each part prints its own table.

    python scripts/bench_scale.py rss    --model M.pt --fmnist data/fashion-mnist/train --sizes 60000,300000
    python scripts/bench_scale.py ray    --folder data/fashion-mnist/train --model 'M.pt' --n 20000
    python scripts/bench_scale.py shards --sizes 1000000,10000000

- ``rss``: peak memory of streaming index builds against N (``scripts/bench/scale_rss.py``);
- ``ray``: indexing throughput with 1 and 2 Ray workers against the single process (``scale_ray.py``);
- ``shards``: a sharded index of 1M–10M synthetic vectors: build, memory, latency, recall@10 (``scale_shards.py``).

The figures and the commands that made them are in the README ("Past one machine"), and the cost
model built on them in docs/scale.md. Any further arguments go to the part's own script (``PART --help``).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

PARTS = {"rss": "scale_rss.py", "ray": "scale_ray.py", "shards": "scale_shards.py"}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in PARTS:
        print(__doc__, file=sys.stderr)
        return 2
    script = Path(__file__).parent / "bench" / PARTS[sys.argv[1]]
    sys.argv = [str(script), *sys.argv[2:]]
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How tests/data/v3-index was made: a format-3 index, written by the last commit before format 4
(8f78e18; format 4 added each image's denoising error as a third column of recon.npy).

Run from an export of that commit, not from this checkout:

    mkdir /tmp/simsearch-v3 && git archive 8f78e18 | tar -x -C /tmp/simsearch-v3
    cd /tmp/simsearch-v3 && PYTHONPATH=$PWD:$PWD/tests python /path/to/this/make_v3_index.py OUT

It writes a 12-image synthetic corpus (tests/synth.py) to OUT/corpus, indexes it with a tiny
model into OUT/index, and records in OUT/expected.json what that commit answered for three queries
(ids, paths and scores) and the reconstruction statistics it stored (mse, detail per path), which
tests/test_migrations.py compares after migrating.
"""

import json
import sys
from pathlib import Path

from synth import write_corpus

import simsearch
from simsearch.indexer import BuildOptions

out = Path(sys.argv[1])
corpus = write_corpus(out / "corpus", per_class=4, size=16)
index = simsearch.Index.build(
    out / "corpus",
    out / "index",
    options=BuildOptions.of(max_epochs=2, time_budget=20, width=8, depth=0, batch_size=8, workers=1, dim=16),
)
queries = ["disc/disc_001.png", "square/square_002.png", "stripes/stripes_003.png"]
stats = index.recon_stats()
expected = {
    "simsearch_commit": "8f78e18",
    "format_version": index.meta.format_version,
    "queries": {
        q: [{"id": h.id, "path": h.path, "score": h.score} for h in index.query(out / "corpus" / q, k=5)]
        for q in queries
    },
    "recon": {e.path: [float(v) for v in stats[i]] for i, e in enumerate(index.entries())},
}
(out / "expected.json").write_text(json.dumps(expected, indent=1))
print(index.info())

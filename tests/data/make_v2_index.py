"""How tests/data/v2-index was made: a format-2 index, written by the last commit before format 3
(d0f1176, which added the per-image reconstruction errors).

Run from an export of that commit, not from this checkout:

    mkdir /tmp/simsearch-v2 && git archive d0f1176 | tar -x -C /tmp/simsearch-v2
    cd /tmp/simsearch-v2 && PYTHONPATH=$PWD:$PWD/tests python /path/to/this/make_v2_index.py OUT

It writes a 12-image synthetic corpus (tests/synth.py) to OUT/corpus, indexes it with a tiny
model into OUT/index, and records what 0.1 answered for three queries in OUT/expected.json
(ids, paths and scores), which tests/test_migrations.py compares after migrating.
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
    options=BuildOptions(max_epochs=2, time_budget=20, width=8, depth=0, batch_size=8, workers=1, dim=16),
)
queries = ["disc/disc_001.png", "square/square_002.png", "stripes/stripes_003.png"]
expected = {
    "simsearch_commit": "d0f1176",
    "queries": {
        q: [{"id": h.id, "path": h.path, "score": h.score} for h in index.query(out / "corpus" / q, k=5)]
        for q in queries
    },
}
(out / "expected.json").write_text(json.dumps(expected, indent=1))
print(index.info())

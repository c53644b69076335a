#!/usr/bin/env bash
# The whole job end to end on the default corpus, on a fresh machine:
# install → Fashion-MNIST as PNG folders → train + index the 60k train images
# → query a pair of jeans from the test set → table + contact sheet.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/install.sh

python3 scripts/fetch_fashion_mnist.py --out data/fashion-mnist
simsearch index data/fashion-mnist/train --index indexes/fashion-mnist

JEANS=data/fashion-mnist/test/trouser/00002.png
echo "query: a pair of jeans ($JEANS)" >&2
simsearch query "$JEANS" --index indexes/fashion-mnist -k 8 --grid out/jeans.png
echo "demo finished in $(( $(date +%s) - start ))s; contact sheet: out/jeans.png" >&2

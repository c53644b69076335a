#!/usr/bin/env bash
# Install everything, then run the test suite. Extra arguments go to pytest
# (e.g. `bash scripts/test.sh -m slow` for the long fuzz / kill tests).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
python3 -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"

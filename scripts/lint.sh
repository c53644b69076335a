#!/usr/bin/env bash
# Lint, format and type checks (CI runs them before the tests); exits non-zero on any finding.
# The pinned ruff and mypy come with `bash scripts/install.sh --dev`.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rc=0
"$PY" -m ruff check simsearch tests scripts || rc=1
"$PY" -m ruff format --check simsearch tests scripts || rc=1
"$PY" -m mypy simsearch || rc=1
exit "$rc"

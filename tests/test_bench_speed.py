"""Smoke test for scripts/bench_speed.py: a tiny --quick run prints the table. No timing assertions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_speed.py"


def test_quick_run_prints_the_table(tmp_path):
    out = tmp_path / "bench.md"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--skip",
        "3,4,5",
        "--decode-n",
        "100",
        "--jpeg-n",
        "4",
        "--embed-n",
        "300",
        "--n-vectors",
        "3000",
        "--n-queries",
        "50",
        "--single",
        "10",
        "--slow-single",
        "2",
        "--ann-types",
        "flat,ivf",
        "--out",
        str(out),
        "--tmp",
        str(tmp_path),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    table = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| row | measurement | value |")
    by_row: dict[str, list[str]] = {}
    for line in table[1:]:
        by_row.setdefault(line.split("|")[1].strip(), []).append(line)
    assert {"1a", "1b", "2", "3", "4", "5", "6", "7"} <= set(by_row)
    assert len(by_row["1a"]) == len(by_row["1b"]) == 3  # naive, decode_files(workers=0), decode_files(workers=1)
    assert any("embed.embed on cpu" in line for line in by_row["2"])
    for key in ("3", "4", "5"):
        assert "skipped (--skip)" in by_row[key][0]
    for name in ("numpy brute force", "FAISS flat", "simsearch ivf"):
        assert any(name in line for line in by_row["6"]), name
    assert any("simsearch hnsw" in line and "skipped" in line for line in by_row["6"])
    assert len(by_row["7"]) == 4 and any("fp32" in line and "images/s" in line for line in by_row["7"])
    assert "ERROR" not in r.stdout
    assert "command:" in r.stdout and "bench_speed.py" in r.stdout
    assert out.read_text() == r.stdout
    # the temporary folder was cleaned up
    assert not list(tmp_path.glob("bench_speed_*"))

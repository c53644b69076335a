"""Row 5: the cold command line, process start to exit (``simsearch query``, ``simsearch --help``)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from .common import log, ms, row, timeit
from .context import Ctx


def simsearch_command() -> list[str]:
    exe = Path(sys.executable).parent / "simsearch"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "simsearch"]


def imports_torch(cli_args: list[str]) -> str:
    """Whether ``simsearch CLI_ARGS`` imports torch (an extra, untimed run of the same command)."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write('\\nTORCH-LOADED=%d\\n' % ('torch' in sys.modules)))\n"
        "from simsearch.cli import main\n"
        "sys.argv = ['simsearch'] + sys.argv[1:]\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *cli_args], capture_output=True, text=True)
    return "yes" if "TORCH-LOADED=1" in r.stderr else "no" if "TORCH-LOADED=0" in r.stderr else "unknown"


def row_cold_cli(ctx: Ctx) -> list[dict]:
    g = ctx.gallery()
    cmd = simsearch_command()
    new_png = ctx.tmp / "new-query.png"
    ctx.new_images(1)[0].save(new_png)
    from simsearch import store

    snap = store.read(g["dir"], load_faiss=False)
    indexed_png = Path(snap.meta.corpus_root) / snap.entries[len(snap.entries) // 2].path
    cases = [
        ("simsearch --help", cmd + ["--help"], "help"),
        (
            "simsearch query NEW.png --index IDX (not indexed: loads the model, encodes)",
            cmd + ["query", str(new_png), "--index", str(g["dir"])],
            "new image (PIL, mirrored test image)",
        ),
        (
            "simsearch query INDEXED.png --index IDX (stored vector reused)",
            cmd + ["query", str(indexed_png), "--index", str(g["dir"])],
            "indexed path",
        ),
    ]
    rows = []
    warm = ctx.results.get("warm_query", {})
    for what, argv, warm_kind in cases:
        log(f"row 5: {what} × {ctx.a.cold_reps}")

        def run(_i, argv=argv):
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode != 0 or not r.stdout.strip():
                raise RuntimeError(f"{shlex.join(argv)} failed (rc {r.returncode}): {r.stderr.strip()[-300:]}")

        t = timeit(run, ctx.a.cold_reps, warmup=1)
        note = f"p99 {ms(t.p99)}, median of {t.n} (+1 untimed warm-up); new process each, page cache warm"
        note += f"; imports torch: {imports_torch(argv[len(cmd) :])}"
        if warm_kind in warm:
            note += f"; {t.median * 1e3 / warm[warm_kind]:,.0f}× the warm library query (row 4)"
        rows.append(row("5", what, t.median * 1e3, "ms", notes=note))
    rows[0]["notes"] += f"; command: {shlex.join(cmd)}"
    return rows

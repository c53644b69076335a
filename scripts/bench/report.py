"""The report around the table: the markdown table itself, the machine, the load."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from .common import fmt, usable_cpus


def render(rows: list[dict]) -> str:
    head = "| row | measurement | value | unit | compared with | speed vs comparison | notes |"
    lines = [head, "|---|---|--:|---|---|--:|---|"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3g}×" if r["ratio"] < 10 else f"{r['ratio']:,.0f}×"
        cells = [r["row"], r["what"], fmt(r["value"]), r["unit"], r["vs"], ratio, r["notes"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def machine_info() -> list[str]:
    import faiss
    import PIL
    import torch

    from simsearch.render import human_bytes

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = usable_cpus()
    mem = ""
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
        mem = f", {human_bytes(kb * 1024)} RAM"
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import sklearn

        skl = f"scikit-learn {sklearn.__version__}"
    except ImportError:
        skl = "scikit-learn not installed"
    if torch.cuda.is_available():
        device = f"CUDA: {torch.cuda.get_device_name(0)} (simsearch device 'auto' → cuda)"
    else:
        device = "CPU only (no CUDA; simsearch device 'auto' → cpu)"
    import simsearch

    return [
        f"- machine: {platform.node()}, {platform.system()} {platform.machine()}, {cpu}, "
        f"{usable} usable CPUs (os.cpu_count {os.cpu_count()}){mem}",
        f"- software: Python {platform.python_version()}, simsearch {simsearch.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), faiss {faiss.__version__} "
        f"({faiss.omp_get_max_threads()} OpenMP threads), "
        f"numpy {np.__version__}, Pillow {PIL.__version__}, {skl}",
        f"- device: {device}",
    ]


def loadavg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def busy_warning(load: float | None) -> list[str]:
    """A warning line when other processes kept the CPUs busy before we started (multi-threaded timings
    then swing wildly). ``load``: the 1-minute load average at start."""
    cpus = usable_cpus()
    if load is None or load <= 0.5 * cpus:
        return []
    return [
        f"- **WARNING: busy machine** (load {load:.1f} on {cpus} CPUs before the benchmark started): "
        "multi-threaded steps (torch, FAISS, BLAS) can take 10-100× longer while their threads wait for a core; "
        "do not compare these numbers"
    ]

#!/usr/bin/env python3
"""Indexing throughput on Ray against the single-process path, on the same folder and the same model.

Each configuration runs once, in a fresh process (a fresh Ray cluster), on N images of a folder
(linked into a scratch folder in discovery order, spread evenly over it):

- ``single process``: ``indexer.update`` with ``--model`` (decode processes, one per core; torch
  on all cores), as ``simsearch index DIR --model M`` runs it;
- ``Ray, 1 worker``: a local Ray cluster of one node with 1 CPU;
- ``Ray, 2 workers``: a two-node local cluster (``ray.cluster_utils.Cluster``), 1 CPU each.

Where the indexer dispatches to Ray (``BuildOptions.ray``), each configuration builds a fresh index
(``indexer.update`` with the model), timed whole, and its decode + embed stages are read from the
run's timings (the part Ray distributes; fit and write are the same single-node code either way).
Otherwise only that stage is timed: ``distributed.embed_parts`` (fresh parts: everything is
computed) against ``pool.decode_files`` + ``embed.embed``. Starting the cluster is not counted;
starting the actors (torch import, model load) is. Prints a markdown table; nothing is asserted.

    python scripts/bench/scale_ray.py --folder data/fashion-mnist/train \\
        --model indexes/fashion-mnist/models/*.pt --n 20000
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: scripts/ on the path, as bench_speed.py has it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import log, row  # noqa: E402
from bench.report import busy_warning, loadavg, machine_info, render  # noqa: E402

STORE_BYTES = 200 * 1024**2

MODES = {
    "local": "single process",
    "ray1": "Ray, 1 worker (one node of 1 logical CPU)",
    "ray2": "Ray, 2 workers (two local nodes of 1 logical CPU each)",
}


def link_sample(folder: Path, n: int, out: Path) -> int:
    """Symlink ``n`` images of ``folder`` (evenly spaced in discovery order) into ``out``, keeping their subfolders."""
    from simsearch.discover import discover

    files, _ = discover(folder)
    step = max(1, len(files) // n)
    chosen = files[::step][:n]
    for p in chosen:
        dst = out / p.relative_to(folder)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(p.resolve())
    return len(chosen)


def _start(mode: str):
    """Start the mode's Ray cluster (None for ``local``); → (address or None, the cluster, seconds)."""
    if mode == "local":
        return None, None, 0.0
    import ray

    t0 = time.perf_counter()
    node = {"num_cpus": 1, "object_store_memory": STORE_BYTES}
    if mode == "ray1":
        ray.init(include_dashboard=False, logging_level="WARNING", **node)
        return None, None, time.perf_counter() - t0
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    return cluster.address, cluster, time.perf_counter() - t0


def measure(mode: str, folder: Path, model: Path, work: Path) -> dict:
    """One configuration, in this process: the decode + embed stage, then (when the indexer can) the whole index."""
    import dataclasses

    import numpy as np

    from simsearch import distributed, embed, store
    from simsearch import model as model_mod
    from simsearch.discover import discover
    from simsearch.indexer import BuildOptions, scan, update
    from simsearch.pool import decode_files
    from simsearch.preprocess import Preprocess
    from simsearch.views import tta_views_for

    net, info = model_mod.load(model)
    pre = Preprocess(net.config.image_size, net.config.channels)
    views = tta_views_for(pre.size)
    files, _ = discover(folder)
    todo = scan(files, folder, folder.resolve())
    address, cluster, started = _start(mode)
    out: dict = {"mode": mode, "n": len(todo), "cluster_start_s": round(started, 1)}
    try:
        if "ray" in {f.name for f in dataclasses.fields(BuildOptions)}:
            # the indexer dispatches to Ray: time the whole `simsearch index DIR --model M [--ray]`
            kw = {"ray": True, "ray_address": address} if mode != "local" else {}
            t0 = time.perf_counter()
            rep = update(folder, work / "idx", BuildOptions(model=str(model), device="cpu", **kw))
            out["index_s"] = time.perf_counter() - t0
            out["indexed"] = out["embedded"] = rep.total
            out["timings"] = rep.timings
            out["stage_s"] = rep.timings.get("decode", 0.0) + rep.timings.get("embed", 0.0)
            assert store.read(work / "idx", load_faiss=False).meta.model.sha256 == info["sha256"]
            if mode != "local":
                out["nodes"] = len({n["NodeID"] for n in __import__("ray").nodes() if n["Alive"]})
        else:  # the decode + embed stage alone
            t0 = time.perf_counter()
            if mode == "local":
                chunk, done = 4096, 0
                for s in range(0, len(todo), chunk):
                    px = [a for _, a, _, _ in decode_files([f.path for f in todo[s : s + chunk]], pre) if a is not None]
                    embed.embed(net, np.stack(px), "cpu", views=views, recon=True)
                    done += len(px)
            else:
                emb, stats = distributed.embed_parts(
                    todo, pre, model, views, {}, BuildOptions(device="cpu"), None, work=work / "parts"
                )
                done = len(emb.done)
                out["nodes"] = len(stats.nodes)
            out["stage_s"] = time.perf_counter() - t0
            out["embedded"] = done
    finally:
        if mode != "local":
            import ray

            ray.shutdown()
            if cluster is not None:
                cluster.shutdown()
    return out


def run_mode(mode: str, folder: Path, model: Path, scratch: Path) -> dict:
    """``measure`` in a fresh Python process (each configuration starts clean)."""
    work = scratch / mode
    work.mkdir()
    cmd = [sys.executable, __file__, "--_measure", mode, "--folder", str(folder), "--model", str(model)]
    cmd += ["--_work", str(work)]
    log(f"{MODES[mode]} ...")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> list[dict]:
    base = {r["mode"]: r for r in results}["local"]
    rows = []
    for r in results:
        vs = "" if r["mode"] == "local" else MODES["local"]
        rate = r["embedded"] / r["stage_s"]
        note = f"{r['embedded']} images in {r['stage_s']:.1f} s"
        if r["mode"] != "local":
            note += f"; {r['nodes']} node(s); cluster start {r['cluster_start_s']} s (not counted)"
        base_rate = base["embedded"] / base["stage_s"]
        rows.append(
            row(
                "ray",
                f"decode + embed: {MODES[r['mode']]}",
                rate,
                "images/s",
                vs,
                rate / base_rate if vs else None,
                note,
            )
        )
    for r in results:
        if "index_s" not in r:
            continue
        rate = r["indexed"] / r["index_s"]
        vs = "" if r["mode"] == "local" else MODES["local"]
        base_rate = base["indexed"] / base["index_s"] if "index_s" in base else None
        ratio = rate / base_rate if vs and base_rate else None
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in r["timings"].items())
        rows.append(row("ray", f"whole index --model: {MODES[r['mode']]}", rate, "images/s", vs, ratio, stages))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=Path("data/fashion-mnist/train"))
    ap.add_argument("--model", default="indexes/fashion-mnist/models/*.pt", help="a saved model (a glob is expanded)")
    ap.add_argument("--n", type=int, default=20000, help="images to index (default 20000)")
    ap.add_argument("--modes", default="local,ray1,ray2")
    ap.add_argument("--out", type=Path, help="also write the table here")
    ap.add_argument("--_measure", help=argparse.SUPPRESS)
    ap.add_argument("--_work", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    models = sorted(glob.glob(str(a.model)))
    if not models:
        raise SystemExit(f"{a.model}: no model file")
    model = Path(models[0]).resolve()
    if a._measure:
        print(json.dumps(measure(a._measure, a.folder, model, a._work)))
        return
    load = loadavg()
    with tempfile.TemporaryDirectory(prefix="scale-ray-") as tmp:
        scratch = Path(tmp)
        n = link_sample(a.folder.resolve(), a.n, scratch / "images")
        log(f"{n} images of {a.folder} linked into {scratch / 'images'}; model {model.name[:12]}")
        results = [run_mode(m, scratch / "images", model, scratch) for m in a.modes.split(",")]
    text = "\n".join(
        [
            f"Ray indexing throughput: {n} images of {a.folder}, model {model.name[:12]}, one run each",
            "",
            *machine_info(),
            f"- load average at start: {load}",
            *busy_warning(float(load.split("/")[0]) if load != "n/a" else None),
            "",
            render(table(results)),
            "",
            "Ray's CPU counts are logical: every configuration runs on this machine's cores, and a Ray worker's"
            " decode task and embedding actor are two processes (one torch thread each); the single process"
            " decodes in one process per core and embeds with torch on every core.",
            "",
            f"command: python scripts/bench/scale_ray.py --folder {a.folder} --model {a.model} --n {a.n}",
        ]
    )
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

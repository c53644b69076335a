"""Duplicate finding: simsearch dupes against imagededup's PHash / DHash on a generated set, plus
runtimes on a large index and on 1M synthetic vectors.

1. **Generated set.** ``--originals`` images drawn (deterministically, by a hash of the path) from
   one half of a real corpus (default Debian's openclipart-png; ``--half dev`` or ``heldout``, a
   hash of the path decides the half: design on one, report the other once). The originals are
   distinct by construction, by a pixel test fixed before any result and independent of simsearch
   (``pick_originals``): a file is skipped when its 32×32 grey thumbnail correlates ≥ 0.95 with an
   original already picked (the same drawing repeated, resized or recoloured in another folder),
   or when the thumbnails of the two drawings trimmed to their content do (the same drawing on
   another canvas: until 2026-12-03 these were picked as distinct, and the pixel check's "false"
   pairs on the development half included the same house in two folders and the same flag at two
   sizes), or when it is flat or under 32 px. Originals are written flattened onto white as PNG.
   ``--plant`` of them get a copy each, in turn: resized (50–80%), re-compressed (JPEG quality
   40–75), cropped (3–6% a side, then re-saved), and exact (the same bytes under another name).
   Every file goes into one flat folder under a random name; the truth (which files are copies
   of which) is kept aside.
2. **simsearch.** The folder is indexed (default settings, ``--budget`` seconds of training), then
   ``dupes.find`` runs at the calibrated thresholds (``--no-verify``: without the pixel check).
   A predicted pair is any two images in one group.
3. **imagededup** (``pip install imagededup``) ``find_duplicates`` with PHash and DHash at their
   default thresholds (``max_distance_threshold`` 10), on the same folder. A predicted pair is
   any two files listed as duplicates.
4. Precision and recall of pairs (truth: an original and its copy) and time, side by side.
5. ``--big-index DIR``: ``dupes.find`` on an existing index (read-only), timed. With
   ``--pixel-check``: only the pixel check, on that index's candidate pairs at its calibrated cosine
   threshold (those ``dupes`` checks: files that differ), the one-pair-at-a-time reference
   (``pixelmatch.similarities_one_by_one``) beside ``pixelmatch.similarities`` (all pairs at once),
   on the same decoded grids: seconds (wall and CPU), pairs/s, the speed ratio and the largest
   difference between the two (``--pixel-pairs N``: a seeded sample of N pairs).
6. ``--synthetic N``: ``neighbours.range_pairs`` + ``dupes.group_pairs`` on N random 64-d unit
   vectors with 1% planted near-duplicates (cosine ≈ 0.99), timed, with the planted pairs' recall
   (vectors only: there are no files, so no pixel check).

    python scripts/bench_dupes.py --half heldout --work /tmp/dupes-bench --big-index indexes/fashion-mnist \
        --synthetic 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("resized", "recompressed", "cropped", "exact")


DISTINCT_SIDE = 32  # originals are compared as 32×32 grey thumbnails (flattened onto white, box-filtered)
DISTINCT_CORR = 0.95  # an original correlating at least this with an earlier pick is not picked


def half_of(rel: str) -> str:
    """Which half of the corpus a file belongs to: "dev" or "heldout", by a hash of its path."""
    return "dev" if hashlib.sha256(f"half:{rel}".encode()).digest()[0] % 2 == 0 else "heldout"


def grey_thumb(img) -> np.ndarray | None:
    """A picture's 32×32 grey thumbnail, centred and scaled to unit norm (None: a flat picture)."""
    t = np.asarray(img.convert("L").resize((DISTINCT_SIDE, DISTINCT_SIDE), Image.Resampling.BOX), np.float64).ravel()
    t = t - t.mean()
    n = np.linalg.norm(t)
    return None if n < 1e-6 * t.size else t / n


def content(img):
    """The picture cropped to its content: the box of pixels more than 16 levels from white in some
    channel (the picture itself when it is all white)."""
    from PIL import ImageChops

    ink = ImageChops.difference(img, Image.new("RGB", img.size, "white")).convert("L").point(lambda v: 255 * (v > 16))
    box = ink.getbbox()
    return img.crop(box) if box else img


def pick_originals(corpus: Path, n: int, seed: int, half: str | None = None) -> tuple[list[Path], int]:
    """``n`` originals that are distinct by construction, with no help from simsearch: files are
    visited in a seeded hash order (only those of ``half`` when given), and a file is skipped when
    it does not decode, is under 32 px, is flat (one grey level), or when its 32×32 grey thumbnail,
    or that of its ``content``, correlates ≥ ``DISTINCT_CORR`` (Pearson) with that of an original
    already picked — the same drawing recoloured, resized or repeated in another folder, or on
    another canvas. → (picked, skipped as near-identical)."""
    from simsearch.decode import open_image
    from simsearch.preprocess import to_display

    files = sorted(p for p in corpus.rglob("*.png") if p.is_file())
    if half:
        files = [p for p in files if half_of(str(p.relative_to(corpus))) == half]
    files.sort(key=lambda p: hashlib.sha256(f"{seed}:{p.relative_to(corpus)}".encode()).hexdigest())
    thumbs = np.zeros((n, DISTINCT_SIDE * DISTINCT_SIDE))
    trimmed = np.zeros((n, DISTINCT_SIDE * DISTINCT_SIDE))  # of their content: zero where it is flat
    out: list[Path] = []
    near = 0
    for p in files:
        try:
            img = to_display(open_image(p))
        except Exception:  # noqa: BLE001
            continue
        if min(img.size) < 32:
            continue
        t = grey_thumb(img)
        if t is None:
            continue
        tc = grey_thumb(content(img))
        tc = np.zeros_like(t) if tc is None else tc
        if out and max(float((thumbs[: len(out)] @ t).max()), float((trimmed[: len(out)] @ tc).max())) >= DISTINCT_CORR:
            near += 1
            continue
        thumbs[len(out)], trimmed[len(out)] = t, tc
        out.append(p)
        if len(out) == n:
            break
    return out, near


def make_copy(path: Path, kind: str, rng: random.Random) -> tuple[bytes, str]:
    from simsearch.decode import open_image
    from simsearch.preprocess import to_display

    if kind == "exact":
        return path.read_bytes(), path.suffix
    img = to_display(open_image(path))
    w, h = img.size
    buf = io.BytesIO()
    if kind == "resized":
        s = rng.uniform(0.5, 0.8)
        img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS).save(buf, "PNG")
        return buf.getvalue(), ".png"
    if kind == "recompressed":
        img.save(buf, "JPEG", quality=rng.randint(40, 75))
        return buf.getvalue(), ".jpg"
    c = [rng.uniform(0.03, 0.06) for _ in range(4)]
    box = (round(c[0] * w), round(c[1] * h), w - round(c[2] * w), h - round(c[3] * h))
    img.crop(box).save(buf, "JPEG", quality=90)
    return buf.getvalue(), ".jpg"


def generate(corpus: Path, out: Path, originals: int, plant: int, seed: int, half: str | None = None) -> dict:
    rng = random.Random(seed)
    picked, near = pick_originals(corpus, originals, seed, half)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    names = [f"{i:05d}" for i in range(len(picked) + plant)]
    rng.shuffle(names)
    files, truth = {}, []
    from simsearch.decode import open_image
    from simsearch.preprocess import to_display

    for i, p in enumerate(picked):
        # flattened onto white: a hash-based finder reads the transparent pixels' hidden colour, and the
        # copies (JPEG) cannot keep transparency, so the originals do not either (fair to both sides)
        name = names[i] + ".png"
        to_display(open_image(p)).save(out / name)
        files[name] = str(p)
    for j in range(min(plant, len(picked))):
        src_name = names[j] + ".png"
        kind = KINDS[j % len(KINDS)]
        data, ext = make_copy(out / src_name, kind, rng)
        name = names[len(picked) + j] + ext
        (out / name).write_bytes(data)
        truth.append((src_name, name, kind))
    return {"files": files, "truth": truth, "near_identical_skipped": near}


def pairs_from_groups(groups: list[list[str]]) -> set[frozenset]:
    out = set()
    for g in groups:
        g = sorted(set(g))
        for i in range(len(g)):
            for j in range(i + 1, len(g)):
                out.add(frozenset((g[i], g[j])))
    return out


def score(pred: set[frozenset], truth: list[tuple[str, str, str]]) -> dict:
    t = {frozenset((a, b)) for a, b, _ in truth}
    tp = len(pred & t)
    by_kind = {
        k: round(
            sum(frozenset((a, b)) in pred for a, b, kk in truth if kk == k) / max(1, sum(kk == k for *_, kk in truth)),
            3,
        )
        for k in KINDS
    }
    return {
        "precision": round(tp / len(pred), 4) if pred else 1.0,
        "recall": round(tp / len(t), 4) if t else 1.0,
        "pairs_predicted": len(pred),
        "pairs_true": len(t),
        "recall_by_kind": by_kind,
    }


def run_simsearch(
    folder: Path, index_dir: Path, budget: float, epochs: int | None = None, reuse: bool = False, verify: bool = True
) -> tuple[dict, object]:
    import simsearch
    from simsearch import dupes

    t0 = time.perf_counter()
    if reuse:
        idx = simsearch.Index.open(index_dir)
    else:
        if index_dir.exists():
            shutil.rmtree(index_dir)
        opts = {"time_budget": budget} | ({"max_epochs": epochs} if epochs else {})
        idx = simsearch.Index.build(folder, index_dir, **opts)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = dupes.find(idx, verify=verify)
    dupes_s = time.perf_counter() - t0
    groups = [[Path(m.path).name for m in g.members] for g in res.groups]
    return {"build_s": round(build_s, 1), "dupes_s": round(dupes_s, 2), "groups": groups}, res


def run_imagededup(folder: Path, method: str) -> dict:
    from imagededup import methods

    hasher = getattr(methods, method)(verbose=False)
    t0 = time.perf_counter()
    found = hasher.find_duplicates(image_dir=str(folder))
    s = time.perf_counter() - t0
    groups = [[k, *v] for k, v in found.items() if v]
    return {"seconds": round(s, 1), "groups": groups}


def big_index(path: Path) -> dict:
    import simsearch
    from simsearch import dupes

    idx = simsearch.Index.open(path)  # read-only: dupes writes nothing
    t0 = time.perf_counter()
    res = dupes.find(idx)
    s = time.perf_counter() - t0
    return {
        "index": str(path),
        "images": res.images,
        "seconds": round(s, 1),
        "threshold": res.calibration.threshold,
        "why": res.calibration.why(),
        "groups": len(res.groups),
        "duplicates": res.duplicates,
        "candidate_pairs": res.candidates,
        "pairs_checked": res.checked,
    }


def pixel_check(path: Path, n_pairs: int = 0, seed: int = 0) -> dict:
    """The pixel check alone on an index's candidate pairs: the per-pair reference against the batched path."""
    import simsearch
    from simsearch import dupes, neighbours, pixelmatch

    idx = simsearch.Index.open(path)
    base = idx.base_vectors()
    cal = dupes.calibrate(idx, base=base, verify=False)
    a, b, _ = neighbours.range_pairs(base, cal.threshold, max_k=dupes.MAX_PARTNERS)
    entries = idx.entries()
    differ = [i for i, (x, y) in enumerate(zip(a.tolist(), b.tolist())) if entries[x].sha256 != entries[y].sha256]
    if n_pairs and n_pairs < len(differ):
        differ = sorted(np.random.default_rng(seed).choice(differ, n_pairs, replace=False).tolist())
    pairs = [(int(a[i]), int(b[i])) for i in differ]
    rows = sorted({r for pair in pairs for r in pair})

    def timed(fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - w, time.process_time() - c

    grids, decode_s, decode_cpu = timed(lambda: pixelmatch.load_grids([idx.root / entries[r].path for r in rows]))
    grid_of = dict(zip(rows, grids)).get
    out = {
        "index": str(path),
        "cosine_threshold": cal.threshold,
        "pairs": len(pairs),
        "images": len(rows),
        "decode_s": round(decode_s, 2),
        "decode_cpu_s": round(decode_cpu, 2),
        "runs": [],
    }
    ref, wall, cpu = timed(lambda: pixelmatch.similarities_one_by_one(pairs, grid_of))
    out["runs"].append({"path": "one pair at a time (before)", "s": wall, "cpu_s": cpu, "max_abs_diff": 0.0})
    for threads in (1, 0):
        got, wall, cpu = timed(lambda t=threads: pixelmatch.similarities(pairs, grid_of, threads=t))
        name = "all pairs at once, 1 thread" if threads == 1 else f"all pairs at once, {_cpus()} threads"
        diff = np.abs(got.astype(np.float64) - ref)
        out["runs"].append({"path": name, "s": wall, "cpu_s": cpu, "max_abs_diff": float(np.nanmax(diff, initial=0))})
    for r in out["runs"]:
        r["pairs_per_s"] = round(len(pairs) / r["s"]) if r["s"] else None
        r["ratio"] = round(out["runs"][0]["s"] / r["s"], 1) if r["s"] else None
        r["s"], r["cpu_s"] = round(r["s"], 2), round(r["cpu_s"], 2)
    return out


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def synthetic(n: int, d: int = 64, seed: int = 0) -> dict:
    from simsearch import dupes, neighbours

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    m = n // 100
    src = rng.choice(n - m, size=m, replace=False)
    noise = rng.standard_normal((m, d), dtype=np.float32) * 0.012
    x[n - m :] = x[src] + noise
    x[n - m :] /= np.linalg.norm(x[n - m :], axis=1, keepdims=True)
    t0 = time.perf_counter()
    a, b, s = neighbours.range_pairs(x, 0.95)
    t1 = time.perf_counter()
    groups = dupes.group_pairs(n, a, b, s)
    t2 = time.perf_counter()
    found = {(int(p), int(q)) for p, q in zip(a, b)}
    rec = np.mean([(min(i, j), max(i, j)) in found for i, j in zip(src, range(n - m, n))])
    return {
        "vectors": n,
        "dim": d,
        "planted_pairs": m,
        "pairs_s": round(t1 - t0, 1),
        "group_s": round(t2 - t1, 1),
        "total_s": round(t2 - t0, 1),
        "groups": len(groups),
        "planted_recall": round(float(rec), 4),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("/usr/share/openclipart/png"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/simsearch-bench-dupes"))
    ap.add_argument("--originals", type=int, default=1500)
    ap.add_argument("--plant", type=int, default=200)
    ap.add_argument("--budget", type=float, default=120, help="simsearch training budget, seconds")
    ap.add_argument("--epochs", type=int, default=None, help="cap on training epochs (default: the budget decides)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--half",
        choices=("dev", "heldout", "all"),
        default="dev",
        help="draw originals from this half of the corpus (a hash of the path): design on dev, report heldout once",
    )
    ap.add_argument(
        "--reuse", action="store_true", help="keep the set and index of an earlier run with the same arguments"
    )
    ap.add_argument("--no-verify", action="store_true", help="dupes without its pixel verification stage")
    ap.add_argument("--no-imagededup", action="store_true")
    ap.add_argument("--big-index", type=Path)
    ap.add_argument(
        "--pixel-check",
        action="store_true",
        help="with --big-index: time only the pixel check, one pair at a time (before) against all pairs at once",
    )
    ap.add_argument("--pixel-pairs", type=int, default=0, help="with --pixel-check: a seeded sample of N pairs")
    ap.add_argument("--synthetic", type=int, default=0)
    ap.add_argument("--skip-set", action="store_true", help="only the --big-index / --synthetic runtimes")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    results: dict = {}
    if not args.skip_set:
        folder = args.work / "set"
        half = None if args.half == "all" else args.half
        made = args.work / "set.json"
        sig = [str(args.corpus), args.originals, args.plant, args.seed, args.half, args.budget, args.epochs]
        reuse = args.reuse and made.is_file() and json.loads(made.read_text())["args"] == sig
        if reuse:
            info = json.loads(made.read_text())
        else:
            made.unlink(missing_ok=True)
            info = generate(args.corpus, folder, args.originals, args.plant, args.seed, half)
        truth = info["truth"]
        n_files = len(list(folder.iterdir()))
        print(
            f"set ({args.half} half of {args.corpus}, seed {args.seed}): {n_files} files, "
            f"{len(truth)} planted copies ({', '.join(KINDS)}) in {folder}; "
            f"{info['near_identical_skipped']} near-identical originals skipped (32x32 grey thumbnail, of the whole "
            f"picture or of its content, correlation >= {DISTINCT_CORR} with one already picked)"
        )
        ours, res = run_simsearch(
            folder, args.work / "index", args.budget, args.epochs, reuse=reuse, verify=not args.no_verify
        )
        if not reuse:
            made.write_text(json.dumps({**info, "args": sig}))
        print(res.calibration.why())
        row = score(pairs_from_groups(ours["groups"]), truth)
        results["simsearch"] = {
            **row,
            "index_build_s": ours["build_s"],
            "dupes_s": ours["dupes_s"],
            "threshold": res.calibration.threshold,
            "pixel_threshold": None if res.calibration.pixel is None else res.calibration.pixel.threshold,
            "candidate_pairs": res.candidates,
            "pairs_checked": res.checked,
        }
        if not args.no_imagededup:
            for method in ("PHash", "DHash"):
                try:
                    got = run_imagededup(folder, method)
                except ImportError as e:
                    print(f"imagededup not available ({e}); pip install imagededup", file=sys.stderr)
                    break
                results[f"imagededup {method}"] = {
                    **score(pairs_from_groups(got["groups"]), truth),
                    "seconds": got["seconds"],
                }
        print(f"\n{'method':<20} {'precision':>9} {'recall':>7} {'pairs':>6}  time")
        for name, r in results.items():
            t = (
                f"{r['index_build_s']} s index build + {r['dupes_s']} s dupes"
                if "dupes_s" in r
                else f"{r['seconds']} s"
            )
            print(f"{name:<20} {r['precision']:>9.3f} {r['recall']:>7.3f} {r['pairs_predicted']:>6}  {t}")
            print(f"{'':<20} recall by kind: {r['recall_by_kind']}")
    if args.big_index and args.pixel_check:
        results["pixel_check"] = pc = pixel_check(args.big_index, args.pixel_pairs, args.seed)
        print(
            f"\npixel check on {pc['index']}: {pc['pairs']} candidate pairs (cosine >= {pc['cosine_threshold']}, files "
            f"that differ) among {pc['images']} images; decoding their grids {pc['decode_s']} s "
            f"({pc['decode_cpu_s']} s CPU), not included below"
        )
        print(f"{'path':<32} {'pairs':>7} {'s':>8} {'CPU s':>8} {'pairs/s':>8} {'ratio':>6}  max |diff|")
        for r in pc["runs"]:
            print(
                f"{r['path']:<32} {pc['pairs']:>7} {r['s']:>8} {r['cpu_s']:>8} {r['pairs_per_s']:>8} "
                f"{r['ratio']:>6}  {r['max_abs_diff']:.2g}"
            )
    elif args.big_index:
        results["big_index"] = big_index(args.big_index)
        b = results["big_index"]
        print(
            f"\ndupes on {b['index']}: {b['images']} images in {b['seconds']} s, threshold {b['threshold']}: "
            f"{b['groups']} groups, {b['duplicates']} images to review; {b['pairs_checked']} of "
            f"{b['candidate_pairs']} candidate pairs checked pixel by pixel\n  {b['why']}"
        )
    if args.synthetic:
        results["synthetic"] = s = synthetic(args.synthetic)
        print(
            f"\n{s['vectors']} synthetic {s['dim']}-d vectors: pairs {s['pairs_s']} s + groups {s['group_s']} s = "
            f"{s['total_s']} s; {s['groups']} groups; planted pairs found {s['planted_recall']}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

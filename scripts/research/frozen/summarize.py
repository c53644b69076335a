"""Print the frozen probe's runs.jsonl (fmnist_probe.py) as a markdown table."""

import json
import sys

KEYS = [
    "obj",
    "width",
    "stem",
    "res",
    "norm",
    "bs",
    "lr",
    "sched",
    "budget",
    "rec",
    "w_inv",
    "tau",
    "proj",
    "denoise",
    "rec_views",
    "shift",
    "scale",
    "rot",
    "flip",
    "erase",
    "noise",
    "threads",
]
path = sys.argv[1] if len(sys.argv) > 1 else "scripts/research/frozen/runs.jsonl"
for line in open(path):
    r = json.loads(line)
    a = r["args"]
    flags = " ".join(f"{k}={a[k]}" for k in KEYS if k in a)
    head = (
        f"| {a.get('tag', '')} | {r.get('split')} | {flags} | {r.get('epochs_done', '-')} "
        f"| {r.get('sec_per_epoch', '-')} |"
    )
    res = " ".join(f"{v}: {m['P@1']:.3f}/{m['P@10']:.3f}/{m['mAP']:.3f};" for v, m in r["results"].items())
    print(head + " " + res + " |")

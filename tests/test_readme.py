"""The README's Python example runs verbatim (against a small index laid out like the demo's)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from synth import make_image

import simsearch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_example_runs(tmp_path, monkeypatch, fast_options, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    data = Path("data/fashion-mnist")
    for split, n in (("train", 8), ("test", 12)):
        for cls, kind in (("trouser", "stripes"), ("sneaker", "disc"), ("bag", "square")):
            (data / split / cls).mkdir(parents=True)
            for i in range(n):
                make_image(kind, rng, size=28).save(data / split / cls / f"{i:05d}.png")
    simsearch.Index.build(data / "train", "indexes/fashion-mnist", options=fast_options)
    blocks = python_blocks()
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "trouser/" in out and "images," in out

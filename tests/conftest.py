"""Shared fixtures: a small synthetic corpus and fast build options."""

from __future__ import annotations

from pathlib import Path

import pytest
from synth import FAST, write_corpus


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests (full fuzz runs, kill tests); select with -m slow")


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "images"
    write_corpus(root)
    return root


@pytest.fixture
def fast_options():
    from simsearch.indexer import BuildOptions

    return BuildOptions(**FAST)

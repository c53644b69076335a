"""Shared fixtures: a small synthetic corpus, fast build options, and one trained index per session.

The session index (``shared_index``, ``shared_corpus``) is built once and is read-only: a test
that writes to its directory or its corpus fails (its teardown compares every file with a digest
taken after the build, and so does the end of the session). A test that changes an index or its
folder takes ``index_copy``: a private copy of both in its own ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
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

    return BuildOptions.of(**FAST)


# ---------------------------------------------------------------- the shared, read-only index


@dataclass(frozen=True)
class SharedBuild:
    path: Path  # the index directory
    corpus: Path  # the folder it indexes: write_corpus(), 3 classes × 20 grey 32×32 PNGs
    report: object  # the build's UpdateReport
    digest: dict  # {path relative to the build's base folder: sha256} of every file, after the build

    def changes(self, since: dict | None = None) -> list[str]:
        """Files added, removed or changed since the build (or since the digest ``since``)."""
        then, now = since if since is not None else self.digest, tree_digest(self.path.parent)
        return sorted(k for k in then.keys() | now.keys() if then.get(k) != now.get(k))


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def shared_build(tmp_path_factory):
    """One index trained with the FAST options on the synthetic corpus, built once per session.
    Read-only: at the end of the session every file of it and of its corpus must be unchanged."""
    import simsearch
    from simsearch.indexer import BuildOptions

    base = tmp_path_factory.mktemp("shared")
    corpus = base / "images"
    write_corpus(corpus)
    index = simsearch.Index.build(corpus, base / "idx", options=BuildOptions.of(**FAST))
    build = SharedBuild(index.path, corpus, index.last_report, tree_digest(base))
    yield build
    changed = build.changes()
    assert not changed, f"the shared read-only index or its corpus was written to during the session: {changed}"


@pytest.fixture
def shared_index(shared_build, request):
    """The shared index, freshly opened (attributes set on it don't leak into other tests). Read it,
    never write it: the test fails at teardown if it changed any file of the index or its corpus."""
    import simsearch

    before = tree_digest(shared_build.path.parent)
    yield simsearch.Index.open(shared_build.path)
    changed = shared_build.changes(since=before)
    if changed:
        pytest.fail(
            f"{request.node.nodeid} wrote to the shared read-only index or its corpus: {changed}", pytrace=False
        )


@pytest.fixture
def shared_corpus(shared_build) -> Path:
    """The folder the shared index was built from (read-only, like the index)."""
    return shared_build.corpus


@pytest.fixture
def index_copy(shared_build, tmp_path):
    """A private, writable copy of the shared index (``tmp_path / "idx"``) and of its corpus
    (``tmp_path / "images"``, file times kept), opened. The copy indexes the copied folder:
    ``index_copy.root`` is ``tmp_path / "images"``."""
    import simsearch

    corpus = shutil.copytree(shared_build.corpus, tmp_path / "images", copy_function=shutil.copy2)
    path = shutil.copytree(shared_build.path, tmp_path / "idx", copy_function=shutil.copy2)
    relocate(path, corpus)
    return simsearch.Index.open(path)


def relocate(index_dir: Path, corpus: Path) -> None:
    """Point a copied index at a copied corpus: the index records its folder's absolute path
    (meta.json ``corpus_root``, the only place it does; meta.json is not in the checksummed files)."""
    for meta_file in Path(index_dir).glob("gen-*/meta.json"):
        meta = json.loads(meta_file.read_text())
        meta["corpus_root"] = str(Path(corpus).resolve())
        meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

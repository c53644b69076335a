"""The indexer's plan and its row bookkeeping, without decoding or training anything:
``plan`` (a pure diff of folder against manifest), ``sort_embedded`` and ``assemble``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synth import make_snapshot

from simsearch.errors import SimsearchError
from simsearch.indexer import Embedded, FileInfo, Found, UpdateReport, assemble, plan, sort_embedded
from simsearch.settings import TrainConfig

D = 16


@pytest.fixture
def old():
    return make_snapshot(n=4, d=D)  # ids 5, 8, 11, 14; dir/img_<id>.png; size 100+id; mtime id·1e9


def found_as_indexed(snap) -> list[Found]:
    return [Found(Path("/x") / e.path, e.path, e.size, e.mtime_ns) for e in snap.entries]


def embedded(old, files: list[Found], shas: list[str], reembed: bool, failed=()) -> Embedded:
    """What an embedder returns for ``files`` (content hashes ``shas``): a file whose content the index
    already holds is ``same`` (unless everything is re-embedded, as ``update`` asks with no old hashes)."""
    old_sha = {} if reembed or old is None else {e.path: e.sha256 for e in old.entries}
    infos = [(f, FileInfo(f.size, f.mtime_ns, h)) for f, h in zip(files, shas)]
    done = [(f, i) for f, i in infos if old_sha.get(f.rel) != i.sha256]
    same = [(f, i) for f, i in infos if old_sha.get(f.rel) == i.sha256]
    return Embedded(
        done, np.zeros((len(done), D), np.float32), np.zeros((len(done), 2), np.float32), same, list(failed)
    )


def run(old, found, new_shas=None, failed=(), **kw):
    """plan → (decode + embed, faked) → sort → assemble; → (plan, rows, report)."""
    p = plan(found, old, **kw)
    todo = p.to_decode
    ok = [f for f in todo if f.rel not in {g.rel for g, _ in failed}]
    shas = [(new_shas or {}).get(f.rel, _sha_of(old, f.rel)) for f in ok]
    changes = sort_embedded(embedded(old, ok, shas, p.reembed, failed), old)
    report = UpdateReport(index="i", root="r")
    vecs = np.full((len(changes.embed), D), 7.0, np.float32)
    return p, changes, assemble(old, p, changes, vecs, report), report


def _sha_of(old, rel):
    return next((e.sha256 for e in old.entries if e.path == rel), "new" + rel)


def test_first_build_adds_everything(old):
    found = found_as_indexed(old)
    p = plan(found, None, retrain=True, views=[[0, 0], [1, 0]])
    assert p.added == found and not (p.changed or p.unchanged or p.removed)
    assert p.retrain and p.reembed and p.views == [[0, 0], [1, 0]]


def test_an_unchanged_folder_plans_nothing(old):
    p, changes, rows, report = run(old, found_as_indexed(old))
    assert p.unchanged == [e.path for e in old.entries] and not (p.added or p.changed or p.removed)
    assert not (p.retrain or p.reembed) and p.views == []
    assert rows.ids.tolist() == old.ids.tolist() and np.array_equal(rows.vectors, old.vectors)
    assert report.unchanged == 4 and (report.added, report.updated) == (0, 0)


def test_a_touched_file_keeps_its_vector_and_gets_the_new_stat(old):
    found = found_as_indexed(old)
    found[1] = Found(found[1].path, found[1].rel, found[1].size, found[1].mtime_ns + 1)
    p, changes, rows, report = run(old, found)
    assert [f.rel for f in p.changed] == [found[1].rel]
    assert list(changes.refreshed) == [found[1].rel] and not changes.embed  # same content: no embedding
    assert rows.ids.tolist() == old.ids.tolist() and np.array_equal(rows.vectors, old.vectors)
    assert rows.entries[1].mtime_ns == found[1].mtime_ns
    assert report.unchanged == 4 and report.updated == 0


def test_a_modified_file_keeps_its_id_with_the_new_vector(old):
    found = found_as_indexed(old)
    found[2] = Found(found[2].path, found[2].rel, found[2].size + 1, found[2].mtime_ns)
    p, changes, rows, report = run(old, found, new_shas={found[2].rel: "f" * 64})
    assert [r for r, _ in changes.embed] == [found[2].rel]
    assert rows.ids.tolist() == old.ids.tolist()  # id 11 is reused for the new content
    assert (rows.vectors[2] == 7.0).all() and np.array_equal(rows.vectors[[0, 1, 3]], old.vectors[[0, 1, 3]])
    assert rows.entries[2].sha256 == "f" * 64 and report.updated == 1 and report.unchanged == 3


def test_a_deleted_id_is_never_reused(old):
    found = found_as_indexed(old)[:-1] + [Found(Path("/x/dir/new.png"), "dir/new.png", 1, 1)]
    p, changes, rows, report = run(old, found)
    assert p.removed == ["dir/img_14.png"] and [f.rel for f in p.added] == ["dir/new.png"]
    assert rows.ids.tolist() == [5, 8, 11, 15]  # the new file gets next_id (15), not the deleted 14
    assert rows.next_id == 16 and report.added == 1


def test_an_indexed_file_that_no_longer_decodes_is_dropped(old):
    found = found_as_indexed(old)
    found[0] = Found(found[0].path, found[0].rel, found[0].size + 5, found[0].mtime_ns)
    p, changes, rows, report = run(old, found, failed=[(found[0], "truncated")])
    assert changes.lost == [found[0].rel]
    assert rows.ids.tolist() == [8, 11, 14]


@pytest.mark.parametrize(
    ("kw", "reembed", "views"),
    [
        (dict(retrain=True), True, [[0, 0], [1, 0]]),  # a new model embeds with the views asked for
        (dict(model_sha="1" * 64), True, [[0, 0], [1, 0]]),  # another user model
        (dict(model_sha="0" * 64), False, []),  # the index's own model
        (dict(tta=None), False, []),  # None keeps the index's setting (none here)
        (dict(tta=False), False, []),  # asked for none, has none
        (dict(tta=True), True, [[0, 0], [1, 0]]),  # asked for views the index lacks
    ],
)
def test_the_flags(old, kw, reembed, views):
    p = plan(found_as_indexed(old), old, views=[[0, 0], [1, 0]] if kw.get("tta", True) else [], **kw)
    assert p.reembed == reembed and p.views == views and p.retrain == kw.get("retrain", False)
    if reembed:  # everything is decoded and embedded again, nothing kept
        assert len(p.changed) == 4 and not p.unchanged


def test_adding_files_keeps_the_rest_and_refuses_a_re_embed(old):
    new = [Found(Path("/x/dir/new.png"), "dir/new.png", 1, 1)]
    p = plan(new, old, only=True)
    assert p.added == new and p.removed == [] and len(p.unchanged) == 4
    with pytest.raises(SimsearchError, match="whole folder"):
        plan(new, old, only=True, retrain=True)


# ---------------------------------------------------------------- the build budget


def _pixels(n: int, side: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 1, side, side), dtype=np.uint8)


def test_the_build_budget_shortens_training_by_the_estimated_rest():
    from simsearch.indexer import BuildOptions, training_budget
    from simsearch.preprocess import Preprocess

    pre = Preprocess(size=16, channels=1)
    said: list[str] = []
    opts = BuildOptions(train=TrainConfig(time_budget=90.0), build_budget=100.0, device="cpu")
    # 200,000 images to embed cannot fit in 100 s: training keeps half its budget, never less
    assert training_budget(opts, pre, _pixels(64), 200_000, 0.0, 5.0, [], said.append) == 45.0
    assert "training budget 45 s of 90" in said[-1]
    # a handful of images: the whole training budget, and no probe needed
    assert training_budget(opts, pre, _pixels(64), 10, 0.0, 5.0, [], said.append) is None
    # in between: what is left of 100 s after what was spent, the embedding estimate and the fit
    b = training_budget(opts, pre, _pixels(64), 2_000, 0.001, 5.0, [], said.append)
    assert b is not None and 45.0 <= b < 100 - 5.0 - 2_000 * (0.001 + 0.55e-3)


@pytest.mark.parametrize(
    "kw,expected",
    [({}, None), ({"time_budget": 300.0}, 0.0), ({"time_budget": 300.0, "build_budget": 500.0}, 500.0)],
)
def test_a_given_training_budget_turns_the_build_budget_off(kw, expected):
    from simsearch.indexer import BuildOptions, training_budget
    from simsearch.preprocess import Preprocess

    opts = BuildOptions.of(**kw)
    assert opts.build_budget == expected
    if expected == 0.0:
        pre = Preprocess(size=16, channels=1)
        assert training_budget(opts, pre, _pixels(8), 10**7, 0.0, 0.0, [], print) is None


def test_a_negative_build_budget_is_refused():
    from simsearch.indexer import BuildOptions

    with pytest.raises(SimsearchError, match="build_budget"):
        BuildOptions.of(build_budget=-1.0)

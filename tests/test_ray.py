"""Embedding on Ray (``simsearch.distributed``): the same vectors as the single-process path, finished
parts reused, a killed worker retried, and a real two-node local cluster.

Every test that runs Ray shares one local Ray instance per session (``ray.init(num_cpus=2)``). Skipped
when Ray (the ``simsearch[ray]`` extra) is not installed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from synth import FAST, write_corpus

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")

from simsearch import distributed, store  # noqa: E402
from simsearch.discover import discover  # noqa: E402
from simsearch.errors import SimsearchError  # noqa: E402
from simsearch.indexer import BuildOptions, scan  # noqa: E402
from simsearch.preprocess import Preprocess  # noqa: E402
from simsearch.settings import corruption_config  # noqa: E402

STORE_BYTES = 80 * 1024**2  # a small object store: the tests move a few MB


def _start_local():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=STORE_BYTES, logging_level="WARNING")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs, no dashboard, a small object store) for the session."""
    if not ray.is_initialized():
        _start_local()
    yield
    ray.shutdown()


class Reference:
    """A folder of 300 generated images indexed single-process, and what Ray needs to embed it again."""

    def __init__(self, base: Path):
        import simsearch

        self.corpus = base / "images"
        write_corpus(self.corpus, per_class=100)
        self.index = base / "idx"
        # a few training steps: the comparison needs a fixed model, not a good one
        options = BuildOptions.of(train={"min_steps": 20}, **FAST)
        simsearch.Index.build(self.corpus, self.index, options=options)
        self.snap = store.read(self.index, load_faiss=False)
        self.model = store.model_path(self.index, self.snap.meta.model.sha256)
        self.pre = Preprocess.from_dict(self.snap.meta.preprocess)
        self.views = self.snap.meta.embedding.views

    def todo(self, root: Path | None = None):
        root = root or self.corpus
        files, _ = discover(root)
        return scan(files, root, root.resolve())


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Reference:
    return Reference(tmp_path_factory.mktemp("ray-ref"))


def _run(ref: Reference, work: Path, todo=None, old_sha=None, part_files=64):
    todo = ref.todo() if todo is None else todo
    corruption = corruption_config(ref.snap.meta.model.train)  # as the indexer passes it
    return distributed.embed_parts(
        todo, ref.pre, ref.model, ref.views, old_sha or {}, BuildOptions(), None, work=work, part_files=part_files,
        corruption=corruption,
    )  # fmt: skip


def _assert_matches_index(ref: Reference, emb) -> None:
    """Ray's rows are the single-process index's: same paths, stats and vectors (1e-5), the
    reconstruction statistics' three columns (the denoising error too) included."""
    rows = ref.snap.row_of_path()
    assert [f.rel for f, _ in emb.done] == sorted(rows, key=os.fsencode)  # every image, in discovery order
    idx = np.array([rows[f.rel] for f, _ in emb.done])
    for (_, info), r in zip(emb.done, idx):
        e = ref.snap.entries[r]
        assert (info.size, info.mtime_ns, info.sha256) == (e.size, e.mtime_ns, e.sha256)
    assert emb.codes.shape == (len(idx), ref.snap.dim) and emb.codes.dtype == np.float32
    np.testing.assert_allclose(emb.codes, np.asarray(ref.snap.vectors)[idx], atol=1e-5, rtol=0)
    assert ref.snap.recon is not None and emb.recon.shape == (len(idx), 3) and np.isfinite(emb.recon).all()
    np.testing.assert_allclose(emb.recon, ref.snap.recon[idx], atol=1e-5, rtol=0)
    assert not emb.same and not emb.failed


# ---------------------------------------------------------------- no cluster needed


def test_parts_cut_at_content_defined_boundaries():
    rels = [f"dir/img_{i:05d}.png" for i in range(5000)]
    parts = distributed.split_parts(rels, 100)
    assert [i for r in parts for i in r] == list(range(5000))  # consecutive, complete
    assert 20 < len(parts) < 100 and max(len(r) for r in parts) <= 400
    # a new file changes only the part it falls in: every other part keeps its files
    grown = sorted(rels + ["dir/img_02500x.png"])
    before = {tuple(rels[i] for i in r) for r in parts}
    after = {tuple(grown[i] for i in r) for r in distributed.split_parts(grown, 100)}
    assert len(after - before) == 1 and len(before - after) == 1


def test_parts_dir_is_the_index_work_dir(tmp_path):
    assert distributed.parts_dir(tmp_path / "idx" / "models" / "ab.pt") == tmp_path / "idx" / "work" / "ray-parts"


def test_the_pool_uses_gpus_where_there_are_some_and_leaves_cpus_for_decoding():
    gpu = distributed.plan_pool(cpus=16, gpus=2)
    assert (gpu.device, gpu.size, gpu.actor["num_gpus"]) == ("cuda", 2, 1)
    assert distributed.plan_pool(cpus=16, gpus=2, device="cpu").device == "cpu"
    cpu = distributed.plan_pool(cpus=8, gpus=0)
    assert (cpu.device, cpu.size, cpu.actor, cpu.decode_cpus) == ("cpu", 7, {"num_cpus": 1.0}, 1.0)
    one = distributed.plan_pool(cpus=1, gpus=0)  # a 1-CPU cluster: an actor and a decode task fit side by side
    assert one.size == 1 and one.actor["num_cpus"] + one.decode_cpus <= 1
    two = distributed.plan_pool(cpus=2, gpus=0, workers=2)
    assert two.size == 2 and 2 * two.actor["num_cpus"] + two.decode_cpus <= 2
    with pytest.raises(SimsearchError, match="no GPUs"):
        distributed.plan_pool(cpus=4, gpus=0, device="cuda")


# ---------------------------------------------------------------- on the session's local Ray


@pytest.mark.slow
def test_ray_embeds_like_the_single_process_index_and_a_rerun_embeds_nothing(ray_local, ref, tmp_path):
    emb, stats = _run(ref, tmp_path / "parts")
    _assert_matches_index(ref, emb)
    assert stats.parts > 2 and stats.computed == stats.parts and stats.embedded == len(emb.done)
    assert len(list((tmp_path / "parts").glob("part-*.parquet"))) == stats.parts

    again, stats2 = _run(ref, tmp_path / "parts")  # finished parts are read back: nothing is embedded
    assert (stats2.reused, stats2.computed, stats2.embedded) == (stats.parts, 0, 0)
    _assert_matches_index(ref, again)

    # an interrupted run left some parts unfinished: only those are embedded again
    parts = sorted((tmp_path / "parts").glob("part-*.parquet"))
    parts[0].unlink()
    parts[-1].write_bytes(b"torn")  # a damaged part is recomputed, never trusted
    resumed, stats3 = _run(ref, tmp_path / "parts")
    assert (stats3.reused, stats3.computed) == (stats.parts - 2, 2) and 0 < stats3.embedded < len(emb.done)
    _assert_matches_index(ref, resumed)


@pytest.mark.slow
def test_unchanged_and_unreadable_files(ray_local, ref, tmp_path):
    """A file whose content hash is the old one is reported unchanged, not embedded; an unreadable one
    is reported with the same one-line reason as the single-process decoder gives."""
    import shutil

    from simsearch.pool import decode_files

    corpus = shutil.copytree(ref.corpus, tmp_path / "images", copy_function=shutil.copy2)
    (corpus / "disc" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    odd = os.fsdecode(b"disc/caf\xe9 copy.png")  # not UTF-8: Arrow strings could not hold it
    shutil.copy2(corpus / "disc" / "disc_000.png", corpus / odd)
    todo = ref.todo(corpus)
    old_sha = {e.path: e.sha256 for e in ref.snap.entries if e.path.startswith("square/")}
    emb, stats = _run(ref, tmp_path / "parts", todo, old_sha)
    assert sorted(f.rel for f, _ in emb.same) == sorted(old_sha)
    assert all(info.sha256 == old_sha[f.rel] for f, info in emb.same)
    (_, (_, _, local_reason, _)) = (None, next(iter(decode_files([corpus / "disc" / "broken.png"], ref.pre, 1))))
    assert [(f.rel, r) for f, r in emb.failed] == [("disc/broken.png", local_reason)]
    assert stats.embedded == len(emb.done) == len(todo) - len(old_sha) - 1
    rows = ref.snap.row_of_path()
    rows[odd] = rows["disc/disc_000.png"]  # a copy: the same vector
    np.testing.assert_allclose(emb.codes, np.asarray(ref.snap.vectors)[[rows[f.rel] for f, _ in emb.done]], atol=1e-5)
    assert odd in {f.rel for f, _ in emb.done}
    again, stats = _run(ref, tmp_path / "parts", todo, old_sha)  # and its part reads back
    assert stats.computed == 0 and [f.rel for f, _ in again.done] == [f.rel for f, _ in emb.done]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["embed-batch", "ray-decode"])
def test_a_killed_worker_is_restarted_and_the_run_completes(ray_local, ref, tmp_path, monkeypatch, where):
    """The first embedding actor to reach its first batch (or the first decode task) is SIGKILLed (the
    crash hook, once, via a marker file); Ray restarts it and retries the batch; the result is unchanged."""
    marker = tmp_path / "crashed"
    monkeypatch.setenv("SIMSEARCH_CRASH_AT", where)
    monkeypatch.setenv("SIMSEARCH_CRASH_ONCE", str(marker))
    emb, stats = _run(ref, tmp_path / "parts")
    assert marker.exists()  # a worker really died
    _assert_matches_index(ref, emb)
    assert stats.computed == stats.parts


@pytest.mark.slow
def test_files_whose_decode_task_always_dies_are_finished_here(ray_local, ref, tmp_path, monkeypatch, caplog):
    """A batch whose decode task dies every time (as one with a file that kills the decoder would) is
    retried a few times, not forever; then its files are decoded and embedded by the driver, in the
    crash-isolated worker processes of the single-process path, and the run completes with the same
    vectors. (Here every decode task dies, so every file is finished by the driver.)"""
    import logging

    monkeypatch.setenv("SIMSEARCH_CRASH_AT", "ray-decode")
    with caplog.at_level(logging.WARNING, logger="simsearch.distributed"):
        emb, stats = _run(ref, tmp_path / "parts")
    _assert_matches_index(ref, emb)
    assert stats.local == len(ref.snap.entries) and stats.embedded == 0 and stats.computed == stats.parts
    assert any("failed on the cluster past their retries" in r.getMessage() for r in caplog.records)
    monkeypatch.delenv("SIMSEARCH_CRASH_AT")
    again, stats = _run(ref, tmp_path / "parts")  # the parts were written: a re-run reuses them
    assert stats.reused == stats.parts and stats.local == 0


@pytest.mark.slow
def test_a_two_node_local_cluster(ref, tmp_path):
    """A real two-node cluster (``ray.cluster_utils.Cluster``: a head and one added node, 1 CPU each):
    work runs on both nodes and the vectors match the single-process index."""
    from ray.cluster_utils import Cluster

    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()  # the session's local instance; restarted below
    node = {"num_cpus": 1, "object_store_memory": STORE_BYTES, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    try:
        cluster.add_node(**{k: v for k, v in node.items() if k != "include_dashboard"})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        emb, stats = _run(ref, tmp_path / "parts", part_files=32)
        assert len(stats.nodes) == 2, stats.nodes  # decode tasks and the embedding actor on both nodes
        _assert_matches_index(ref, emb)
    finally:
        ray.shutdown()
        cluster.shutdown()
        if was_up:
            _start_local()


# ---------------------------------------------------------------- `simsearch index --ray`, end to end


def _cli(*args, ok=True):
    from click.testing import CliRunner

    from simsearch.cli import cli

    res = CliRunner().invoke(cli, [str(a) for a in args], obj={})
    if ok and res.exit_code != 0:
        raise AssertionError(f"exit {res.exit_code}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}\n{res.exception!r}")
    return res


def _assert_same_index(a: Path, b: Path) -> None:
    """Two index directories hold the same images under the same ids, with the same vectors (1e-5)."""
    sa, sb = store.read(a, load_faiss=False), store.read(b, load_faiss=False)
    assert [(e.id, e.path, e.size, e.mtime_ns, e.sha256) for e in sa.entries] == [
        (e.id, e.path, e.size, e.mtime_ns, e.sha256) for e in sb.entries
    ]
    np.testing.assert_array_equal(sa.ids, sb.ids)
    np.testing.assert_allclose(np.asarray(sa.vectors), np.asarray(sb.vectors), atol=1e-5, rtol=0)
    assert sa.recon is not None and sb.recon is not None and np.isfinite(sa.recon).all()  # denoising error too
    np.testing.assert_allclose(sa.recon, sb.recon, atol=1e-5, rtol=0)
    assert sa.meta.model.sha256 == sb.meta.model.sha256 and sa.meta.embedding.views == sb.meta.embedding.views


@pytest.mark.slow
def test_simsearch_index_ray_builds_the_single_process_index(ray_local, ref, tmp_path):
    """`simsearch index --ray --model M` and `simsearch index --model M` on the same folder: the same index,
    which `simsearch query` opens; a re-run embeds nothing; a changed file is embedded again, alone."""
    import shutil

    corpus = shutil.copytree(ref.corpus, tmp_path / "images", copy_function=shutil.copy2)
    _cli("index", corpus, "--index", tmp_path / "local", "--model", ref.model)
    _cli("index", corpus, "--index", tmp_path / "ray", "--model", ref.model, "--ray")
    _assert_same_index(tmp_path / "local", tmp_path / "ray")
    assert not (tmp_path / "ray" / "work" / "ray-parts").exists()  # committed: the parts are no longer needed
    res = _cli("query", corpus / "disc" / "disc_000.png", "--index", tmp_path / "ray", "-k", "3", "--json")
    assert "disc/disc_000.png" in res.stdout

    current = (tmp_path / "ray" / "CURRENT").read_bytes()
    again = _cli("index", corpus, "--index", tmp_path / "ray", "--ray")
    assert "unchanged 300" in again.stderr and (tmp_path / "ray" / "CURRENT").read_bytes() == current

    from PIL import Image

    Image.open(corpus / "square" / "square_007.png").rotate(90).save(corpus / "square" / "square_007.png")
    for name in ("local", "ray"):
        extra = ["--ray"] if name == "ray" else []
        res = _cli("index", corpus, "--index", tmp_path / name, *extra, "-v")
        assert "updated 1" in res.stderr and "unchanged 299" in res.stderr, res.stderr
    # -v shows the library's log lines: what the Ray run did
    assert "ray: 1 part(s): 0 finished by an earlier run, 1 computed on 1 node(s)" in res.stderr, res.stderr
    _assert_same_index(tmp_path / "local", tmp_path / "ray")


@pytest.mark.slow
def test_an_interrupted_ray_index_resumes_from_its_finished_parts(ray_local, ref, tmp_path, caplog, monkeypatch):
    """The driver is SIGKILLed after its third finished part; the re-run reads those parts back, embeds
    only the rest, and the index equals the single-process one."""
    import logging
    import signal
    import subprocess
    import sys

    address = ray.get_runtime_context().gcs_address  # the session's cluster outlives the killed driver
    cmd = [sys.executable, "-m", "simsearch", "index", str(ref.corpus), "--index", str(tmp_path / "ray")]
    cmd += ["--model", str(ref.model), "--ray-address", address]
    env = {**os.environ, "SIMSEARCH_CRASH_AT": "ray-part:3", "SIMSEARCH_RAY_PART_FILES": "32"}
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not store.exists(tmp_path / "ray")  # nothing committed
    finished = list((tmp_path / "ray" / "work" / "ray-parts").glob("part-*.parquet"))
    assert len(finished) >= 3

    monkeypatch.setenv("SIMSEARCH_RAY_PART_FILES", "32")
    with caplog.at_level(logging.INFO, logger="simsearch.distributed"):
        _cli("index", ref.corpus, "--index", tmp_path / "ray", "--model", ref.model, "--ray")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("ray: "))
    reused = int(line.split(": ", 2)[2].split()[0])
    assert reused >= 3, line
    _cli("index", ref.corpus, "--index", tmp_path / "local", "--model", ref.model)
    _assert_same_index(tmp_path / "local", tmp_path / "ray")


def test_index_ray_without_ray_installed_is_a_one_line_error(shared_index, shared_corpus, tmp_path):
    """Where Ray is missing, `simsearch index --ray` names the extra to install and exits 1."""
    import subprocess
    import sys

    model = store.model_path(shared_index.path, store.read(shared_index.path, load_faiss=False).meta.model.sha256)

    code = (
        "import sys; sys.modules['ray'] = sys.modules['pyarrow'] = None\n"  # `import ray` fails, as without the extra
        "from simsearch.cli import main\n"
        f"sys.argv = ['simsearch', 'index', {str(shared_corpus)!r}, '--index', {str(tmp_path / 'idx')!r},"
        f" '--model', {str(model)!r}, '--ray']\n"
        "main()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "pip install 'simsearch[ray]'" in res.stderr and "Traceback" not in res.stderr

"""The elastic pool on a fake multi-node cluster: nodes join and die mid-run.

``ray.cluster_utils.Cluster`` runs a head with 0 CPUs and nodes of 1 CPU + 1 logical GPU
each, all on this machine, like an autoscaling GPU cluster whose workers come and go. The
model is the stand-in with a sleep per call (``SlowLoader``): it takes time but no CPU, so
these tests measure the pool, not the two cores. Every output is compared bit for bit with
an in-process run of the same plan. The checks read the manifest's
``executor.actors[*].node_id`` and ``executor.actors[*].units``, as users do.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import _standin
import numpy as np
import pytest
import ray
import ray.cloudpickle
from _standin import SlowLoader, TinyLoader, smooth_image, write_zarr_scene
from _threads import run_in_thread

from pipeline.config import load_config
from pipeline.errors import PipelineError, PoolLostError
from pipeline.execute import LocalExecutor, RayExecutor
from pipeline.io.omezarr import SceneWriter
from pipeline.run import MemoryLedger, run_pipeline
from pipeline.run.report import read_manifest
from pipeline.run.resume import run_resumable

ray.cloudpickle.register_pickle_by_value(_standin)  # workers cannot import test modules

pytestmark = pytest.mark.ray

SCENES = ("a", "b")
TIMEOUT_S = 180  # per run: a hang fails the test, not the session
NODE = {"num_cpus": 1, "num_gpus": 1}  # one GPU actor per node (1 GPU + 1 CPU each)


def _cfg(**kw: Any):
    base = dict(chunk=64, halo=4, batch_size=2, checkpoint="unused-standin", overwrite=True,
                use_gpu=True, max_in_flight_per_actor=2, actor_start_timeout_s=60)
    return load_config(overrides={**base, **kw})


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    write_zarr_scene(root, "a", smooth_image(0, 3, 320, 448), chunks=64)  # 5 x 7 units
    write_zarr_scene(root, "b", smooth_image(1, 3, 200, 330, "uint16"), chunks=64)  # 4 x 6
    return root


UNITS = 5 * 7 + 4 * 6


def _levels(out: Path | str, scene: str) -> list[np.ndarray]:
    w = SceneWriter.open(str(out), scene)
    assert w.complete, f"{scene} in {out} is not complete"
    return [w.read_level(k, layer) for layer in ("segmentation", "confidence")
            for k in range(w.levels)]


@pytest.fixture(scope="module")
def reference(archive, tmp_path_factory) -> dict[str, list[np.ndarray]]:
    """Every level of both scenes from a clean in-process run of the same plan."""
    out = tmp_path_factory.mktemp("reference")
    res = run_pipeline(str(archive), str(out), _cfg(), executor=LocalExecutor(TinyLoader()))
    assert res.ok, [s.error for s in res.manifest.failed]
    return {s: _levels(out, s) for s in SCENES}


def _assert_identical(out: Path | str, reference: dict[str, list[np.ndarray]]) -> None:
    for scene, want in reference.items():
        for k, (a, b) in enumerate(zip(_levels(out, scene), want, strict=True)):
            np.testing.assert_array_equal(a, b, err_msg=f"{scene} array {k}")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # Ray's token auth stays on here (Ray 2.60's default): the fake cluster's processes and
    # this driver share it. Turning it off with RAY_AUTH_MODE=disabled is not possible in a
    # process that has already run a Ray with auth on, as the rest of the suite does: actor
    # creation is then cancelled ("Failed to register actor", measured on Ray 2.60.0).
    assert not ray.is_initialized(), "a Ray instance is already running in this process"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture
def nodes(cluster):
    """Add nodes with ``nodes.add()``; whatever is left is removed after the test."""

    class Nodes:
        def __init__(self) -> None:
            self.added: list[Any] = []

        def add(self, n: int = 1) -> list[Any]:
            new = [cluster.add_node(**NODE) for _ in range(n)]
            cluster.wait_for_nodes()
            self.added += new
            return new

        def remove(self, node: Any) -> None:
            cluster.remove_node(node)
            self.added.remove(node)

    n = Nodes()
    yield n
    for node in list(n.added):
        n.remove(node)


class _CountingLedger(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def mark_done(self, scene_id, unit_id, token, info=None) -> None:
        super().mark_done(scene_id, unit_id, token, info)
        self.count += 1


def _wait(cond, what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def _finish(thread: threading.Thread, box: dict[str, Any]) -> Any:
    thread.join(TIMEOUT_S)
    assert not thread.is_alive(), "the run hangs"
    if "error" in box:
        raise box["error"]
    return box["result"]


def _actor_demand() -> int:
    """Actors the cluster is asked for but cannot place: what an autoscaler scales up for."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(ray.get_runtime_context().gcs_address)
    return sum(b.count for d in status.resource_demands.ray_task_actor_demand
               for b in d.bundles_by_count)


def _no_demand() -> None:
    # Ray reports resource demand from the raylets' periodic load reports: allow a few.
    _wait(lambda: _actor_demand() == 0, "no actor demand left", timeout=15)


# ------------------------------------------------------------------------------ growth


def test_nodes_joining_mid_run_get_actors_and_units_and_no_demand_is_left(
    cluster, nodes, archive, reference, tmp_path
):
    nodes.add(1)
    cfg = _cfg(max_actors=4)  # 1 node now: 1 actor runs, 3 wait as demand for more nodes
    ledger = _CountingLedger()
    # 0.4 s per batch: ~12 s on one actor, time for two nodes to come up and start theirs.
    with RayExecutor.from_config(cfg, SlowLoader(0.4)) as ex:
        assert len(ex.workers) == 1
        _wait(lambda: _actor_demand() == 3, "3 pending actors as demand")
        thread, box = run_in_thread(lambda: run_pipeline(
            str(archive), str(tmp_path / "out"), cfg, executor=ex, ledger=ledger, run_id="grow"))
        _wait(lambda: ledger.count >= 4 or not thread.is_alive(), "4 units on one node")
        assert thread.is_alive(), f"run ended before nodes joined: {box}"
        nodes.add(2)  # capacity appears mid-run
        res = _finish(thread, box)
        # The queue drained: the pending 4th actor was withdrawn while the pool stays open.
        assert ex.pool_status().pending == 0 and len(ex.workers) == 3
        _no_demand()
    assert res.ok, [s.error for s in res.manifest.failed]
    _assert_identical(tmp_path / "out", reference)
    m = read_manifest(res.manifest_url)
    actors = m["executor"]["actors"]
    assert len({a["node_id"] for a in actors}) == 3, actors  # every node got an actor
    assert all(a["units"] > 0 for a in actors), [a["units"] for a in actors]
    assert sum(a["units"] for a in actors) == UNITS
    assert m["executor"]["joined"] == 2 and m["executor"]["lost"] == 0
    assert sum(a["joined"] for a in actors) == 2
    assert all(a["gpu_ids"] == ["0"] for a in actors)  # one GPU per node, pinned
    assert all(0 < a["busy_fraction"] <= 1 for a in actors)
    _no_demand()  # closed: nothing left behind


# ------------------------------------------------------------------------------ loss


def test_a_node_removed_mid_run_costs_only_its_in_flight_work_and_a_new_node_takes_over(
    cluster, nodes, archive, reference, tmp_path
):
    nodes.add(1)
    (doomed,) = nodes.add(1)
    cfg = _cfg()
    ledger = _CountingLedger()
    with RayExecutor.from_config(cfg, SlowLoader(0.3)) as ex:
        assert len(ex.workers) == 2 and doomed.node_id in {w.node for w in ex.workers}
        thread, box = run_in_thread(lambda: run_pipeline(
            str(archive), str(tmp_path / "out"), cfg, executor=ex, ledger=ledger, run_id="loss"))
        _wait(lambda: ledger.count >= 8 or not thread.is_alive(), "8 units on two nodes")
        assert thread.is_alive(), f"run ended before the node died: {box}"
        nodes.remove(doomed)  # spot preemption: the node and its actor vanish
        _wait(lambda: ex.pool_status().lost == 1 or not thread.is_alive(), "the loss seen")
        (fresh,) = nodes.add(1)  # capacity returns: a replacement actor joins the run
        res = _finish(thread, box)
        _no_demand()
    assert res.ok, [s.error for s in res.manifest.failed]
    _assert_identical(tmp_path / "out", reference)
    ex_section = read_manifest(res.manifest_url)["executor"]
    lost = [a for a in ex_section["actors"] if a["state"] == "lost"]
    assert len(lost) == 1 and lost[0]["node_id"] == doomed.node_id, ex_section["actors"]
    assert lost[0]["stopped"] and "died" in lost[0]["reason"]
    (joined,) = [a for a in ex_section["actors"] if a["joined"]]
    assert joined["node_id"] == fresh.node_id and joined["units"] > 0
    # Only what was in flight on the lost actor runs again: at most 2 batches of 2 units.
    assert 1 <= ex_section["units_redone"] <= cfg.max_in_flight_per_actor * cfg.batch_size
    assert sum(a["units"] for a in ex_section["actors"]) == UNITS


def test_a_sigkilled_actor_whose_replacement_never_starts_does_not_stall_the_run(
    cluster, nodes, archive, reference, tmp_path
):
    nodes.add(2)
    gate = tmp_path / "gate"  # while it exists, a new actor's model load never finishes
    cfg = _cfg()
    ledger = _CountingLedger()
    with RayExecutor.from_config(cfg, SlowLoader(0.15, gate=str(gate))) as ex:
        victim = ex.workers[0]
        thread, box = run_in_thread(lambda: run_pipeline(
            str(archive), str(tmp_path / "out"), cfg, executor=ex, ledger=ledger, run_id="kill"))
        _wait(lambda: ledger.count >= 6 or not thread.is_alive(), "6 units")
        assert thread.is_alive(), f"run ended before the kill: {box}"
        gate.write_text("closed")
        os.kill(victim.pid, signal.SIGKILL)  # no cleanup; Ray will not restart it
        try:
            res = _finish(thread, box)
            _no_demand()
        finally:
            gate.unlink()
    assert res.ok, [s.error for s in res.manifest.failed]
    _assert_identical(tmp_path / "out", reference)
    actors = res.manifest.executor["actors"]
    states = sorted(a["state"] for a in actors)
    assert states == ["live", "lost"], actors  # the replacement never became an actor
    lost = next(a for a in actors if a["state"] == "lost")
    assert lost["pid"] == victim.pid and "process died" in lost["reason"]
    assert sum(a["units"] for a in actors) == UNITS


def test_with_no_actor_left_the_run_stops_resumable_and_a_rerun_completes(
    cluster, nodes, archive, reference, tmp_path, monkeypatch
):
    from pipeline.state.ledger import Ledger

    (only,) = nodes.add(1)
    out = tmp_path / "out"
    cfg = _cfg(no_actor_timeout_s=2)
    marked = []
    mark_done = Ledger.mark_done
    monkeypatch.setattr(Ledger, "mark_done", lambda self, *a, **kw: (
        marked.append(a[1]), mark_done(self, *a, **kw)))
    with RayExecutor.from_config(cfg, SlowLoader(0.15)) as ex:
        thread, box = run_in_thread(lambda: run_resumable(
            str(archive), str(out), cfg, executor=ex, run_id="stranded"))
        _wait(lambda: len(marked) >= 4 or not thread.is_alive(), "4 units")
        assert thread.is_alive(), f"run ended before the node died: {box}"
        nodes.remove(only)  # the last node goes, and no other comes within 2 s
        with pytest.raises(PoolLostError, match="rerunning the same command resumes"):
            _finish(thread, box)
    m = read_manifest(str(out / "_hgn" / "manifest-stranded.json"))
    assert "no model actor has been alive for 2 s" in m["error"]
    assert {s["status"] for s in m["scenes"]} == {"failed"}
    nodes.add(1)  # capacity is back: the same command resumes
    with RayExecutor.from_config(cfg, SlowLoader(0.0)) as ex:
        again = run_resumable(str(archive), str(out), cfg, executor=ex, run_id="again")
    assert again.run is not None and again.run.ok, [s.error for s in again.run.manifest.failed]
    assert again.units_reused >= 4
    _assert_identical(out, reference)


# ------------------------------------------------------------------------------ start


def test_use_gpu_true_without_gpu_capacity_fails_after_the_timeout_naming_it(cluster):
    assert not any(n["Resources"].get("GPU") for n in ray.nodes() if n["Alive"])
    ex = RayExecutor.from_config(_cfg(actor_start_timeout_s=2), TinyLoader())
    t = time.monotonic()
    with pytest.raises(PipelineError) as err:
        ex.start()
    assert time.monotonic() - t >= 2  # it waited for capacity (an autoscaler) first
    text = str(err.value)
    for words in ("no model actor started within 2 s", "1 GPU + 1 CPU", "use_gpu: true",
                  "GPU 0 in total", "actor_start_timeout_s", "use_gpu: auto"):
        assert words in text, text
    _no_demand()

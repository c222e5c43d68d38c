"""Executors: pool sizing, windowing exactness, Ray pool == in-process, GPU pinning, faults."""

from __future__ import annotations

import json
import os
from pathlib import Path

import _standin
import numpy as np
import pytest
import ray
import ray.cloudpickle
import torch
from _standin import (
    RF,
    CrashOnceLoader,
    KillerLoader,
    TinyLoader,
    TinySegmenter,
    smooth_image,
    write_zarr_scene,
)

from pipeline.catalog import catalog
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.execute import (
    Batch,
    LocalExecutor,
    RayExecutor,
    SceneJob,
    pool_spec,
)
from pipeline.io.omezarr import SceneWriter
from pipeline.plan import plan_scene
from pipeline.run import run_pipeline

# Workers cannot import test modules: ship the stand-in model by value.
ray.cloudpickle.register_pickle_by_value(_standin)


# ---------------------------------------------------------------------------- pure sizing


def test_pool_spec_cpu_gpu_and_reserve():
    def fit(nodes, **kw):
        return pool_spec(nodes, **kw).fit(nodes if isinstance(nodes, list) else [nodes])

    assert fit({"CPU": 8}, threads=2) == 4
    cpu = pool_spec({"CPU": 8}, threads=2, reserve_cpus=2)
    assert (cpu.fit([{"CPU": 8}]), cpu.num_cpus, cpu.num_gpus) == (3, 2.0, 0.0)
    gpu = pool_spec({"CPU": 16, "GPU": 4}, cpus_per_gpu_actor=2)
    assert (gpu.fit([{"CPU": 16, "GPU": 4}]), gpu.num_cpus, gpu.num_gpus) == (4, 2.0, 1.0)
    assert pool_spec({"CPU": 16, "GPU": 4}, use_gpu=False).num_gpus == 0
    assert pool_spec({"CPU": 1}, threads=4).target([{"CPU": 1}]) == 1  # never an empty pool
    assert fit({"CPU": 2}, reserve_cpus=1, read_path="dask") == 1
    # Packed per node: a 0-CPU head and 1-CPU GPU nodes hold one GPU actor each.
    cluster = [{"CPU": 0}, {"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}, {"CPU": 4}]
    assert fit(cluster) == 2
    assert fit(cluster, cpus_per_gpu_actor=2) == 0  # a GPU node's 1 CPU is too few
    # max_actors: the target, whatever fits now (the rest is demand for an autoscaler).
    spec = pool_spec(cluster, max_actors=8)
    assert (spec.fit(cluster), spec.target(cluster)) == (2, 8)
    assert pool_spec(cluster).target(cluster) == 2  # default: what the nodes hold


def test_pool_spec_waits_for_gpus_but_refuses_what_cannot_run():
    # use_gpu: true on a cluster without GPUs yet is GPU actors all the same (the pool waits
    # for GPU nodes, see test_elastic); "auto" falls back to CPU actors.
    assert pool_spec({"CPU": 4}, use_gpu=True).num_gpus == 1
    assert pool_spec({"CPU": 4}, use_gpu="auto").num_gpus == 0
    # Actors holding every CPU would starve dask-on-ray's read tasks: a hang, refused up front.
    with pytest.raises(ConfigError, match="reserve_cpus"):
        pool_spec({"CPU": 2}, read_path="dask")


# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    write_zarr_scene(root, "odd", smooth_image(0, 3, 301, 517))
    write_zarr_scene(root, "deep/thin", smooth_image(1, 3, 40, 700, "uint16"))
    return root


def _levels(out: Path, scene_id: str) -> list[np.ndarray]:
    w = SceneWriter.open(str(out), scene_id)
    arrays = [w.read_level(k) for k in range(w.levels)]
    arrays += [w.read_level(k, "confidence") for k in range(w.levels)]
    return arrays


def _cfg(**kw):
    base = dict(chunk=128, halo=16, batch_size=2, checkpoint="unused-standin", overwrite=True,
                actor_start_timeout_s=60)
    return load_config(overrides={**base, **kw})


# ------------------------------------------------------------------ in-process reference


def test_local_executor_reproduces_whole_scene_inference(archive, tmp_path):
    """halo >= receptive field: tiled output == one forward over the whole scene (interior)."""
    cfg = _cfg(halo=RF + 1)
    res = run_pipeline(str(archive), str(tmp_path), cfg, executor=LocalExecutor(TinyLoader()))
    assert res.ok, [s.error for s in res.manifest.failed]
    info = catalog(str(archive)).get("odd")
    from pipeline.io.readers import open_scene

    img = open_scene(info).read(0, info.height, 0, info.width)
    whole = TinySegmenter().predict(img, return_confidence=True)
    w = SceneWriter.open(str(tmp_path), "odd")
    got, conf = w.read_level(0), w.read_level(0, "confidence")
    m = RF  # the scene edges differ: reflect-padded input vs the net's zero padding
    np.testing.assert_array_equal(got[m:-m, m:-m], whole.labels[m:-m, m:-m])
    np.testing.assert_array_equal(conf[m:-m, m:-m], whole.confidence[m:-m, m:-m])
    scene = next(s for s in res.manifest.scenes if s.scene_id == "odd")
    assert scene.units_done == scene.units_total == 3 * 5
    assert sum(scene.class_pixels.values()) == scene.pixels == 301 * 517


# ------------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_cluster():
    # Two logical GPUs on a CPU-only machine: Ray's GPU resources are bookkeeping, which is
    # what lets the pinning test run here; the other tests ask for CPU actors explicitly.
    assert not ray.is_initialized(), "a Ray instance is already running in this process"
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="class")
def pool(ray_cluster):
    with RayExecutor(TinyLoader(), use_gpu="auto", max_in_flight_per_actor=2) as ex:
        yield ex


@pytest.mark.ray
class TestTwoActorPool:
    """One pool for these tests (actor start-up dominates their cost): use_gpu="auto" on two
    logical GPUs -> two GPU-pinned actors whose models fall back to the CPU here."""

    def test_one_actor_per_gpu_with_cpu_fallback(self, pool):
        assert pool.spec.num_gpus == 1 and len(pool.workers) == 2
        ids = [w.gpu_ids for w in pool.workers]
        assert sorted(ids) == [("0",), ("1",)], ids  # one model per GPU, none shared
        assert sorted(w.cuda_visible_devices for w in pool.workers) == ["0", "1"]
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        assert {w.model.device for w in pool.workers} == {expected}
        assert os.getpid() not in {w.pid for w in pool.workers}

    def test_labels_bit_identical_to_in_process(self, archive, tmp_path, pool):
        """Ray pool == in process, with and without read-ahead / write-behind."""
        cfg = _cfg()
        ray_run = run_pipeline(str(archive), str(tmp_path / "ray"), cfg, executor=pool)
        local = run_pipeline(
            str(archive), str(tmp_path / "local"), cfg, executor=LocalExecutor(TinyLoader())
        )
        serial = run_pipeline(
            str(archive), str(tmp_path / "serial"), cfg,
            executor=LocalExecutor(TinyLoader(), overlap=False),
        )
        assert ray_run.ok and local.ok and serial.ok
        assert len({w.pid for w in ray_run.workers}) == 2
        for sid in ("odd", "deep/thin"):
            want = _levels(tmp_path / "local", sid)
            for other in ("ray", "serial"):
                for a, b in zip(_levels(tmp_path / other, sid), want, strict=True):
                    np.testing.assert_array_equal(a, b, err_msg=f"{other}: {sid}")
        # Same class areas reported by both (counted in the workers).
        pix = {s.scene_id: s.class_pixels for s in ray_run.manifest.scenes}
        assert pix == {s.scene_id: s.class_pixels for s in local.manifest.scenes}

    def test_a_reused_pool_writes_each_run_into_its_own_output(self, archive, tmp_path, pool):
        """Actors outlive runs: their cached scene handles must never cross outputs."""
        cfg = _cfg()
        for out in ("first", "second"):
            assert run_pipeline(str(archive), str(tmp_path / out), cfg, executor=pool).ok
        for sid in ("odd", "deep/thin"):
            for a, b in zip(
                _levels(tmp_path / "first", sid), _levels(tmp_path / "second", sid), strict=True
            ):
                np.testing.assert_array_equal(a, b, err_msg=sid)
            assert _levels(tmp_path / "second", sid)[-1].min() > 0  # confidence was written

    def test_batches_spread_with_bounded_in_flight(self, archive, tmp_path, pool):
        info = catalog(str(archive)).get("odd")
        SceneWriter.create(
            str(tmp_path),
            "odd",
            info.height,
            info.width,
            128,
            _standin.CLASSES,
            {},
            confidence=True,
        )
        job = SceneJob(info=info, output_url=str(tmp_path))
        grid = plan_scene("odd", info.height, info.width, chunk=128, halo=8)
        pulled = []

        def batches():
            for u in grid:
                pulled.append(u.unit_id)
                yield Batch(job, (u,))

        stream = pool.map(batches())
        first = next(stream)
        # Lazy pull: at most 2 actors x 2 in flight (+1 being handed over) before a result.
        assert len(pulled) <= 2 * 2 + 1
        results = [first, *stream]
        assert len(results) == len(grid) and all(r.error is None for r in results)
        assert len({r.worker for r in results}) == 2

    @pytest.mark.s3
    def test_s3_archive_to_another_bucket(self, archive, tmp_path, s3_server, pool):
        """Actors read from one bucket and write to another with the run's S3 options."""
        so = s3_server.storage_options
        src, dst = s3_server.make_bucket("pe-archive"), s3_server.make_bucket("pe-labels")
        img = smooth_image(9, 3, 200, 260, "uint16")
        write_zarr_scene(f"{src}/run1", "s3scene", img, storage_options=so)
        write_zarr_scene(tmp_path / "local-archive", "s3scene", img)
        s3 = {"endpoint_url": s3_server.endpoint_url, "key": so["key"], "secret": so["secret"]}
        cfg = _cfg(s3=s3)
        remote = run_pipeline(f"{src}/run1", f"{dst}/out", cfg, executor=pool)
        assert remote.ok, [s.error for s in remote.manifest.failed]
        assert remote.manifest_url.startswith(f"{dst}/out/_hgn/manifest-")
        local = run_pipeline(
            str(tmp_path / "local-archive"),
            str(tmp_path / "o"),
            _cfg(),
            executor=LocalExecutor(TinyLoader()),
        )
        got = SceneWriter.open(f"{dst}/out", "s3scene", storage_options=so)
        ref = SceneWriter.open(str(tmp_path / "o"), "s3scene")
        assert local.ok and got.complete
        for k in range(got.levels):
            np.testing.assert_array_equal(got.read_level(k), ref.read_level(k))
        assert so["secret"] not in json.dumps(remote.manifest.to_dict())


@pytest.mark.ray
def test_ray_actors_without_overlap_write_the_same_bytes(archive, tmp_path, ray_cluster):
    cfg = _cfg(use_gpu=False, max_actors=1, overlap_io=False, actor_start_timeout_s=60)
    with RayExecutor.from_config(cfg, TinyLoader()) as ex:
        serial = run_pipeline(str(archive), str(tmp_path / "serial"), cfg, executor=ex)
    local = run_pipeline(str(archive), str(tmp_path / "local"), cfg,
                         executor=LocalExecutor(TinyLoader()))
    assert serial.ok and local.ok
    for sid in ("odd", "deep/thin"):
        for a, b in zip(_levels(tmp_path / "serial", sid), _levels(tmp_path / "local", sid),
                        strict=True):
            np.testing.assert_array_equal(a, b, err_msg=sid)


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_dask_read_path_runs_on_ray_and_matches(archive, tmp_path, ray_cluster):
    """Window reads as dask graphs on Ray, with a CPU left free for them (no hang)."""
    cfg = _cfg(use_gpu=False, read_path="dask")
    dask_run = run_pipeline(
        str(archive),
        str(tmp_path / "dask"),
        cfg,
        executor=RayExecutor.from_config(cfg, TinyLoader()),
    )
    assert dask_run.ok, [s.error for s in dask_run.manifest.failed]
    assert len(dask_run.workers) == 1  # 2 CPUs - 1 reserved for read tasks
    run_pipeline(
        str(archive), str(tmp_path / "local"), _cfg(), executor=LocalExecutor(TinyLoader())
    )
    for a, b in zip(
        _levels(tmp_path / "dask", "odd"), _levels(tmp_path / "local", "odd"), strict=True
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.ray
def test_crashed_actor_is_replaced_and_its_batch_run_again(archive, tmp_path, ray_cluster):
    cfg = _cfg(use_gpu=False, max_actors=1, task_max_retries=1)
    ex = RayExecutor.from_config(cfg, CrashOnceLoader(str(tmp_path / "m")))
    with ex:
        first = ex.workers[0].pid
        res = run_pipeline(str(archive), str(tmp_path / "out"), cfg, executor=ex)
        assert (tmp_path / "m").exists()  # it did crash once
        assert [w.pid for w in ex.workers] != [first]  # a new actor took its place
    assert res.ok, [s.error for s in res.manifest.failed]
    actors = res.manifest.executor["actors"]
    assert [a["state"] for a in actors] == ["lost", "live"], actors
    assert res.manifest.executor["units_redone"] >= 1


@pytest.mark.ray
def test_a_batch_that_kills_every_actor_fails_its_scene_not_the_run(tmp_path, ray_cluster):
    root = tmp_path / "archive"
    write_zarr_scene(root, "poison", smooth_image(3, 3, 100, 200))  # 2 units: one batch
    cfg = _cfg(use_gpu=False, max_actors=1, task_max_retries=1)
    with RayExecutor.from_config(cfg, KillerLoader()) as ex:
        res = run_pipeline(str(root), str(tmp_path / "out"), cfg, executor=ex, run_id="poison")
    (scene,) = res.manifest.scenes
    assert scene.status == "failed"
    assert "was lost with 2 model actors" in scene.error and "task_max_retries" in scene.error
    assert [a["state"] for a in res.manifest.executor["actors"]][:2] == ["lost", "lost"]


@pytest.mark.ray
def test_local_and_ray_outputs_are_bit_identical_at_the_same_thread_count(tmp_path, ray_cluster):
    """`run --local` and Ray actors with threads_per_actor torch threads give the same bytes.

    With the shipped HGN a different thread count moves a few pixels (measured: 1 label, 14
    confidence values in 768^2 for 1 vs 2 threads), so the local executor takes the actors'
    setting and both report it.
    """
    from hgn_model import shipped_checkpoint

    root = tmp_path / "archive"
    write_zarr_scene(root, "s", smooth_image(5, 3, 384, 640))
    cfg = _cfg(checkpoint=str(shipped_checkpoint("hgn")), chunk=256, halo=64, use_gpu=False,
               max_actors=1, threads_per_actor=1)
    with LocalExecutor.from_config(cfg) as local_ex:
        local = run_pipeline(str(root), str(tmp_path / "local"), cfg, executor=local_ex)
        local_threads = local_ex.workers[0].threads
    with RayExecutor.from_config(cfg) as ray_ex:
        remote = run_pipeline(str(root), str(tmp_path / "ray"), cfg, executor=ray_ex)
        ray_threads = ray_ex.workers[0].threads
    assert local.ok and remote.ok
    assert local_threads == ray_threads == 1
    for a, b in zip(_levels(tmp_path / "ray", "s"), _levels(tmp_path / "local", "s"), strict=True):
        np.testing.assert_array_equal(a, b)

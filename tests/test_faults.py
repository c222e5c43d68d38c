"""Fault injection with real processes: a killed model actor, a flaky S3, a vanished bucket.

Every run here uses the real ``Segmenter`` (a tiny seeded checkpoint) in a pool of two Ray
actors, and every result is compared bit for bit with a clean run of the same pool over the
same archive. The S3 faults come from :class:`_faultproxy.FaultProxy`, a real HTTP proxy on
127.0.0.1 in front of the session's SeaweedFS server. (Killing the *driver* and resuming is
covered by ``test_resume.py``.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
import ray
from _faultproxy import KINDS, FaultProxy, Forced
from _standin import smooth_image, write_zarr_scene
from _threads import run_in_thread
from _tiny_checkpoint import tiny_checkpoint

from pipeline.config import load_config
from pipeline.execute import RayExecutor
from pipeline.io.omezarr import SceneWriter
from pipeline.run import MemoryLedger, run_pipeline
from pipeline.run.report import read_manifest
from pipeline.run.resume import model_identity, run_resumable
from pipeline.state.hgnstore import segment
from pipeline.state.ledger import Ledger, RunFingerprint

REPO = Path(__file__).resolve().parents[1]
SCENES = ("a", "sub/b")
TIMEOUT_S = 240  # per pipeline run: a hang fails the test instead of the session


def _overrides(ckpt: Path) -> dict[str, Any]:
    return dict(
        chunk=128, halo=16, batch_size=1, checkpoint=str(ckpt), max_actors=2, use_gpu=False,
        threads_per_actor=1, max_in_flight_per_actor=2, actor_max_restarts=1,
        task_max_retries=2, io_retries=3, io_backoff_s=0.05,
    )


def _levels(url: str, scene: str, so: dict | None = None) -> list[np.ndarray]:
    w = SceneWriter.open(url, scene, storage_options=so)
    assert w.complete, f"{scene} in {url} is not complete"
    return [w.read_level(k, layer) for layer in ("segmentation", "confidence")
            for k in range(w.levels)]


def _assert_identical(got: dict[str, list[np.ndarray]], want: dict[str, list[np.ndarray]]):
    assert set(got) == set(want)
    for scene in want:
        assert len(got[scene]) == len(want[scene]), scene
        for k, (a, b) in enumerate(zip(got[scene], want[scene], strict=True)):
            np.testing.assert_array_equal(a, b, err_msg=f"{scene} array {k}")


class _CountingLedger(MemoryLedger):
    """MemoryLedger that says how many units were recorded (to time a fault mid-run)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def mark_done(self, scene_id, unit_id, token, info=None) -> None:
        super().mark_done(scene_id, unit_id, token, info)
        self.count += 1


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    write_zarr_scene(root, "a", smooth_image(0, 3, 300, 420), chunks=128)  # 3 x 4 units
    write_zarr_scene(root, "sub/b", smooth_image(1, 3, 190, 260, "uint16"), chunks=128)  # 2 x 3
    return root


@pytest.fixture(scope="module")
def ray_cluster():
    assert not ray.is_initialized(), "a Ray instance is already running in this process"
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clean(ray_cluster, ckpt, archive, tmp_path_factory) -> dict[str, list[np.ndarray]]:
    """Every level of both scenes from a fault-free run of the same two-actor pool."""
    out = tmp_path_factory.mktemp("clean") / "out"
    cfg = load_config(overrides=_overrides(ckpt))
    with RayExecutor.from_config(cfg) as ex:
        res = run_pipeline(str(archive), str(out), cfg, executor=ex)
    assert res.ok, [s.error for s in res.manifest.failed]
    assert res.manifest.to_dict()["summary"]["io_retries"] == 0  # nothing to retry locally
    return {s: _levels(str(out), s) for s in SCENES}


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------------ (a) actor SIGKILL


@pytest.mark.ray
def test_sigkilled_model_actor_is_replaced_and_the_mosaic_is_bit_identical(
    ray_cluster, ckpt, archive, clean, tmp_path
):
    cfg = load_config(overrides=_overrides(ckpt))
    ledger = _CountingLedger()
    ex = RayExecutor.from_config(cfg)
    workers = ex.start()
    victim = workers[0].pid
    assert victim != os.getpid() and len({w.pid for w in workers}) == 2
    try:
        thread, box = run_in_thread(lambda: run_pipeline(
            str(archive), str(tmp_path / "out"), cfg, executor=ex, ledger=ledger, run_id="kill"))
        _wait(lambda: ledger.count >= 3 or not thread.is_alive(), TIMEOUT_S, "3 finished units")
        assert thread.is_alive(), f"run ended before the kill: {box}"
        os.kill(victim, signal.SIGKILL)  # the actor's process, mid-run, no cleanup
        thread.join(TIMEOUT_S)
        assert not thread.is_alive(), "run hangs after the actor was killed"
        if "error" in box:
            raise box["error"]
        res = box["result"]
        # Its batches ran on the other actor (and on a replacement, if it started in time).
        reborn = {w.pid for w in ex.workers}
    finally:
        ex.close()
    assert victim not in reborn
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    assert res.ok, [s.error for s in res.manifest.failed]
    for s in res.manifest.scenes:
        assert s.units_done == s.units_total > 0, s.scene_id
    lost = [a for a in res.manifest.executor["actors"] if a["state"] == "lost"]
    assert [a["pid"] for a in lost] == [victim]
    _assert_identical({s: _levels(str(tmp_path / "out"), s) for s in SCENES}, clean)


# -------------------------------------------------------------------------- S3 helpers


def _upload(s3_server, archive: Path, bucket_url: str) -> str:
    fs = s3_server.filesystem()
    dest = bucket_url.removeprefix("s3://") + "/archive"
    fs.put(str(archive) + "/", dest + "/", recursive=True)
    return f"s3://{dest}"


def _s3_cfg(ckpt: Path, s3_server, endpoint: str, **kw):
    s3 = {"endpoint_url": endpoint, "key": s3_server.key, "secret": s3_server.secret}
    return load_config(overrides={**_overrides(ckpt), "s3": s3, **kw})


# ------------------------------------------------------------------------ (b) flaky S3


@pytest.mark.ray
@pytest.mark.s3
def test_flaky_object_store_run_completes_with_counted_retries_bit_identical(
    ray_cluster, ckpt, archive, clean, s3_server, s3_bucket
):
    src = _upload(s3_server, archive, s3_bucket)
    out = f"{s3_bucket}/out"
    # Every fault kind at least once on chunk GETs (input pixels, read in the actors) and chunk
    # PUTs (label chunks), then ~5% random faults on every GET and PUT (ledger, lock, manifest
    # and metadata included).
    forced = tuple(Forced(kind, method, "/c/") for method in ("GET", "PUT") for kind in KINDS)
    with FaultProxy(s3_server.endpoint_url, rate=0.05, forced=forced, seed=6) as proxy:
        cfg = _s3_cfg(ckpt, s3_server, proxy.url)
        with RayExecutor.from_config(cfg) as ex:
            res = run_resumable(src, out, cfg, executor=ex, run_id="flaky")
        stats = dict(proxy.stats)
    assert res.run is not None and res.run.ok, [s.error for s in res.run.manifest.failed]
    for method in ("GET", "PUT"):
        for kind in KINDS:
            assert stats.get((method, kind), 0) >= 1, (method, kind, stats)
    m = read_manifest(res.run.manifest_url, s3_server.storage_options)
    summary = m["summary"]
    assert summary["scenes_ok"] == 2 and summary["scenes_failed"] == 0
    # The forced chunk faults that fail a request (all but "slow") all hit the actors, and
    # each one is retried somewhere (S3 client or pipeline): the scenes' counts show them.
    worker_retries = sum(s["storage_retries"] + s["io_retries"] for s in m["scenes"])
    assert worker_retries >= 2 * (len(KINDS) - 1), m["scenes"]
    assert summary["storage_retries"] + summary["io_retries"] >= worker_retries
    got = {s: _levels(out, s, s3_server.storage_options) for s in SCENES}
    _assert_identical(got, clean)


# ------------------------------------------------------------------ (c) bucket vanishes


_CLI_RUN = """
import sys
from pipeline.cli import app
sys.argv = ["hgn-pipeline", *sys.argv[1:]]
app()
"""


@pytest.mark.ray
@pytest.mark.s3
def test_output_bucket_vanishing_mid_run_fails_clearly_and_a_rerun_completes(
    ray_cluster, ckpt, archive, clean, s3_server, s3_bucket, tmp_path
):
    src = _upload(s3_server, archive, s3_server.make_bucket(s3_bucket.removeprefix("s3://")
                                                             + "-in"))
    out_bucket = s3_bucket.removeprefix("s3://")
    out = f"{s3_bucket}/out"
    with FaultProxy(s3_server.endpoint_url, rate=0.0) as proxy:
        config = tmp_path / "run.yaml"
        cfg = _s3_cfg(ckpt, s3_server, proxy.url)
        config.write_text(json.dumps(cfg.model_dump(mode="json") | {
            "s3": {"endpoint_url": proxy.url, "key": s3_server.key, "secret": s3_server.secret}
        }))
        # The failing run is a real CLI process (in-process Segmenter: --local), so its exit
        # code and its words are what a user gets.
        proc = subprocess.Popen(
            [sys.executable, "-c", _CLI_RUN, "run", "-i", src, "-o", out, "-c", str(config),
             "--local", "--no-progress", "--run-id", "vanish"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            # The bucket disappears once some label chunks have landed.
            _wait(lambda: proxy.stats[("PUT", "ok")] >= 30 or proc.poll() is not None,
                  TIMEOUT_S, "30 PUTs")
            assert proc.poll() is None, "run ended before the bucket vanished"
            proxy.vanish(out_bucket)
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        proxy.restore(out_bucket)
        text = stdout + stderr
        assert proc.returncode != 0, text[-3000:]
        assert out in text and "does not exist" in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]

        # The ledger is consistent: every chunk it calls done holds what a clean run wrote,
        # and no scene is done (nor its store complete) after the failed run.
        so = s3_server.storage_options
        sha, arch = model_identity(cfg)
        ledger = Ledger(out, RunFingerprint.from_config(cfg, sha, arch), so)
        records = ledger.scenes()
        assert all(r.state != "done" for r in records.values()), records
        checked = 0
        for scene in SCENES:
            chunks = f"ledger/{ledger.fingerprint.token}/chunks/{segment(scene, 'scene_id')}"
            for rel in ledger._store.list(chunks):  # <scene token>/<unit id>, escaped
                unit_id = unquote(rel.rsplit("/", 1)[1])
                row, col = (int(v) for v in unit_id.rsplit("#r", 1)[1].split("c"))
                w = SceneWriter.open(out, scene, storage_options=so)
                assert not w.complete
                box = np.s_[row * 128:(row + 1) * 128, col * 128:(col + 1) * 128]
                np.testing.assert_array_equal(w.read_level(0)[box], clean[scene][0][box],
                                              err_msg=f"ledger says {unit_id} is done")
                checked += 1
        assert checked >= 1  # some chunks were done before the bucket went
        # The bucket is back: the same command resumes and completes.
        with RayExecutor.from_config(cfg) as ex:
            again = run_resumable(src, out, cfg, executor=ex, run_id="after")
    assert again.run is not None and again.run.ok, [s.error for s in again.run.manifest.failed]
    assert again.units_reused >= checked
    _assert_identical({s: _levels(out, s, so) for s in SCENES}, clean)

"""``ray job submit`` of ``hgn-pipeline run`` to a real Ray head on 127.0.0.1.

The head is started with ``ray start --head`` in its own temp dir and stopped by the PIDs of
that session's processes (never ``ray stop``, which would end every Ray of this user).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from _standin import smooth_image, write_zarr_scene
from _tiny_checkpoint import tiny_checkpoint

from pipeline.io.omezarr import SceneWriter
from pipeline.query import OutputStore

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEAD_START_TIMEOUT_S = 90.0
JOB_TIMEOUT_S = 300.0


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _session_pids(temp_dir: str) -> list[int]:
    """PIDs of processes whose command line names this head's temp dir (ours only)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if temp_dir in cmd and int(entry) != os.getpid():
            pids.append(int(entry))
    return pids


def _stop(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
            time.sleep(0.2)


@pytest.fixture(scope="module")
def head() -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head on 127.0.0.1 with 2 CPUs; yields (job server URL, env for the ray CLI)."""
    gcs, dash, client, agent = _free_ports(4)
    # Short path: Ray's unix sockets live below it (108-byte limit).
    temp_dir = tempfile.mkdtemp(prefix="hgnray", dir="/tmp")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # Tests only: Ray 2.60 enables token auth when a token exists under ~/.ray, and this
        # throwaway loopback head must not depend on (or rewrite) the user's real token.
        # Deployments keep token auth on (ray_cluster.yaml, deploy/).
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        # The job imports this checkout, also when tests run from a copy of the repository.
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
           f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=HEAD_START_TIMEOUT_S)
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield f"http://127.0.0.1:{dash}", env
    finally:
        _stop(_session_pids(temp_dir))
        leftover = _session_pids(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftover, f"Ray processes survived the stop: {leftover}"


def test_ray_job_submit_runs_the_pipeline(head: tuple[str, dict[str, str]],
                                           tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    url, env = head
    archive, out = tmp_path / "archive", tmp_path / "out"
    write_zarr_scene(archive, "s1", smooth_image(3, 3, 300, 420))
    write_zarr_scene(archive, "nested/s2", smooth_image(4, 3, 200, 150))
    ckpt = tiny_checkpoint(tmp_path / "ckpt" / "tiny")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"checkpoint": str(ckpt), "chunk": 128, "halo": 16}))

    job_id = f"hgn-test-{os.getpid()}-{int(time.time())}"
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(ROOT),
         "--submission-id", job_id, "--no-wait", "--",
         "hgn-pipeline", "run", "--input", str(archive), "--output", str(out),
         "--config", str(config), "--address", "auto", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]

    client = JobSubmissionClient(url)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    status = client.get_job_status(job_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(1)
        status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, f"job {job_id} ended {status}:\n{logs[-4000:]}"

    rows = {r.scene_id: r for r in OutputStore(str(out)).list_scenes()}
    assert {k: v.status for k, v in rows.items()} == {"s1": "done", "nested/s2": "done"}
    assert rows["s1"].arch == "deep_only"

    # Same labels as the checkpoint applied in this process to the whole scene's windows.
    from pipeline.config import load_config
    from pipeline.execute import LocalExecutor
    from pipeline.run import run_pipeline

    ref = tmp_path / "ref"
    cfg = load_config(config)
    with LocalExecutor(str(ckpt), device="cpu") as ex:
        assert run_pipeline(str(archive), str(ref), cfg, executor=ex).ok
    for scene in ("s1", "nested/s2"):
        got = SceneWriter.open(str(out), scene).read_level(0)
        np.testing.assert_array_equal(got, SceneWriter.open(str(ref), scene).read_level(0))

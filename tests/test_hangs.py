"""Hangs: a Ray address that never answers, signals at any stage, a private Ray that must
not outlive its driver. Every run here is a real process, bounded by a subprocess timeout, so
a hang fails the test instead of stalling the suite."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from _standin import smooth_image, write_zarr_scene
from _tiny_checkpoint import tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("hangs")
    archive = base / "archive"
    write_zarr_scene(archive, "a", smooth_image(0, 3, 300, 300))
    write_zarr_scene(archive, "b", smooth_image(1, 3, 200, 260))
    return archive, tiny_checkpoint(base / "tiny")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["COLUMNS"] = "200"
    return env


def _cli(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([str(Path(sys.executable).with_name("hgn-pipeline")), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=REPO)


def _wait_for(path: Path, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not path.exists():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {TIMEOUT_S} s"
        time.sleep(0.05)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running after {TIMEOUT_S} s: {err[-2000:]}")
    return proc.returncode, out + err


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung or foreign server)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    conns: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conns.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()
    for c in conns:
        c.close()


def _run_args(archive: Path, ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "-i", str(archive), "-o", str(out), "--no-progress", "--set",
            f"checkpoint={ckpt}", "--set", "chunk=128", "--set", "halo=8", *extra]


def test_address_where_nothing_listens_fails_at_once_naming_it(setup, tmp_path) -> None:
    archive, ckpt = setup
    out = tmp_path / "out"
    code, text = _finish(_cli(_run_args(archive, ckpt, out, "--address", "127.0.0.1:1")))
    assert code == 2, text[-3000:]
    assert "error: --address '127.0.0.1:1': nothing answers at 127.0.0.1:1" in text, text
    assert "Traceback" not in text
    assert not (out / "_hgn" / "lock.json").exists()


def test_address_that_never_answers_times_out_and_releases_the_lock(
        setup, tmp_path, silent_port) -> None:
    archive, ckpt = setup
    out = tmp_path / "out"
    address = f"127.0.0.1:{silent_port}"
    code, text = _finish(_cli(_run_args(archive, ckpt, out, "--address", address,
                                        "--set", "connect_timeout_s=4")))
    assert code == 2, text[-3000:]
    assert f"--address '{address}': no Ray cluster answered within 4 s" in text, text[-3000:]
    assert not (out / "_hgn" / "lock.json").exists(), "the output lock was left behind"


def test_sigterm_while_blocked_connecting_releases_the_lock(setup, tmp_path, silent_port):
    archive, ckpt = setup
    out = tmp_path / "out"
    proc = _cli(_run_args(archive, ckpt, out, "--address", f"127.0.0.1:{silent_port}",
                          "--set", "connect_timeout_s=600"))
    _wait_for(out / "_hgn" / "lock.json", proc, "the run lock")
    time.sleep(3)  # inside ray.init by now (the lock is taken just before connecting)
    proc.send_signal(signal.SIGTERM)
    code, text = _finish(proc)
    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert "SIGTERM" in text and "lock was released" in text, text[-3000:]
    assert not (out / "_hgn" / "lock.json").exists()


# A --local CLI run whose model is slow, so that signals land mid-run.
_SLOW_CLI = """
import sys, time
sys.path.insert(0, {tests!r})
from _standin import TinySegmenter
import pipeline.run as run_mod
from pipeline.execute import LocalExecutor

class Slow(TinySegmenter):
    def predict(self, images, **kw):
        time.sleep(0.3)
        return super().predict(images, **kw)

run_mod.LocalExecutor = lambda *a, **k: LocalExecutor(lambda device="auto", threads=None: Slow())
from pipeline.cli import app
sys.argv = ["hgn-pipeline", *sys.argv[1:]]
app()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_releases_the_lock_and_the_rerun_resumes(setup, tmp_path, sig) -> None:
    archive, ckpt = setup
    out = tmp_path / "out"
    args = _run_args(archive, ckpt, out, "--local", "--run-id", "victim")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CLI.format(tests=str(TESTS)), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=REPO)
    chunks = out / "_hgn" / "ledger"
    deadline = time.monotonic() + TIMEOUT_S
    while sum(1 for p in chunks.rglob("*%23r*") if ".tmp-" not in p.name) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    code, text = _finish(proc)
    assert code == 128 + sig, text[-3000:]
    assert f"interrupted by {signal.Signals(sig).name}" in text and "Traceback" not in text
    assert not (out / "_hgn" / "lock.json").exists()
    again = subprocess.run([sys.executable, "-c", _SLOW_CLI.format(tests=str(TESTS)),
                            *_run_args(archive, ckpt, out, "--local")],
                           capture_output=True, text=True, env=_env(), cwd=REPO,
                           timeout=TIMEOUT_S)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "chunks reused from the ledger" in again.stderr and " 0 chunks reused" not in (
        again.stderr)


_PRIVATE_RAY = """
import json, os, sys, time
from pipeline.execute import ray_session
with ray_session(None, num_cpus=1):
    import ray
    @ray.remote
    def ping():
        return os.getpid()
    ray.get(ping.remote())
    time.sleep(3)  # the agents are up by now
    print(json.dumps({"ready": True}), flush=True)
    time.sleep(600)
"""


def _tree(pid: int) -> dict[int, float]:
    out = {}
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            out[child.pid] = child.create_time()
    return out


def _running(pid: int, started: float) -> bool:
    try:
        p = psutil.Process(pid)
        return p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.ray
def test_private_ray_does_not_outlive_a_sigkilled_driver() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _PRIVATE_RAY], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=_env(), cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert json.loads(line)["ready"], line
        ray_procs = _tree(proc.pid)
        names = {psutil.Process(p).name() for p in ray_procs if _running(p, ray_procs[p])}
        assert any("raylet" in n for n in names), names
    finally:
        proc.send_signal(signal.SIGKILL)  # no cleanup at all in the driver
        proc.wait()
    deadline = time.monotonic() + 30
    left = ray_procs
    while time.monotonic() < deadline:
        left = {p: t for p, t in ray_procs.items() if _running(p, t)}
        if not left:
            break
        time.sleep(0.5)
    names = []
    for pid in left:
        with contextlib.suppress(psutil.Error):
            names.append(" ".join(psutil.Process(pid).cmdline())[:80])
    assert not left, f"{len(left)} Ray processes outlived their driver by 30 s: {names}"


@pytest.mark.ray
def test_sigterm_while_the_private_ray_starts_leaves_no_lock_and_no_ray(setup, tmp_path):
    archive, ckpt = setup
    out = tmp_path / "out"
    proc = _cli(_run_args(archive, ckpt, out, "--num-cpus", "1"))
    _wait_for(out / "_hgn" / "lock.json", proc, "the run lock")
    deadline = time.monotonic() + TIMEOUT_S
    while not any("raylet" in " ".join(_cmd(p)) for p in _tree(proc.pid)):
        assert proc.poll() is None and time.monotonic() < deadline, "Ray never started"
        time.sleep(0.05)
    started = _tree(proc.pid)
    proc.send_signal(signal.SIGTERM)  # Ray is half started: no driver session yet
    code, text = _finish(proc)
    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert not (out / "_hgn" / "lock.json").exists()
    deadline = time.monotonic() + 30
    while any(_running(p, t) for p, t in started.items()) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [" ".join(_cmd(p))[:80] for p, t in started.items() if _running(p, t)]
    assert not left, f"Ray processes left after SIGTERM during start: {left}"


def _cmd(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []

"""Secure defaults: loopback-only Ray without dashboard, token auth kept on, credentials never
written or printed, and scene ids that would escape the output root refused.

The credential scan runs the real CLI twice against a loopback moto S3 server (it accepts any
key, so the credentials can be distinctive fakes): once on a private local Ray with the
credentials in the config file, once in-process with them in AWS_* variables. Then every byte
the runs produced is searched: stdout/stderr, every object in both buckets (manifests, ledger,
lock, store attributes, chunks) and every file of the private Ray session (its logs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from _standin import smooth_image, write_zarr_scene
from _tiny_checkpoint import tiny_checkpoint

from pipeline.errors import OutputError
from pipeline.io.omezarr import SceneWriter, scene_store_url
from pipeline.query import OutputStore

REPO = Path(__file__).resolve().parents[1]
KEY = "AKIAHGNLEAKPROBE7Q3Z"
SECRET = "hgnLeakProbeSecret9f8e7d6c5b4aZz"
TOKEN = "hgnLeakProbeSessionToken0a1b2c3d"
CREDENTIALS = (KEY, SECRET, TOKEN)
MOTO_START_TIMEOUT_S = 30.0

# Where token auth could be switched off for real deployments (everything but tests/).
SHIPPED = ("pipeline", "hgn_model", "bench", "deploy", "ray_cluster.yaml", "Makefile",
           "pyproject.toml", "README.md", ".ci")


# ------------------------------------------------------------------------ static checks


def _shipped_files() -> Iterator[Path]:
    for name in SHIPPED:
        path = REPO / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for p in path.rglob("*"):
                if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (
                        ".safetensors", ".png", ".pyc"):
                    yield p


def test_ray_token_auth_is_never_disabled_outside_tests() -> None:
    offenders = []
    for path in _shipped_files():
        text = path.read_text(errors="replace")
        for m in re.finditer(r"RAY_AUTH_MODE\W{0,4}(\w+)", text):
            if m.group(1).lower() != "token":
                offenders.append(f"{path.relative_to(REPO)}: {m.group(0)!r}")
    assert offenders == [], offenders
    # The private local Ray starts with Ray's defaults (token auth on) and no dashboard.
    source = (REPO / "pipeline/execute/session.py").read_text()
    assert "include_dashboard=False" in source and '_node_ip_address="127.0.0.1"' in source


def test_scene_ids_that_escape_the_output_root_are_refused(tmp_path) -> None:
    out = str(tmp_path / "out")
    for bad in ("..", "../x", "a/../../x", "/etc/x", "a//b", "./a", "a\\..\\b", "a/\x00b"):
        with pytest.raises(OutputError, match=r"refused|empty"):
            scene_store_url(out, bad)
        with pytest.raises(OutputError):
            SceneWriter.create(out, bad, 8, 8, 8, [("a", (0, 0, 0, 0))], {})
        with pytest.raises(OutputError):
            OutputStore(out).scene(bad)
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.ome.zarr").exists()
    assert scene_store_url(out, "a/b.c") == f"{out}/a/b.c.ome.zarr"


# ------------------------------------------------------------------ private local Ray


# 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net/tcp{,6} write them
_LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}

# Runs in a fresh interpreter, as `hgn-pipeline run` does: ray is not imported beforehand.
_PROBE = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from bench._proc import descendants as _descendants
from test_security import _listeners
from pipeline.execute import ray_session
with ray_session(None, num_cpus=1) as started:
    import ray
    @ray.remote
    def ping():
        return os.getpid()
    worker = ray.get(ping.remote())  # a worker process exists and works
    time.sleep(2)  # let the dashboard head start its servers
    node = ray._private.worker._global_node
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
        token = is_token_auth_enabled()
    except ImportError:
        token = None
    print(json.dumps({
        "started": started, "node_ip": node.address_info["node_ip_address"],
        "webui_url": node.address_info.get("webui_url"),
        "dashboard_args": [p.process.args for p in node.all_processes.get("dashboard", [])],
        "listeners": {pid: _listeners(pid) for pid in [os.getpid(), *_descendants(os.getpid())]},
        "worker_seen": worker in _descendants(os.getpid()), "token_auth": token,
    }))
"""


def _listeners(pid: int) -> list[tuple[str, int]]:
    """(local address as /proc/net/tcp writes it, port) of every TCP listener of ``pid``."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # exited meanwhile
        return []
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addr, port = fields[1].rsplit(":", 1)
                found.append((addr, int(port, 16)))
    return found


@pytest.mark.ray
def test_private_local_ray_listens_on_loopback_only_without_job_server_with_token_auth(
) -> None:
    """``ray_session()`` as ``hgn-pipeline run`` starts it (no --address), in a new process.

    Ray resolves a 127.0.0.1 node address to the host's reachable IP and would bind GCS,
    raylet and the dashboard head's metrics endpoint on every interface; ``ray_session``
    switches a private Ray to single-machine mode, so every Ray process listens on loopback.
    The dashboard head Ray always runs is the minimal one (no UI, no job submission API).
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAY_")}  # no RAY_ADDRESS, no RAY_AUTH_MODE: the defaults
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(Path(__file__).parent)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["started"] and info["worker_seen"]
    assert info["node_ip"] == "127.0.0.1"
    assert not info["webui_url"]
    for args in info["dashboard_args"]:
        assert "--host=127.0.0.1" in args and "--disable-frontend" in args, args
        modules = [a for a in args if a.startswith("--modules-to-load=")]
        assert modules and "Job" not in modules[0], args  # no job submission server
    listening = {(pid, addr, port) for pid, items in info["listeners"].items()
                 for addr, port in items}
    assert listening, "no Ray process listens at all: the probe saw the wrong processes"
    assert {x for x in listening if x[1] not in _LOOPBACK} == set()
    assert 8265 not in {port for _, _, port in listening}
    assert info["token_auth"] in (True, None)  # on (None: a Ray without token auth)


# ------------------------------------------------------------------ credential scan


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (any credentials accepted), stopped by PID."""
    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        pytest.skip("moto_server (PyPI moto[server]) is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + MOTO_START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text()[-2000:]
                    raise RuntimeError(f"moto_server did not start: {tail}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _boto(moto_url: str):
    import boto3

    return boto3.client("s3", endpoint_url=moto_url, aws_access_key_id=KEY,
                        aws_secret_access_key=SECRET, aws_session_token=TOKEN,
                        region_name="us-east-1")


def _all_objects(client, bucket: str) -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def _leaks(blob: bytes | str) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return [c for c in CREDENTIALS if c.encode() in data]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.mark.ray
@pytest.mark.slow
def test_credentials_never_reach_logs_manifests_stores_or_errors(moto_url, tmp_path) -> None:
    client = _boto(moto_url)
    client.create_bucket(Bucket="hgn-sec-in")
    client.create_bucket(Bucket="hgn-sec-out")
    so = {"key": KEY, "secret": SECRET, "token": TOKEN,
          "client_kwargs": {"endpoint_url": moto_url}}
    archive = "s3://hgn-sec-in/archive"
    write_zarr_scene(archive, "good", smooth_image(0, 3, 100, 140), storage_options=so)
    # A scene whose pixels cannot be decoded: its error message travels from a worker.
    write_zarr_scene(archive, "broken", smooth_image(1, 3, 64, 64), chunks=32,
                     storage_options=so)
    client.put_object(Bucket="hgn-sec-in", Key="archive/broken.zarr/image/c/0/1/1",
                      Body=b"not a chunk")
    # Keys that would escape the archive root / the output root if taken as scene ids.
    meta = client.get_object(Bucket="hgn-sec-in", Key="archive/good.zarr/zarr.json")
    group = meta["Body"].read()
    for evil in ("archive/../evil.zarr/zarr.json", "archive//abs.zarr/zarr.json"):
        client.put_object(Bucket="hgn-sec-in", Key=evil, Body=group)
    before_in = set(_all_objects(client, "hgn-sec-in"))

    ckpt = tiny_checkpoint(tmp_path / "tiny")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "chunk": 64, "halo": 8, "checkpoint": str(ckpt), "io_retries": 1, "io_backoff_s": 0.01,
        "s3": {"endpoint_url": moto_url, "key": KEY, "secret": SECRET, "token": TOKEN},
    }))
    ray_tmp = Path(tempfile.mkdtemp(prefix="hgnsec", dir="/tmp"))  # short: Ray socket paths
    outputs = []
    try:
        # 1: private local Ray, credentials from the config file.
        env = {**_clean_env(), "RAY_TMPDIR": str(ray_tmp)}
        cmd = [sys.executable, "-m", "pipeline.cli", "run", "-i", archive, "-o",
               "s3://hgn-sec-out/ray", "-c", str(config), "--num-cpus", "2", "--no-progress"]
        outputs.append(subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                                      timeout=300))
        # 2: in-process, credentials from the AWS environment variables only.
        config_no_creds = tmp_path / "run-env.yaml"
        config_no_creds.write_text(yaml.safe_dump({
            "chunk": 64, "halo": 8, "checkpoint": str(ckpt), "io_retries": 1,
            "io_backoff_s": 0.01}))
        env = {**_clean_env(), "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
               "AWS_SESSION_TOKEN": TOKEN, "AWS_ENDPOINT_URL_S3": moto_url}
        cmd = [sys.executable, "-m", "pipeline.cli", "run", "-i", archive, "-o",
               "s3://hgn-sec-out/local", "-c", str(config_no_creds), "--local", "--no-progress"]
        outputs.append(subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                                      timeout=300))
        ray_files = {p: p.read_bytes() for p in ray_tmp.rglob("*")
                     if p.is_file() and not p.is_symlink()}
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    for proc in outputs:
        text = proc.stdout + proc.stderr
        assert proc.returncode == 1, text[-3000:]  # "broken" failed, "good" finished
        assert re.search(r"failed broken: .*read of broken#r\d+c\d+ failed", text), text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        assert _leaks(text) == [], text[-3000:]
    out_objects = _all_objects(client, "hgn-sec-out")
    names = set(out_objects)
    for prefix in ("ray", "local"):
        assert f"{prefix}/good.ome.zarr/zarr.json" in names  # a store with its attributes
        assert any(n.startswith(f"{prefix}/_hgn/manifest-") for n in names)
        assert any(n.startswith(f"{prefix}/_hgn/ledger/") for n in names)
    leaked = {k: _leaks(v) for k, v in out_objects.items() if _leaks(v)}
    assert leaked == {}
    assert len(ray_files) > 5, "the private Ray session wrote no files under RAY_TMPDIR"
    leaked_logs = {str(p): _leaks(v) for p, v in ray_files.items() if _leaks(v)}
    assert leaked_logs == {}
    # Nothing was written outside the output prefixes, nor into the archive.
    assert all(n.split("/", 1)[0] in ("ray", "local") for n in names), sorted(names)
    assert set(_all_objects(client, "hgn-sec-in")) == before_in

"""Ledger (resume records) and run lock, on local paths and on a real S3 server."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace

import pytest

from pipeline.config import RunConfig
from pipeline.errors import OutputError
from pipeline.state.hgnstore import HgnStore, now_utc
from pipeline.state.ledger import Ledger, LedgerMismatchError, RunFingerprint
from pipeline.state.runlock import LockInfo, LockLostError, RunLock, RunLockedError

SHA = "a" * 64


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def backend(request: pytest.FixtureRequest, tmp_path) -> tuple[str, dict]:
    """(output URL, storage options) on a local path or in a fresh bucket of a real S3."""
    if request.param == "local":
        return str(tmp_path / "out"), {}
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/out", request.getfixturevalue("s3_server").storage_options


@pytest.fixture
def store_url(backend: tuple[str, dict]) -> str:
    return backend[0]


@pytest.fixture
def storage_options(backend: tuple[str, dict]) -> dict:
    return backend[1]


def _cfg(**kw: object) -> RunConfig:
    return RunConfig(checkpoint="unused.safetensors", **kw)


def _fp(**kw: object) -> RunFingerprint:
    return RunFingerprint.from_config(_cfg(**kw), SHA, arch="hgn")


# --- fingerprint -------------------------------------------------------------------------


def test_fingerprint_covers_output_settings_only() -> None:
    base = _fp()
    assert base == _fp()
    # Settings that change labels change the fingerprint ...
    for kw in ({"chunk": 1024}, {"halo": 64}, {"bands": (2, 1, 0)}, {"value_max": 4095.0},
               {"confidence": False}, {"pyramid_levels": 4}, {"unit_chunks": 2},
               {"layout": "HWC"}):
        assert _fp(**kw).token != base.token, kw
    assert RunFingerprint.from_config(_cfg(), "b" * 64, "hgn").token != base.token
    # ... execution settings do not (a resume may change them).
    for kw in ({"batch_size": 8}, {"max_actors": 3}, {"io_retries": 0}, {"read_path": "dask"}):
        assert _fp(**kw).token == base.token, kw
    assert "chunk: 2048 -> 1024" in _fp(chunk=1024).diff(base.settings)
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        RunFingerprint.from_config(_cfg(), "", "hgn")


# --- ledger ------------------------------------------------------------------------------


def test_resume_same_fingerprint_refuse_other(store_url: str, storage_options: dict) -> None:
    a = Ledger.open(store_url, _fp(), storage_options=storage_options)
    a.mark_done("s1", "r0c0", "tok")
    again = Ledger.open(store_url, _fp(batch_size=4), storage_options=storage_options)
    assert again.done_chunks("s1", "tok") == {"r0c0"}

    with pytest.raises(LedgerMismatchError) as err:
        Ledger.open(store_url, _fp(chunk=1024), storage_options=storage_options)
    msg = str(err.value)
    assert "chunk: 2048 -> 1024" in msg and "--set overwrite=true" in msg and a.output_url in msg

    new = Ledger.open(store_url, _fp(chunk=1024), storage_options=storage_options, overwrite=True)
    assert new.done_chunks("s1", "tok") == set()
    assert new.current_token() == _fp(chunk=1024).token
    # The old fingerprint's records are gone: going back is a mismatch again, not a resume.
    with pytest.raises(LedgerMismatchError):
        Ledger.open(store_url, _fp(), storage_options=storage_options)
    back = Ledger.open(store_url, _fp(), storage_options=storage_options, overwrite=True)
    assert back.done_chunks("s1", "tok") == set()


def test_chunks_scenes_and_tokens(store_url: str, storage_options: dict) -> None:
    led = Ledger.open(store_url, _fp(), storage_options=storage_options, run_id="run-1")
    odd = "a/b c#1"  # scene ids are archive paths: '/', spaces, '#' must survive
    for cid in ("r0c0", "r0c1", "r1c0#x"):
        led.mark_done(odd, cid, "t1", info={"class_counts": [1, 2]})
    led.mark_done(odd, "r0c0", "t1")  # idempotent
    led.mark_done("..", "r0c0")  # no token; an id that looks like a parent dir
    fresh = Ledger(store_url, _fp(), storage_options)
    assert fresh.done_chunks(odd, "t1") == {"r0c0", "r0c1", "r1c0#x"}
    assert fresh.done_chunks(odd, "t2") == set(), "another token must not resume"
    assert fresh.is_done(odd, "r0c1", "t1") and not fresh.is_done(odd, "r9c9", "t1")
    assert fresh.done_chunks("..") == {"r0c0"}
    assert fresh.chunk_infos(odd, "t1")["r0c1"] == {"class_counts": [1, 2]}

    assert led.scene(odd) is None
    led.mark_scene(odd, "running", "in-v1")
    rec = led.mark_scene(odd, "done", "in-v1", {"units": 3})
    assert (rec.state, rec.input_fingerprint, rec.info, rec.run_id) == (
        "done", "in-v1", {"units": 3}, "run-1")
    led.mark_scene("other", "failed", "in-x", {"error": "boom"})
    scenes = fresh.scenes()
    assert {k: v.state for k, v in scenes.items()} == {odd: "done", "other": "failed"}
    with pytest.raises(ValueError, match=r"'finished'.*scene 'other'"):
        led.mark_scene("other", "finished")

    # The scene changed in the archive: its chunks are no longer done, under any token.
    led.mark_scene(odd, "running", "in-v2")
    assert fresh.done_chunks(odd, "t1") == set()
    assert fresh.scene(odd).input_fingerprint == "in-v2"


def test_compact_keeps_answers_and_shrinks_listing(store_url: str, storage_options: dict) -> None:
    led = Ledger.open(store_url, _fp(), storage_options=storage_options)
    for i in range(5):
        led.mark_done("s", f"r0c{i}", "t", info={"n": i})
    led.mark_scene("s", "done", "in-1")
    led.mark_scene("q", "failed", "in-q", {"error": "x"})
    before = (led.done_chunks("s", "t"), {k: asdict(v) for k, v in led.scenes().items()})
    stats = led.compact()
    assert stats == {"scenes": 2, "markers_folded": 5}
    store = HgnStore(store_url, storage_options)
    base = f"ledger/{led.fingerprint.token}"
    assert store.list(f"{base}/chunks") == [] and store.list(f"{base}/scenes") == []
    fresh = Ledger(store_url, _fp(), storage_options)
    after = (fresh.done_chunks("s", "t"), {k: asdict(v) for k, v in fresh.scenes().items()})
    assert after == before
    assert fresh.chunk_infos("s", "t")["r0c3"] == {"n": 3}
    # New markers after compaction add to the summary; an input change clears both.
    fresh.mark_done("s", "r1c0", "t")
    assert Ledger(store_url, _fp(), storage_options).done_chunks("s", "t") == before[0] | {"r1c0"}
    fresh.mark_scene("s", "running", "in-2")
    assert Ledger(store_url, _fp(), storage_options).done_chunks("s", "t") == set()


def test_many_concurrent_writers_lose_nothing(store_url: str, storage_options: dict) -> None:
    # Pickled copies stand for Ray actors on other nodes; no read-modify-write, so no loss.
    led = Ledger.open(store_url, _fp(), storage_options=storage_options)
    blob = pickle.dumps(led)

    def work(worker: int) -> None:
        mine = pickle.loads(blob)
        for i in range(12):
            mine.mark_done(f"scene{i % 3}", f"w{worker}-{i}", "t")
        mine.close()  # background writes land before the worker reports success

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    got = set().union(*(led.done_chunks(f"scene{s}", "t") for s in range(3)))
    assert got == {f"w{w}-{i}" for w in range(8) for i in range(12)}


def test_background_write_failures_surface(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    led = Ledger(str(blocker / "out"), _fp(), background=True)  # every write here fails
    led.mark_done("s", "r0c0")  # queued: the caller is not blocked on storage latency
    with pytest.raises(OutputError, match=r"cannot write .*r0c0"):
        led.flush()
    led.close()
    sync = Ledger(str(blocker / "out"), _fp())
    with pytest.raises(OutputError):
        sync.mark_done("s", "r0c0")


def test_guard_stops_recording(store_url: str, storage_options: dict) -> None:
    def lost() -> None:
        raise LockLostError("taken over")

    led = Ledger.open(store_url, _fp(), storage_options=storage_options, guard=lost)
    with pytest.raises(LockLostError):
        led.mark_done("s", "r0c0")
    assert pickle.loads(pickle.dumps(led)).guard is None  # workers never carry a lock


# --- run lock ------------------------------------------------------------------------------


def test_second_run_refused_naming_holder(store_url: str, storage_options: dict) -> None:
    with RunLock(store_url, "run-A", storage_options=storage_options) as a:
        with pytest.raises(RunLockedError) as err:
            RunLock(store_url, "run-B", storage_options=storage_options).acquire()
        msg = str(err.value)
        assert "run-A" in msg and socket.gethostname() in msg and f"pid {os.getpid()}" in msg
        assert a.holder().run_id == "run-A"
    assert RunLock(store_url, "x", storage_options=storage_options).holder() is None
    with RunLock(store_url, "run-B", storage_options=storage_options) as b:  # free again
        assert b.took_over is None


def test_concurrent_acquire_has_one_winner(store_url: str, storage_options: dict) -> None:
    start = threading.Barrier(6)
    results: list[str] = []

    def contend(i: int) -> None:
        lock = RunLock(store_url, f"run-{i}", storage_options=storage_options)
        start.wait()
        try:
            lock.acquire()
            results.append(f"won run-{i}")
            time.sleep(1.0)  # hold while the others try
            lock.release()
        except RunLockedError:
            results.append("refused")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.startswith("won") for r in results) == 1, results


def _write_lock(store_url: str, so: dict, **fields: object) -> LockInfo:
    now = now_utc()
    info = LockInfo(host="elsewhere", pid=1, run_id="old", nonce="n0", started=now,
                    heartbeat=now, ttl_s=60.0)
    info = replace(info, **fields)
    HgnStore(store_url, so).write("lock.json", json.dumps(asdict(info)).encode())
    return info


def test_stale_lock_taken_over_live_one_kept(store_url: str, storage_options: dict) -> None:
    so = storage_options
    # Another host with a fresh heartbeat: alive as far as we can tell.
    _write_lock(store_url, so)
    with pytest.raises(RunLockedError, match="run 'old' \\(host elsewhere, pid 1\\)"):
        RunLock(store_url, "new", storage_options=so).acquire()
    # Heartbeat older than its TTL: stale.
    _write_lock(store_url, so, heartbeat="2020-01-01T00:00:00.000000Z")
    with RunLock(store_url, "new", storage_options=so) as lock:
        assert "no heartbeat" in lock.took_over
    # Same host, holder pid gone: stale at once, whatever the heartbeat says.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(store_url, so, host=socket.gethostname(), pid=dead.pid)
    with RunLock(store_url, "new", storage_options=so) as lock:
        assert f"pid {dead.pid} no longer runs" in lock.took_over


def test_heartbeat_and_lost_lock(store_url: str, storage_options: dict) -> None:
    lock = RunLock(store_url, "beating", storage_options=storage_options, ttl_s=5.0,
                   heartbeat_s=0.2)
    with lock:
        first = lock.holder().heartbeat
        deadline = time.monotonic() + 10
        while lock.holder().heartbeat == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lock.holder().heartbeat > first
        lock.check()
        # Someone else now owns the lock (e.g. took it over after a long pause of ours).
        _write_lock(store_url, storage_options, run_id="intruder", nonce="other")
        deadline = time.monotonic() + 10
        while lock.lost is None and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(LockLostError, match="intruder"):
            lock.check()
    # Release must not delete the intruder's lock.
    assert lock.holder().run_id == "intruder"


def test_killed_holder_process_is_taken_over(store_url: str, storage_options: dict) -> None:
    # A real run process holding the lock, SIGKILLed: no release, no more heartbeats.
    code = (
        "import sys, time, json\n"
        "from pipeline.state.runlock import RunLock\n"
        "lock = RunLock(sys.argv[1], 'victim', storage_options=json.loads(sys.argv[2]))\n"
        "lock.acquire(); print('locked', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, store_url, json.dumps(storage_options)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match="victim"):
            RunLock(store_url, "next", storage_options=storage_options).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock(store_url, "next", storage_options=storage_options) as lock:
        assert "victim" in lock.took_over and "no longer runs" in lock.took_over


def test_lock_rejects_bad_timing() -> None:
    with pytest.raises(ValueError, match="heartbeat_s"):
        RunLock("/tmp/x", "r", ttl_s=10, heartbeat_s=10)

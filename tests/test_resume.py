"""Resumable runs: a killed run resumes bit-identically, one run per output, no mixed configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _standin import TinyLoader, smooth_image, write_zarr_scene

from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.io.omezarr import SceneWriter
from pipeline.run.resume import ResumableRun, run_resumable
from pipeline.state.hgnstore import HgnStore
from pipeline.state.ledger import LedgerMismatchError
from pipeline.state.runlock import RunLockedError

TESTS = Path(__file__).resolve().parent


def _cfg(**kw):
    base = dict(chunk=128, halo=8, batch_size=1, checkpoint="unused-standin")
    return load_config(overrides={**base, **kw})


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    write_zarr_scene(root, "odd", smooth_image(0, 3, 301, 517))
    write_zarr_scene(root, "sub/small", smooth_image(1, 3, 130, 140))
    return root


def _levels(out: Path, scene_id: str) -> list[np.ndarray]:
    w = SceneWriter.open(str(out), scene_id)
    return [w.read_level(k, layer) for layer in ("segmentation", "confidence")
            for k in range(w.levels)]


def _markers(out: Path) -> int:
    return sum(1 for p in (out / "_hgn" / "ledger").rglob("*") if p.is_file()
               and "/chunks/" in p.as_posix() and ".tmp-" not in p.name)


# The run process: a stand-in model slowed down so that the test can kill it mid-run.
_VICTIM = """
import sys, time
sys.path.insert(0, {tests!r})
from _standin import TinySegmenter
from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.run.resume import run_resumable

class Slow(TinySegmenter):
    def predict(self, images, **kw):
        time.sleep(0.4)
        return super().predict(images, **kw)

cfg = load_config(overrides=dict(chunk=128, halo=8, batch_size=1, checkpoint="unused-standin"))
with LocalExecutor(lambda device="auto", threads=None: Slow()) as ex:
    run_resumable({archive!r}, {out!r}, cfg, executor=ex, run_id="victim")
"""


def test_killed_run_resumes_bit_identical(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = _VICTIM.format(tests=str(TESTS), archive=str(archive), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _markers(out) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before the kill: {proc.stderr.read()[-2000:]}"
    finally:
        proc.send_signal(signal.SIGKILL)  # no cleanup, no lock release, chunks in flight lost
        proc.wait()
    done_at_kill = _markers(out)
    assert 4 <= done_at_kill < 15 + 2  # killed mid-run: odd has 15 units, sub/small 4

    with LocalExecutor(TinyLoader()) as ex:
        res = run_resumable(str(archive), str(out), _cfg(), executor=ex, run_id="resume")
    assert res.run is not None and res.run.ok
    assert res.lock_takeover and "victim" in res.lock_takeover  # its pid is gone
    assert res.units_reused >= done_at_kill - 1  # at most one marker was being written
    # Issue 6: a resume reuses >= 90% of the chunks finished before the kill.
    assert res.units_reused >= 0.9 * done_at_kill, (res.units_reused, done_at_kill)
    assert "chunks reused from the ledger" in res.describe()

    clean = tmp_path / "clean"
    with LocalExecutor(TinyLoader()) as ex:
        assert run_resumable(str(archive), str(clean), _cfg(), executor=ex).run.ok
    for scene in ("odd", "sub/small"):
        for got, want in zip(_levels(out, scene), _levels(clean, scene), strict=True):
            np.testing.assert_array_equal(got, want)

    # Everything is done now: the same command reuses every scene and runs nothing.
    with LocalExecutor(TinyLoader()) as ex:
        again = run_resumable(str(archive), str(out), _cfg(), executor=ex)
    assert again.nothing_to_do and sorted(again.changes.unchanged) == ["odd", "sub/small"]


def test_one_run_per_output(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with (
        LocalExecutor(TinyLoader()) as ex,
        ResumableRun(str(archive), str(out), _cfg(), executor=ex, run_id="first"),
        pytest.raises(RunLockedError, match=r"run 'first' \(host .*, pid \d+\)"),
    ):
        run_resumable(str(archive), str(out), _cfg(), executor=ex, run_id="second")
    assert HgnStore(str(out), {}).read("lock.json") is None  # released on exit


def test_other_settings_refused_unless_overwrite(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with LocalExecutor(TinyLoader()) as ex:
        assert run_resumable(str(archive), str(out), _cfg(), executor=ex).run.ok
        with pytest.raises(LedgerMismatchError, match="chunk: 128 -> 256"):
            run_resumable(str(archive), str(out), _cfg(chunk=256), executor=ex)
        res = run_resumable(str(archive), str(out), _cfg(chunk=256, overwrite=True), executor=ex)
    assert res.run.ok and sorted(res.changes.new) == ["odd", "sub/small"]
    assert res.units_reused == 0
    attrs = json.loads((out / "odd.ome.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["hgn"]["writer"]["chunk"] == [256, 256]
    assert os.path.exists(out / "_hgn" / "ledger" / "current.json")

"""Data-parallel training through Ray Train on CPU (gloo): ranks agree, the loss falls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from make_train_fixtures import inria_classes, write_inria

from hgn_model.checkpoint import read_config

pytestmark = [pytest.mark.ray]


def _config(tmp_path: Path, **over) -> Path:
    """train.yaml of a tiny HGN on Inria-style pairs, training checkpoints to run/model."""
    root = write_inria(tmp_path / "inria")
    cfg = {"model": "hgn", "model_cfg": {"width": 0.125}, "crop": 128, "batch_size": 2,
           "threads": 1, "log_every": 1, "seed": 0,
           "data": {"kind": "pairs", "root": str(root), "image": "images/{id}.tif",
                    "mask": "gt/{id}.tif", "nodata": 0},
           "classes": inria_classes(), "train_ids": ["tyrol1", "tyrol2"],
           "output": str(tmp_path / "run" / "model"), **over}
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return config


def test_two_workers_end_with_identical_weights_and_a_falling_loss(tmp_path: Path) -> None:
    config = _config(tmp_path, steps=30, checkpoint_every=15, val_ids=["vienna1"])
    # Token auth off for this private, loopback-only test cluster (as the other Ray tests do).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-c", "from pipeline.cli import app; app()", "train", "--config",
         str(config), "--workers", "2"], capture_output=True, text=True, env=env, timeout=600,
        check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    final = read_config(tmp_path / "run" / "model")
    digests = final.training["weights_sha256_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert "2 worker(s)" in final.training["machine"]
    lines = (tmp_path / "run" / "model_train" / "metrics.jsonl").read_text().splitlines()
    losses = [r["loss"] for r in map(json.loads, lines) if "loss" in r]
    assert len(losses) >= 30 and np.mean(losses[-6:]) < np.mean(losses[:6])
    assert (tmp_path / "run" / "model_train" / "step_00000015.state.json").exists()


@pytest.mark.slow
def test_a_killed_worker_restarts_the_group_from_the_last_checkpoint(tmp_path: Path) -> None:
    """SIGKILL one Ray Train worker after the first checkpoint: the run still finishes."""
    import signal
    import time

    from bench._proc import descendants

    config = _config(tmp_path, steps=60, checkpoint_every=10)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    log = (tmp_path / "train.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from pipeline.cli import app; app()", "train", "--config",
         str(config), "--workers", "2"], stdout=log, stderr=subprocess.STDOUT, env=env)
    state = tmp_path / "run" / "model_train"
    deadline = time.time() + 300
    while not (state / "step_00000010.state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.5)
    victims = [pid for pid in descendants(proc.pid)
               if "RayTrainWorker" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
                   errors="replace")]
    assert victims, "no Ray Train worker process found"
    os.kill(victims[-1], signal.SIGKILL)
    assert proc.wait(timeout=600) == 0, (tmp_path / "train.log").read_text()[-3000:]
    text = (tmp_path / "train.log").read_text()
    assert "resumed from step" in text
    final = read_config(tmp_path / "run" / "model")
    assert final.training["steps_done"] == 60

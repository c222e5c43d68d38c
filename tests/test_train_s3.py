"""Training from and to S3 (a real SeaweedFS server): data read in windows, state written,
resumed from there; credentials never land in the checkpoint."""

from __future__ import annotations

import json

import pytest
from make_train_fixtures import inria_classes, write_inria

from hgn_model.train import train, validate_train_config

pytestmark = [pytest.mark.s3]


def test_train_reads_pairs_on_s3_and_keeps_its_state_there(s3_server, tmp_path) -> None:
    local = write_inria(tmp_path / "inria")
    bucket = s3_server.make_bucket("hgn-train")
    fs = s3_server.filesystem()
    fs.put(str(local), "hgn-train/inria", recursive=True)
    opts = s3_server.storage_options
    raw = {"model": "hgn", "model_cfg": {"width": 0.125}, "crop": 128, "batch_size": 2,
           "threads": 1, "log_every": 1, "seed": 0, "steps": 4, "checkpoint_every": 2,
           "data": {"kind": "pairs", "root": f"{bucket}/inria", "image": "images/{id}.tif",
                    "mask": "gt/{id}.tif", "nodata": 0, "storage_options": opts},
           "classes": inria_classes(), "train_ids": ["tyrol1", "tyrol2"],
           "val_ids": ["vienna1"], "output": f"{bucket}/runs/model",
           "output_storage_options": opts}
    _, first = train(validate_train_config(raw), log=lambda m: None)
    names = {p.rsplit("/", 1)[-1] for p in fs.ls("hgn-train/runs/model_train")}
    assert {"step_00000002.state.json", "step_00000004.state.json", "best.json",
            "metrics.jsonl"} <= names
    text = fs.cat("hgn-train/runs/model.json").decode()
    assert json.loads(text)["sha256"] == first.sha256
    secret = opts["secret"]
    assert secret not in text and secret not in fs.cat(
        "hgn-train/runs/model_train/step_00000004.json").decode()
    logs: list[str] = []
    _, more = train(validate_train_config({**raw, "steps": 6}), log=logs.append, resume=True)
    assert any("resumed from step 4" in m for m in logs)
    assert more.training["steps_done"] == 6

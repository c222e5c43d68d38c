"""Training as users run it: train -> checkpoint -> evaluate -> run, resume, fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from make_train_fixtures import inria_classes, write_all
from safetensors.numpy import load_file
from typer.testing import CliRunner

from hgn_model.checkpoint import load_checkpoint, read_config
from hgn_model.train import train, validate_train_config

runner = CliRunner()
TINY = {"model": "hgn", "model_cfg": {"width": 0.125}, "crop": 128, "batch_size": 2,
        "threads": 1, "log_every": 1, "seed": 0}


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("train-fixtures"))


def _inria_yaml(fx, tmp: Path, **over) -> Path:
    cfg = {**TINY, "data": {"kind": "pairs", "root": str(fx["inria"]),
                            "image": "images/{id}.tif", "mask": "gt/{id}.tif", "nodata": 0},
           "classes": inria_classes(), "train_ids": ["tyrol1", "tyrol2"],
           "val_ids": ["vienna1"], "steps": 40, "output": str(tmp / "run" / "model"), **over}
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _metrics(stem: Path) -> list[dict]:
    lines = (Path(f"{stem}_train") / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def inria_run(fx, tmp_path_factory) -> tuple[Path, Path]:
    """One CLI training run on the Inria-style pairs (the checks' field names)."""
    from pipeline.cli import app

    tmp = tmp_path_factory.mktemp("inria-run")
    config = _inria_yaml(fx, tmp)
    res = runner.invoke(app, ["train", "--config", str(config), "--steps", "40"])
    assert res.exit_code == 0, res.output
    return config, tmp / "run" / "model"


def test_train_cli_writes_a_checkpoint_with_the_class_table_and_stats(inria_run) -> None:
    _, stem = inria_run
    cfg = read_config(stem)
    assert [(c.name, c.id, c.ignore) for c in cfg.classes][:2] == [("forest", 10, False),
                                                                  ("plantation", 15, False)]
    assert cfg.classes[-1].ignore and cfg.classes[-1].id == 255
    norm = cfg.input.normalization[0]
    assert norm.dtype == "uint16" and cfg.input.bands == 4
    assert min(lo for lo, _ in norm.value_range) >= 1  # nodata (0) excluded from the stats
    assert cfg.training["config"]["steps"] == 40 and cfg.training["steps_done"] == 40
    assert {"miou", "pixel_accuracy", "per_class_iou", "confusion_matrix"} <= set(cfg.metrics)
    losses = [m["loss"] for m in _metrics(stem) if "loss" in m]
    assert np.mean(losses[-8:]) < np.mean(losses[:8])  # the loss falls
    model, _ = load_checkpoint(stem)
    assert model is not None


def test_evaluate_cli_on_the_training_yaml(inria_run, tmp_path: Path) -> None:
    from pipeline.cli import app

    config, stem = inria_run
    out = tmp_path / "eval.json"
    res = runner.invoke(app, ["evaluate", "--checkpoint", str(stem), "--data", str(config),
                              "--split", "val", "--json", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert {"miou", "pixel_accuracy", "per_class_iou", "confusion_matrix"} <= set(result)
    assert result["split"] == "val" and result["regions"] == 1
    k = len(result["per_class_iou"])
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (k, k) and cm[-1].sum() == 0  # the ignored class is never counted
    assert 0 <= result["miou"] <= 100 and 0 <= result["pixel_accuracy"] <= 100
    # the same numbers as the metrics the training run stored for its val split
    assert result["miou"] == read_config(stem).metrics["miou"]


def test_run_segments_with_the_users_class_names(inria_run, fx, tmp_path: Path) -> None:
    from pipeline.cli import app
    from pipeline.query import OutputStore

    _, stem = inria_run
    out = tmp_path / "labels"
    res = runner.invoke(app, ["run", "-i", str(fx["inria"] / "images"), "-o", str(out),
                              "--local", "--set", f"checkpoint={stem}", "--set", "chunk=256",
                              "--set", "halo=32"])
    assert res.exit_code == 0, res.output
    scene = OutputStore(str(out)).scene("tyrol1")
    assert [name for name, _ in scene.classes] == [c["name"] for c in sorted(
        inria_classes(), key=lambda c: c["id"])]
    corner = scene.read(box=(0, 60, 0, 60))  # inside the nodata wedge (x + y < 128)
    assert not corner.any()  # nodata is label 0, as the pipeline writes it
    assert scene.georef is not None or scene.describe().get("georeference")


@pytest.mark.parametrize("data_threads", [1, 2])
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
        fx, tmp_path: Path, data_threads: int) -> None:
    """Also with prefetching data threads (the CUDA default), whose draws run a step ahead."""
    raw = yaml.safe_load(_inria_yaml(fx, tmp_path, steps=6, checkpoint_every=3,
                                     data_threads=data_threads).read_text())
    raw.pop("val_ids")
    whole = validate_train_config({**raw, "output": str(tmp_path / "a" / "m")})
    train(whole, log=lambda m: None)

    cut = validate_train_config({**raw, "output": str(tmp_path / "b" / "m")})

    class Killed(Exception):
        pass

    def progress(record: dict) -> None:
        if record["step"] == 5:  # dies after the step-3 checkpoint, mid-way to the next
            raise Killed

    with pytest.raises(Killed):
        train(cut, log=lambda m: None, progress=progress)
    assert not (tmp_path / "b" / "m.safetensors").exists()
    saved = json.loads((tmp_path / "b" / "m_train" / "step_00000003.state.json").read_text())
    _, final = train(cut, log=lambda m: None, resume=True)
    # the recorded wall time adds the killed process's steps to the resumed ones
    assert final.training["train_seconds"] >= saved["train_seconds"] > 0
    a = load_file(str(tmp_path / "a" / "m.safetensors"))
    b = load_file(str(tmp_path / "b" / "m.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_state_of_an_earlier_layout_is_refused_naming_the_file(fx, tmp_path: Path) -> None:
    """Resuming it would restart the RNG streams and the EMA bank: refuse, say how to go on."""
    from hgn_model.errors import CheckpointError

    raw = yaml.safe_load(_inria_yaml(fx, tmp_path, steps=3, checkpoint_every=3).read_text())
    cfg = validate_train_config({**raw, "output": str(tmp_path / "m")})
    train(cfg, log=lambda m: None)
    state = next((tmp_path / "m_train").glob("step_*.state.json"))
    meta = json.loads(state.read_text())
    meta.pop("ranks")  # as the first training-state layout wrote it
    state.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"state\.json has no ranks.*without --resume"):
        train(validate_train_config({**raw, "output": str(tmp_path / "m"), "steps": 5}),
              log=lambda m: None, resume=True)


def test_fine_tune_five_bands_from_a_three_band_checkpoint(fx, tmp_path: Path) -> None:
    base = validate_train_config({**TINY, "data": {"kind": "zarr", "root": str(fx["zarr"])},
                                  "steps": 2, "output": str(tmp_path / "rgb")})
    _, src_cfg = train(base, log=lambda m: None)
    assert src_cfg.input.bands == 3
    logs: list[str] = []
    five = validate_train_config({**TINY, "data": {"kind": "zarr", "root": str(fx["zarr5"])},
                                  "steps": 2, "init_from": str(tmp_path / "rgb"),
                                  "output": str(tmp_path / "five")})
    _, cfg = train(five, log=logs.append)
    assert cfg.input.bands == 5 and cfg.input.normalization[0].dtype == "uint16"
    text = "\n".join(logs)
    assert "stem adapted to 5 bands (from 3)" in text and "deep.stem.0.0.weight" in text
    old, _ = load_checkpoint(tmp_path / "rgb")
    new, _ = load_checkpoint(tmp_path / "five")
    # every layer after the stem starts from the 3-band weights (2 steps move them a little)
    w_old = old.state_dict()["deep.layer4.1.conv2.0.weight"]
    w_new = new.state_dict()["deep.layer4.1.conv2.0.weight"]
    assert float((w_old - w_new).abs().max()) < 0.05


def test_fine_tune_onto_a_new_class_table_reinitialises_the_heads(fx, tmp_path: Path) -> None:
    base = validate_train_config({**TINY, "data": {"kind": "zarr", "root": str(fx["zarr"])},
                                  "steps": 1, "output": str(tmp_path / "bench")})
    train(base, log=lambda m: None)
    logs: list[str] = []
    cfg = yaml.safe_load(_inria_yaml(fx, tmp_path, steps=1).read_text())
    cfg["data"]["bands"] = [0, 1, 2]
    cfg.update(init_from=str(tmp_path / "bench"), output=str(tmp_path / "user"))
    cfg.pop("val_ids")
    train(validate_train_config(cfg), log=logs.append)
    text = "\n".join(logs)
    assert "re-initialised" in text and "head.weight" in text


def test_batch_of_one_trains(fx, tmp_path: Path) -> None:
    cfg = validate_train_config({**TINY, "batch_size": 1, "steps": 2,
                                 "data": {"kind": "zarr", "root": str(fx["zarr"])},
                                 "output": str(tmp_path / "one")})
    _, final = train(cfg, log=lambda m: None)
    assert final.training["steps_done"] == 2


def test_device_side_augmentation_equals_the_cpu_path() -> None:
    """On accelerators the float work moves to the device: same draws, same tensors."""
    import torch

    from hgn_model.data.sampling import Batcher, ClassIndex, ContextSampler
    from hgn_model.data.source import SyntheticSource
    from hgn_model.input_spec import Normalization
    from hgn_model.training.feed import _device_tensors, _tensors

    src = SyntheticSource([5], 768)
    index = ClassIndex.build(src, src.scenes, 10)
    norms = {"uint8": Normalization(dtype="uint8", mean=[100.0, 110.0, 90.0],
                                    std=[50.0, 45.0, 40.0], value_range=[(0.0, 250.0)] * 3)}

    def batcher() -> Batcher:
        rng = np.random.default_rng(4)
        return Batcher(src, ContextSampler(src.scenes, index, 512, 0.5, rng), 128, 2, 0.5,
                       250.0, rng)

    cpu, dev = batcher(), batcher()
    for _ in range(3):
        a, b = cpu.sample(), dev.sample_raw()
        xa, ya, da = _tensors([a], norms, "uint8", 128, torch.device("cpu"))
        xb, yb, db = _device_tensors([b], norms, 128, 250.0, torch.device("cpu"))
        torch.testing.assert_close(xa, xb, atol=1e-5, rtol=1e-5)
        assert torch.equal(ya, yb) and da == db


def test_evaluate_cli_on_a_zarr_folder_and_on_benchmark_seeds(fx, tmp_path: Path) -> None:
    from pipeline.cli import app

    cfg = validate_train_config({**TINY, "data": {"kind": "zarr", "root": str(fx["zarr"])},
                                 "steps": 1, "output": str(tmp_path / "z")})
    train(cfg, log=lambda m: None)
    for data in (str(fx["zarr"]), "2000"):
        out = tmp_path / f"{Path(data).name}.json"
        res = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "z"), "--data",
                                  data, "--size", "256", "--json", str(out)])
        assert res.exit_code == 0, res.output
        result = json.loads(out.read_text())
        assert {"miou", "pixel_accuracy", "per_class_iou", "confusion_matrix"} <= set(result)
    res = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "z"), "--data",
                              "nonsense"])
    assert res.exit_code != 0 and "expected a training YAML" in res.output

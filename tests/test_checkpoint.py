"""Checkpoints: round trip, hash verification, pickle refusal, arch/shape mismatch messages."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from hgn_model import (
    CheckpointConfig,
    CheckpointError,
    ClassInfo,
    Segmenter,
    create_model,
    load_checkpoint,
    save_checkpoint,
)
from hgn_model.checkpoint import FORMAT, SHIPPED_DIR, InputSpec, Normalization, read_config


def _config(arch: str = "hgn", width: float = 0.125, bands: int = 3) -> CheckpointConfig:
    return CheckpointConfig(
        arch=arch, model_cfg={"width": width},
        classes=[ClassInfo(name=n, color=(10 * i, 0, 0, 255), id=i * 10, ignore=n == "c")
                 for i, n in enumerate("abc")],
        input=InputSpec(bands=bands, normalization=[
            Normalization(dtype="uint8", mean=[100.0] * bands, std=[50.0] * bands,
                          value_range=[(1.0, 250.0)] * bands),
            Normalization(dtype="uint16", mean=[9000.0] * bands, std=[4000.0] * bands,
                          value_range=[(80.0, 30000.0)] * bands)]),
        metrics={"miou": 1.0},
    )


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module, CheckpointConfig]:
    torch.manual_seed(0)
    model = create_model("hgn", 3, width=0.125).eval()
    cfg = save_checkpoint(model, _config(), tmp_path / "m")
    return tmp_path / "m", model, cfg


def test_round_trip_gives_identical_weights_and_predictions(saved) -> None:
    stem, model, cfg = saved
    assert len(cfg.sha256) == 64 and cfg.package_version
    for form in (stem, stem.with_suffix(".safetensors"), stem.with_suffix(".json")):
        loaded, lcfg = load_checkpoint(form)
        assert lcfg == cfg
        for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
    img = np.random.default_rng(0).integers(0, 255, (3, 90, 110), dtype=np.uint8)
    a = Segmenter(model, cfg, device="cpu").predict(img).labels
    b = Segmenter.from_checkpoint(stem, device="cpu").predict(img).labels
    assert np.array_equal(a, b)


def test_format_2_json_carries_normalization_entries_and_the_class_table(saved) -> None:
    stem, _, _ = saved
    raw = json.loads(stem.with_suffix(".json").read_text())
    assert raw["format"] == FORMAT == "hgn-checkpoint/2"
    assert [n["dtype"] for n in raw["input"]["normalization"]] == ["uint8", "uint16"]
    assert raw["input"]["normalization"][1]["value_range"][0] == [80.0, 30000.0]
    assert [(c["id"], c["ignore"]) for c in raw["classes"]] == [(0, False), (10, False),
                                                                (20, True)]
    assert read_config(stem).input.normalization_for("uint16").top == 30000.0


def test_format_1_checkpoint_loads_and_labels_as_format_1_did(tmp_path: Path) -> None:
    """A v1 file (format-1 architecture; mean/std in [0, 1] units, uint16_max) keeps its
    exact uint8 outputs."""
    from hgn_model.registry import format1_settings

    torch.manual_seed(0)
    model = create_model("hgn", 3, width=0.125, **format1_settings("hgn")).eval()
    stem = tmp_path / "v1"
    save_checkpoint(model, _config(), stem)
    raw = json.loads(stem.with_suffix(".json").read_text())
    mean, std = [0.41, 0.47, 0.36], [0.21, 0.17, 0.15]
    raw["format"] = "hgn-checkpoint/1"
    raw["input"] = {"bands": 3, "band_names": [], "mean": mean, "std": std,
                    "uint16_max": 4095.0}
    for c in raw["classes"]:
        del c["id"], c["ignore"]
    stem.with_suffix(".json").write_text(json.dumps(raw))
    seg = Segmenter.from_checkpoint(stem, device="cpu")
    assert [n.dtype for n in seg.config.input.normalization] == ["uint8", "uint16", "float32"]
    assert seg.config.input.normalization_for("uint16").top == 4095.0
    img = np.random.default_rng(1).integers(0, 255, (3, 128, 256), dtype=np.uint8)  # no padding
    # the format-1 code: x / 255, then (x - mean) / std, in float32 in this order
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    x = torch.from_numpy(np.array(img.transpose(1, 2, 0), np.float32)).permute(2, 0, 1)[None]
    x = x.mul_(1.0 / (255.0 * s)).sub_(m / s)
    _, _, old = seg._infer(x, (128, 256), False, True)
    np.testing.assert_array_equal(seg.predict(img, return_probs=True).probs, old[0])


def test_fp16_storage_halves_the_file_and_loads_as_float32(tmp_path: Path) -> None:
    model = create_model("hgn", 3, width=0.125)
    save_checkpoint(model, _config(), tmp_path / "f32")
    cfg16 = save_checkpoint(model, _config(), tmp_path / "f16", weights_dtype="float16")
    s32 = (tmp_path / "f32.safetensors").stat().st_size
    s16 = (tmp_path / "f16.safetensors").stat().st_size
    assert s16 < 0.6 * s32 and cfg16.weights_dtype == "float16"
    loaded, _ = load_checkpoint(tmp_path / "f16")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_tampered_weights_are_refused(saved) -> None:
    stem, _, _ = saved
    weights = stem.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"sha256 .* does not match"):
        load_checkpoint(stem)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl", ".ckpt"])
def test_pickle_files_are_refused_by_name(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)


def test_pickle_bytes_behind_a_safetensors_name_are_refused(saved) -> None:
    stem, _, _ = saved

    class Boom:
        def __reduce__(self):  # would run code if anything unpickled it
            return (exec, ("raise SystemExit('unpickled!')",))

    stem.with_suffix(".safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(stem)


def test_unknown_format_and_missing_files(saved, tmp_path: Path) -> None:
    stem, _, _ = saved
    raw = json.loads(stem.with_suffix(".json").read_text())
    raw["format"] = "someone-else/9"
    stem.with_suffix(".json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="unknown format 'someone-else/9'"):
        load_checkpoint(stem)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent")


def test_arch_and_shape_mismatch_name_the_tensor(saved) -> None:
    stem, _, _ = saved
    raw = json.loads(stem.with_suffix(".json").read_text())
    raw["model_cfg"] = {"width": 0.25}
    stem.with_suffix(".json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"tensor '.*' has shape"):
        load_checkpoint(stem)
    raw["arch"] = "deep_only"
    raw["model_cfg"] = {"width": 0.125}
    stem.with_suffix(".json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="does not fit arch 'deep_only'"):
        load_checkpoint(stem)
    raw["arch"] = "vit_giant"
    stem.with_suffix(".json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="'vit_giant' is not registered"):
        load_checkpoint(stem)


def test_config_rejects_unknown_fields(saved) -> None:
    stem, _, _ = saved
    raw = json.loads(stem.with_suffix(".json").read_text())
    raw["surprise"] = 1
    stem.with_suffix(".json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="surprise"):
        read_config(stem)


@pytest.mark.parametrize("name", ["hgn", "isdnet_like", "deep_only"])
def test_shipped_checkpoints_verify_and_carry_their_metrics(name: str) -> None:
    path = SHIPPED_DIR / f"{name}.safetensors"
    assert path.exists(), f"shipped checkpoint {path} is missing (run `make train`)"
    assert path.stat().st_size <= 20 * 2**20
    _, cfg = load_checkpoint(path)
    assert cfg.arch == name and cfg.num_classes == 10
    assert {"miou", "miou_excl_0", "per_class_iou", "thin_miou"} <= set(cfg.metrics)
    assert cfg.training["data_fingerprint"].startswith("synthetic-")
    # Shared budget: every shipped model saw the same steps and crops.
    budget = {k: cfg.training["config"][k] for k in ("steps", "crop", "batch_size")}
    ref = read_config(SHIPPED_DIR / "hgn.json").training["config"]
    assert budget == {k: ref[k] for k in budget}


def test_demo_and_benchmark_scenes_are_held_out_from_training() -> None:
    """The demo's and bench/model.py's IoU must come from seeds the models never saw."""
    from bench.model import EVAL_SEEDS
    from pipeline.ops.demo import DEMO_SCENES

    train = read_config(SHIPPED_DIR / "hgn.json").training["config"]["data"]["train_seeds"]
    assert not ({s for s, *_ in DEMO_SCENES} | set(EVAL_SEEDS)) & set(train)


def test_a_header_length_ending_in_0x80_is_not_taken_for_a_pickle(tmp_path: Path) -> None:
    """safetensors starts with its header length; a low byte of 0x80 is a valid file."""
    from safetensors.torch import save_file

    from hgn_model.checkpoint import _looks_pickled

    for n in range(1, 400):  # find tensor names giving a header length = 0x80 mod 256
        path = tmp_path / "w.safetensors"
        save_file({"x" * n: torch.zeros(1)}, str(path))
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no header length ending in 0x80 found")
    assert not _looks_pickled(path)
    (tmp_path / "p.safetensors").write_bytes(pickle.dumps({"a": 1}))
    assert _looks_pickled(tmp_path / "p.safetensors")

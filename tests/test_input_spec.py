"""Contract C1: per-dtype normalisation entries, format-1 conversion, range_problem."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from hgn_model.checkpoint import SHIPPED_DIR, InputSpec, Normalization, read_config


def _entry(dtype: str, hi: float, bands: int = 3, lo: float = 0.0) -> Normalization:
    return Normalization(dtype=dtype, mean=[(lo + hi) / 2] * bands, std=[(hi - lo) / 4] * bands,
                         value_range=[(lo, hi)] * bands)


def _observed(img: np.ndarray) -> list[tuple[float, float]]:
    flat = img.reshape(img.shape[0], -1).astype(np.float64)
    return [(float(a), float(b)) for a, b in np.percentile(flat, [0.1, 99.9], axis=1).T]


def test_format_1_spec_converts_into_uint8_uint16_float32_entries() -> None:
    spec = InputSpec(bands=2, mean=[0.4, 0.5], std=[0.2, 0.1], uint16_max=4095.0)
    assert [n.dtype for n in spec.normalization] == ["uint8", "uint16", "float32"]
    u8, u16, f32 = spec.normalization
    assert u8.mean == pytest.approx([102.0, 127.5]) and u8.std == pytest.approx([51.0, 25.5])
    assert u16.mean == pytest.approx([0.4 * 4095, 0.5 * 4095]) and u16.top == 4095.0
    assert f32.mean == [0.4, 0.5] and f32.top == 1.0
    assert spec.normalization_for("uint8") is u8
    assert spec.normalization_for("float64") is f32  # floats stay in float units
    # integers: the nearest width, same signedness first (int16 DN are uint16's units)
    assert spec.normalization_for("int16") is u16 and spec.normalization_for("int8") is u8
    assert spec.normalization_for("uint32") is u16 and spec.normalization_for("int32") is u16


def test_normalization_entries_are_validated() -> None:
    with pytest.raises(ValidationError, match="std must be > 0"):
        Normalization(dtype="uint8", mean=[1.0], std=[0.0], value_range=[(0, 255)])
    with pytest.raises(ValidationError, match="one entry per band"):
        Normalization(dtype="uint8", mean=[1.0, 2.0], std=[1.0], value_range=[(0, 255)])
    with pytest.raises(ValidationError, match="real integer or float"):
        Normalization(dtype="complex64", mean=[1.0], std=[1.0], value_range=[(0, 255)])
    with pytest.raises(ValidationError, match="has 1 bands, the input has 3"):
        InputSpec(bands=3, normalization=[_entry("uint8", 255, bands=1)])
    with pytest.raises(ValidationError):
        InputSpec(bands=3, normalization=[])


def test_range_problem_flags_unit_mismatches_both_ways() -> None:
    u8_model = InputSpec(bands=3, normalization=[_entry("uint8", 250.0)])
    unit_floats = [(0.01, 0.93), (0.02, 0.95), (0.0, 0.9)]
    msg = u8_model.range_problem("float32", unit_floats)
    assert msg is not None and msg.count(". ") == 0  # one sentence
    assert "0..0.95" in msg and "0..250" in msg and "`value_max: 1`" in msg
    assert u8_model.range_problem("float32", unit_floats, value_max=1.0) is None

    f_model = InputSpec(bands=3, normalization=[_entry("float32", 1.0)])
    byte_floats = [(3.0, 240.0), (1.0, 251.0), (0.0, 233.0)]
    msg = f_model.range_problem("float32", byte_floats)
    assert msg is not None and "`value_max: 255`" in msg and "0..1" in msg
    assert f_model.range_problem("float32", byte_floats, value_max=255) is None


def test_range_problem_flags_dn_order_of_magnitude_mismatches() -> None:
    u16_model = InputSpec(bands=3, normalization=[_entry("uint8", 250.0),
                                                  _entry("uint16", 61000.0)])
    twelve_bit = [(12.0, 3900.0), (30.0, 4095.0), (5.0, 3500.0)]
    msg = u16_model.range_problem("uint16", twelve_bit)
    assert msg is not None and "`value_max: 4095`" in msg and "61000" in msg
    assert u16_model.range_problem("uint16", twelve_bit, value_max=4095) is None
    # uint16 DN into a model whose uint16 entry expects 12-bit data: too bright
    tb_model = InputSpec(bands=3, normalization=[_entry("uint16", 4000.0)])
    assert "`value_max: 65535`" in tb_model.range_problem("uint16", [(0, 64000.0)] * 3)
    # far below the training range (signed data into an unsigned model)
    assert tb_model.range_problem("int16", [(-30000.0, 3000.0)] * 3) is not None


def test_range_problem_passes_plausible_scenes() -> None:
    spec = InputSpec(bands=3, normalization=[_entry("uint8", 250.0)])
    assert spec.range_problem("uint8", [(0, 255)] * 3) is None
    assert spec.range_problem("uint8", [(2, 60)] * 3) is None  # a dark scene (water, shade)
    assert spec.range_problem("uint8", [(7, 7)] * 3) is None  # constant: no scale to judge
    assert spec.range_problem("uint8", []) is None


@pytest.mark.parametrize("name", ["hgn", "isdnet_like", "deep_only"])
def test_shipped_checkpoints_accept_their_training_demo_and_benchmark_scenes(name: str) -> None:
    from bench.model import EVAL_SEEDS
    from hgn_model.data.synthetic import generate_scene
    from pipeline.ops.demo import DEMO_SCENES

    cfg = read_config(SHIPPED_DIR / f"{name}.json")
    train = cfg.training["config"]["data"]
    scenes = [(s, train["dtype"]) for s in train["train_seeds"][:2]]
    scenes += [(s, dt) for s, _, _, dt in DEMO_SCENES] + [(s, "uint8") for s in EVAL_SEEDS[:2]]
    for seed, dtype in scenes:
        img = generate_scene(seed, 384, 384, cfg.input.bands, dtype).image
        for observed in (_observed(img), [(float(b.min()), float(b.max())) for b in img]):
            problem = cfg.input.range_problem(dtype, observed)
            assert problem is None, f"{name}: seed {seed} ({dtype}): {problem}"

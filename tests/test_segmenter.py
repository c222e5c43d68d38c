"""Segmenter: any size, every dtype, nodata masks, bands via config, determinism, and one clear
error per bad input (contract C1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hgn_model import CheckpointConfig, ClassInfo, InputError, Segmenter, create_model
from hgn_model.checkpoint import InputSpec, Normalization


def _segmenter(bands: int = 3, uint16_max: float = 65535.0, arch: str = "hgn",
               spec: InputSpec | None = None) -> Segmenter:
    torch.manual_seed(0)
    model = create_model(arch, 4, in_channels=bands, width=0.125)
    # Nudge BN statistics off their defaults so the fused inference path is exercised.
    model.train()
    with torch.no_grad():
        model.forward_train(torch.randn(2, bands, 128, 128))
    # Format-1 style spec (mean/std in [0, 1] units): converted into per-dtype entries.
    spec = spec or InputSpec(bands=bands, mean=[0.5] * bands, std=[0.25] * bands,
                             uint16_max=uint16_max)
    cfg = CheckpointConfig(
        arch=arch, model_cfg={"width": 0.125},
        classes=[ClassInfo(name=f"c{i}", color=(i, i, i, 255)) for i in range(4)],
        input=spec,
    )
    return Segmenter(model, cfg, device="cpu")


def _entry(dtype: str, mean: float, std: float, hi: float, bands: int = 3) -> Normalization:
    return Normalization(dtype=dtype, mean=[mean] * bands, std=[std] * bands,
                         value_range=[(0.0, hi)] * bands)


# uint8 default; uint16 data 8x the uint8 units; float data in [0, 1]. The same scene in each
# dtype's units normalises to the same values, so labels must agree.
V2_SPEC = InputSpec(bands=3, normalization=[
    _entry("uint8", 127.5, 63.75, 255.0), _entry("uint16", 1020.0, 510.0, 2040.0),
    _entry("float32", 0.5, 0.25, 1.0),
])


class _Probe(torch.nn.Module):
    """A 'network' whose logits are a local mean of its normalised input, one class per band.

    Every input pixel moves the output of its 5 x 5 neighbourhood, so normalisation errors and
    fill values that reach the network show up in the probabilities (an untrained HGN's
    softmax is nearly flat, which would hide them).
    """

    size_divisor = 8

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        gain = torch.tensor([4.0, 2.0, -4.0]).view(1, 3, 1, 1)  # a common shift moves softmax too
        return {"out": gain * torch.nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False)}


@pytest.fixture(scope="module")
def seg2() -> Segmenter:
    cfg = CheckpointConfig(
        arch="deep_only", classes=[ClassInfo(name=f"c{i}", color=(i, i, i, 255)) for i in range(3)],
        input=V2_SPEC)
    return Segmenter(_Probe(), cfg, device="cpu")


def test_ignore_classes_are_never_predicted() -> None:
    """A table's ignored class (say "nodata", id 0) got no training signal: never an output."""
    classes = [ClassInfo(name=f"c{i}", color=(i, i, i, 255), ignore=i == 0) for i in range(3)]
    seg = Segmenter(_Probe(), CheckpointConfig(arch="deep_only", classes=classes, input=V2_SPEC),
                    device="cpu")
    plain = Segmenter(_Probe(), CheckpointConfig(
        arch="deep_only", classes=[c.model_copy(update={"ignore": False}) for c in classes],
        input=V2_SPEC), device="cpu")
    img = _scene_u8(3, (64, 80))
    img[0, :32] = 255  # band 0 drives class 0's logit: its top half is class 0 unmasked
    assert (plain.predict(img).labels == 0).mean() > 0.3
    out = seg.predict(img, return_confidence=True, return_probs=True)
    assert not (out.labels == 0).any() and not out.probs[0].any()  # probs: (K, H, W)
    assert np.isfinite(out.probs).all() and out.confidence.min() > 0


def _scene_u8(seed: int = 10, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    # values in 0..127 fit every integer dtype, int8 included
    return np.random.default_rng(seed).integers(0, 128, (3, *shape), dtype=np.uint8)


def _in_entry_units(u8: np.ndarray, dtype: str) -> np.ndarray:
    """``u8`` in the units of the entry ``dtype`` is normalised with (V2_SPEC): floats 0-1,
    integers of 16 bits and wider uint16's x8 (their nearest entry), 8-bit integers as is."""
    if np.dtype(dtype).kind == "f":
        return (u8 / 255.0).astype(dtype)
    return u8.astype(dtype) * (8 if np.dtype(dtype).itemsize >= 2 else 1)


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    return _segmenter()


@pytest.mark.parametrize("shape", [(1000, 1333), (77, 3001), (1, 1), (1, 300), (129, 127)])
def test_any_size_gives_labels_of_the_same_size(seg: Segmenter, shape: tuple[int, int]) -> None:
    img = np.random.default_rng(0).integers(0, 255, (3, *shape), dtype=np.uint8)
    out = seg.predict(img, return_confidence=True, return_probs=True)
    assert out.labels.shape == shape and out.labels.dtype == np.uint8
    assert out.confidence.shape == shape and out.confidence.dtype == np.uint8
    assert out.probs.shape == (4, *shape)
    assert np.allclose(out.probs.sum(0), 1.0, atol=1e-4)
    assert np.array_equal(out.labels, out.probs.argmax(0))
    expected_conf = np.round(out.probs.max(0) * 255)
    assert np.abs(out.confidence.astype(int) - expected_conf).max() <= 1


def test_full_deepglobe_size(seg: Segmenter) -> None:
    img = np.random.default_rng(1).integers(0, 255, (3, 2448, 2448), dtype=np.uint8)
    assert seg.predict(img).labels.shape == (2448, 2448)


def test_deterministic_and_batch_invariant(seg: Segmenter) -> None:
    rng = np.random.default_rng(2)
    batch = rng.integers(0, 255, (3, 3, 200, 260), dtype=np.uint8)
    a = seg.predict(batch).labels
    b = seg.predict(batch).labels
    singles = np.stack([seg.predict(im).labels for im in batch])
    assert a.shape == (3, 200, 260)
    assert np.array_equal(a, b) and np.array_equal(a, singles)


def test_uint16_and_float_inputs_scale_like_uint8(seg: Segmenter) -> None:
    img8 = np.random.default_rng(3).integers(0, 255, (3, 130, 140), dtype=np.uint8)
    ref = seg.predict(img8).labels
    as16 = img8.astype(np.uint16) * 257  # 255 * 257 == 65535
    assert np.array_equal(seg.predict(as16).labels, ref)
    as_float = (img8.astype(np.float32) / 255.0)
    assert (seg.predict(as_float).labels == ref).mean() > 0.999
    twelve_bit = (img8.astype(np.uint16) * 4095 // 255).astype(np.uint16)
    assert (seg.predict(twelve_bit, value_max=4095).labels == ref).mean() > 0.99


def test_four_band_uint16_checkpoint() -> None:
    seg4 = _segmenter(bands=4, uint16_max=4095.0)
    img = np.random.default_rng(4).integers(0, 4096, (4, 150, 170), dtype=np.uint16)
    assert seg4.predict(img).labels.shape == (150, 170)
    with pytest.raises(InputError, match="3 bands but the checkpoint expects 4"):
        seg4.predict(img[:3])


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((1, 64, 64), np.uint8), "1 bands but the checkpoint expects 3"),
        (np.zeros((5, 64, 64), np.uint8), "5 bands but the checkpoint expects 3"),
        (np.zeros((3, 0, 64), np.uint8), "zero-size"),
        (np.zeros((3, 64, 64), bool), "dtype bool"),
        (np.zeros((3, 64, 64), np.complex64), "dtype complex64"),
        (np.zeros((3, 64, 64), "datetime64[s]"), "dtype datetime64"),
        (np.zeros((64, 64), np.uint8), "expected shape"),
    ],
)
def test_bad_input_gets_one_clear_error(seg: Segmenter, image: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        seg.predict(image)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused_with_their_location(seg: Segmenter, bad: float) -> None:
    img = np.zeros((3, 32, 32), np.float32)
    img[1, 5, 7] = bad
    with pytest.raises(InputError, match=r"band 1, y=5, x=7"):
        seg.predict(img)


def test_empty_batch_is_refused(seg: Segmenter) -> None:
    with pytest.raises(InputError, match="empty batch"):
        seg.predict([])


@pytest.mark.parametrize("arch", ["isdnet_like", "deep_only"])
def test_baselines_run_through_the_same_api(arch: str) -> None:
    out = _segmenter(arch=arch).predict(np.zeros((3, 77, 301), np.uint8))
    assert out.labels.shape == (77, 301)


def test_input_arrays_are_never_modified() -> None:
    seg1 = _segmenter(bands=1)
    # 128 x 256 needs no padding: the one case where a float view could alias the input.
    img = np.random.default_rng(5).random((1, 128, 256), dtype=np.float32)
    before = img.copy()
    seg1.predict(img)
    np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize(
    "dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float16", "float32",
              "float64"])
def test_every_real_dtype_uses_its_normalization_entry(seg2: Segmenter, dtype: str) -> None:
    """Each dtype is normalised by its own entry (or its family's nearest), never its maximum."""
    u8 = _scene_u8()
    ref = seg2.predict(u8, return_probs=True).probs
    img = _in_entry_units(u8, dtype)
    kind, size = np.dtype(dtype).kind, np.dtype(dtype).itemsize
    assert seg2.config.input.normalization_for(dtype).dtype == (
        "float32" if kind == "f" else "uint16" if size >= 2 else "uint8")
    # probabilities, not labels: an untrained net's labels are nearly constant
    err = np.abs(seg2.predict(img, return_probs=True).probs - ref).max()
    assert err < (2e-2 if dtype == "float16" else 1e-4), f"{dtype}: max prob error {err}"


def test_value_max_maps_the_scene_onto_the_top_of_the_training_range(seg2: Segmenter) -> None:
    u8 = _scene_u8()
    ref = seg2.predict(u8, return_probs=True).probs
    # 12-bit data whose 4095 corresponds to the uint16 entry's top (2040)
    twelve = np.round(u8.astype(np.float64) * 8 * 4095 / 2040).astype(np.uint16)
    scaled = seg2.predict(twelve, value_max=4095, return_probs=True).probs
    unscaled = seg2.predict(twelve, return_probs=True).probs  # another image to the network
    assert np.abs(scaled - ref).max() < 0.05 < np.abs(unscaled - ref).max()


@pytest.mark.parametrize(("dtype", "fill"), [("float32", -99999), ("int32", -99999),
                                            ("int16", -32768), ("float64", np.nan)])
def test_nodata_fill_values_never_reach_the_network(seg2: Segmenter, dtype: str, fill) -> None:
    img = _in_entry_units(_scene_u8(11, (128, 160)), dtype)
    mean = np.array(seg2.config.input.normalization_for(dtype).mean).reshape(3, 1, 1)
    valid = np.ones((128, 160), bool)
    valid[40:60, 70:95] = False  # a nodata hole ...
    valid[:, :12] = False  # ... and a nodata border touching the reflect-padded edge
    filled = img.copy()
    filled[:, ~valid] = fill
    as_mean = img.astype(np.float64).copy()
    as_mean[:, ~valid] = np.broadcast_to(mean, (3, 128, 160))[:, ~valid]
    a = seg2.predict(filled, return_confidence=True, return_probs=True, valid_mask=valid)
    b = seg2.predict(as_mean.astype(dtype), return_confidence=True, return_probs=True,
                     valid_mask=valid)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    np.testing.assert_array_equal(a.probs, b.probs)
    assert not a.labels[~valid].any() and not a.confidence[~valid].any()
    assert not a.probs[:, ~valid].any()
    assert a.confidence[valid].min() > 0
    if np.isfinite(fill):  # without the mask the fill value reaches the network
        unmasked = seg2.predict(filled, return_probs=True).probs
        assert np.abs(unmasked[:, valid] - a.probs[:, valid]).max() > 0.01


def test_all_nodata_skips_the_forward_pass(seg2: Segmenter, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("the network ran on an all-nodata image")

    monkeypatch.setattr(seg2, "_infer", boom)
    img = np.full((3, 50, 70), -99999, np.float32)
    out = seg2.predict(img, return_confidence=True, return_probs=True,
                       valid_mask=np.zeros((50, 70), bool))
    assert out.labels.shape == (50, 70) and not out.labels.any()
    assert not out.confidence.any() and out.probs.shape == (3, 50, 70) and not out.probs.any()


def test_batch_masks_apply_per_image(seg2: Segmenter) -> None:
    batch = np.stack([_scene_u8(s, (64, 96)) for s in (1, 2, 3)])
    masks = np.ones((3, 64, 96), bool)
    masks[1] = False  # image 1 entirely nodata
    masks[2, :10] = False
    out = seg2.predict(batch, return_confidence=True, return_probs=True, valid_mask=masks)
    np.testing.assert_array_equal(out.probs[0], seg2.predict(batch[0], return_probs=True).probs)
    assert not out.labels[1].any() and not out.confidence[1].any()
    assert not out.confidence[2, :10].any() and out.confidence[2, 10:].min() > 0
    listed = seg2.predict(list(batch), valid_mask=[None, masks[1], masks[2]]).labels
    np.testing.assert_array_equal(listed, out.labels)


def test_nan_at_a_valid_pixel_names_band_y_x_and_nan_at_nodata_is_fine(seg2: Segmenter) -> None:
    img = (_scene_u8(12, (40, 50)) / 255.0).astype(np.float32)
    img[2, 31, 17] = np.nan
    with pytest.raises(InputError, match=r"band 2, y=31, x=17") as info:
        seg2.predict(img)
    assert (info.value.band, info.value.y, info.value.x) == (2, 31, 17)
    valid = np.ones((40, 50), bool)
    valid[31, 17] = False
    out = seg2.predict(img, valid_mask=valid)
    assert out.labels[31, 17] == 0
    img[0, 3, 4] = np.inf  # still one at a valid pixel
    with pytest.raises(InputError) as info:
        seg2.predict(img, valid_mask=valid)
    assert (info.value.band, info.value.y, info.value.x) == (0, 3, 4)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.ones((40, 51), bool), r"shape \(40, 51\) does not match"),
        (np.ones((40, 50), np.uint8), "expected a bool array"),
    ],
)
def test_bad_masks_are_refused(seg2: Segmenter, mask: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        seg2.predict(_scene_u8(13, (40, 50)), valid_mask=mask)

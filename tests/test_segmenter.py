"""Segmenter: any size, dtypes, bands via config, determinism, and one clear error per bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hgn_model import CheckpointConfig, ClassInfo, InputError, Segmenter, create_model
from hgn_model.checkpoint import InputSpec


def _segmenter(bands: int = 3, uint16_max: float = 65535.0, arch: str = "hgn") -> Segmenter:
    torch.manual_seed(0)
    model = create_model(arch, 4, in_channels=bands, width=0.125)
    # Nudge BN statistics off their defaults so the fused inference path is exercised.
    model.train()
    with torch.no_grad():
        model.forward_train(torch.randn(2, bands, 128, 128))
    cfg = CheckpointConfig(
        arch=arch, model_cfg={"width": 0.125},
        classes=[ClassInfo(name=f"c{i}", color=(i, i, i, 255)) for i in range(4)],
        input=InputSpec(bands=bands, mean=[0.5] * bands, std=[0.25] * bands,
                        uint16_max=uint16_max),
    )
    return Segmenter(model, cfg, device="cpu")


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
        (np.zeros((3, 64, 64), np.int64), "dtype int64"),
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

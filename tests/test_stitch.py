"""Reflection padding and halo cropping, including the degenerate shapes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.plan import Pad, plan_scene
from pipeline.stitch import crop_core, model_input, reflect_pad


def _reference_reflect(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """1-D reflection by walking an index back and forth: the definition, written slowly."""
    n = len(a)
    out = []
    for i in range(-before, n + after):
        j = i
        if n == 1:
            j = 0
        while j < 0 or j >= n:
            j = -j if j < 0 else 2 * (n - 1) - j
        out.append(a[j])
    return np.array(out)


def test_reflect_does_not_repeat_the_edge():
    a = np.arange(4, dtype=np.uint8)[None, :]
    out = reflect_pad(a, Pad(left=2, right=3))
    assert out[0].tolist() == [2, 1, 0, 1, 2, 3, 2, 1, 0]


@pytest.mark.parametrize(
    ("shape", "pad"),
    [
        ((1, 7), Pad(5, 5, 3, 3)),  # 1 x N: the single row repeats
        ((7, 1), Pad(2, 9, 4, 4)),
        ((1, 1), Pad(10, 10, 10, 10)),
        ((2, 3), Pad(9, 1, 0, 13)),  # pads several times the size
        ((77, 3001), Pad(256, 256, 256, 0)),
    ],
)
def test_reflect_matches_the_definition(shape, pad):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, size=(2, *shape), dtype=np.uint8)
    out = reflect_pad(a, pad)
    assert out.shape == (2, shape[0] + pad.top + pad.bottom, shape[1] + pad.left + pad.right)
    rows = _reference_reflect(np.arange(shape[0]), pad.top, pad.bottom)
    cols = _reference_reflect(np.arange(shape[1]), pad.left, pad.right)
    np.testing.assert_array_equal(out, a[:, rows][:, :, cols])
    # The original sits untouched at the pad offset.
    np.testing.assert_array_equal(
        out[:, pad.top : pad.top + shape[0], pad.left : pad.left + shape[1]], a
    )


def test_reflect_rejects_bad_input():
    with pytest.raises(ValueError, match="empty axis"):
        reflect_pad(np.zeros((3, 0, 4)), Pad(1, 1, 1, 1))
    with pytest.raises(ValueError, match="negative"):
        reflect_pad(np.zeros((3, 4)), Pad(-1, 0, 0, 0))
    a = np.zeros((3, 4))
    assert reflect_pad(a, Pad()) is a


@pytest.mark.parametrize(("h", "w"), [(77, 3001), (1, 300), (300, 1), (1000, 700)])
def test_pad_infer_crop_reassembles_the_scene(h, w):
    """An identity 'model' through pad -> crop must give back the scene exactly."""
    rng = np.random.default_rng(1)
    scene = rng.integers(0, 60000, size=(3, h, w), dtype=np.uint16)
    out = np.zeros((3, h, w), np.uint16)
    for u in plan_scene("s", h, w, chunk=128, halo=40):
        win = scene[:, u.window.y0 : u.window.y1, u.window.x0 : u.window.x1]
        x = model_input(win, u)
        assert x.shape[-2:] == u.input_shape
        core = crop_core(x, u)
        out[:, u.core.y0 : u.core.y1, u.core.x0 : u.core.x1] = core
    np.testing.assert_array_equal(out, scene)


def test_shape_mismatches_name_the_unit():
    u = plan_scene("scene-7", 100, 100, chunk=64, halo=8).unit(0, 0)
    with pytest.raises(ValueError, match=r"scene-7#r0c0.*window"):
        model_input(np.zeros((3, 10, 10)), u)
    with pytest.raises(ValueError, match=r"scene-7#r0c0.*prediction"):
        crop_core(np.zeros((10, 10)), u)

"""Window padding and halo cropping: pure numpy, the two ends of every work unit.

Seams are avoided by *halo + centre crop*: each unit's model input is its core plus ``halo``
pixels of real context (reflected at scene edges), and only the core of the prediction is kept.
Label ids are never blended; the core is written as predicted.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import WindowError
from pipeline.plan import Pad, WorkUnit

__all__ = ["crop_core", "model_input", "reflect_pad"]


def reflect_pad(window: np.ndarray, pad: Pad) -> np.ndarray:
    """Pad the last two axes of ``window`` by reflection (edge pixel not repeated).

    ``d c b | a b c d | c b a``. Pads larger than the array keep reflecting back and forth
    (numpy's ``"reflect"``: periodic with period ``2 * (n - 1)``), and an axis of length 1
    repeats its single pixel, so tiny and 1 x N scenes pad to any size.
    """
    if window.ndim < 2:
        raise WindowError(f"window has shape {window.shape}; need at least 2 dims (..., H, W)")
    if window.shape[-2] == 0 or window.shape[-1] == 0:
        raise WindowError(f"window has shape {window.shape}; cannot reflect an empty axis")
    if min(pad.top, pad.bottom, pad.left, pad.right) < 0:
        raise WindowError(f"pad {pad} has a negative side; pads are pixels to add, >= 0")
    if not pad.any:
        return window
    widths = [(0, 0)] * (window.ndim - 2) + [(pad.top, pad.bottom), (pad.left, pad.right)]
    return np.pad(window, widths, mode="reflect")


def model_input(window: np.ndarray, unit: WorkUnit) -> np.ndarray:
    """The padded model input of ``unit`` from its in-bounds window ``(C, h, w)``."""
    expected = (unit.window.height, unit.window.width)
    if tuple(window.shape[-2:]) != expected:
        raise WindowError(
            f"unit {unit.unit_id}: window read has shape {window.shape[-2:]}, "
            f"the plan expects {expected}"
        )
    return reflect_pad(window, unit.pad)


def crop_core(prediction: np.ndarray, unit: WorkUnit) -> np.ndarray:
    """Keep the core of a prediction ``(..., H, W)`` over the padded input of ``unit``."""
    if tuple(prediction.shape[-2:]) != unit.input_shape:
        raise WindowError(
            f"unit {unit.unit_id}: prediction has shape {prediction.shape[-2:]}, "
            f"the padded input was {unit.input_shape}"
        )
    c = unit.core_in_input
    return prediction[..., c.y0 : c.y1, c.x0 : c.x1]

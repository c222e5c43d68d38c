"""Band statistics of training pixels -> the checkpoint's normalisation entries (contract C1).

A sample is enough: ``windows_per_scene`` random windows of up to ``window`` px from every
training scene, every ``step``-th pixel of them, nodata excluded. Mean and std per band in raw
units, and the p0.1 / p99.9 percentiles as the value range (robust to a few hot pixels).
Class frequencies for the CE weights come from the class index instead (labels only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hgn_model.data.source import SceneRef, Source
from hgn_model.input_spec import Normalization

__all__ = ["PERCENTILES", "measure_normalization", "sample_pixels"]

PERCENTILES = (0.1, 99.9)


def sample_pixels(source: Source, scenes: Sequence[SceneRef], rng: np.random.Generator,
                  windows_per_scene: int = 8, window: int = 512, step: int = 7) -> np.ndarray:
    """(C, M) float64 training pixels (nodata excluded) from random windows of each scene."""
    parts = []
    for ref in scenes:
        wh, ww = min(window, ref.height), min(window, ref.width)
        for _ in range(windows_per_scene):
            y0 = int(rng.integers(0, ref.height - wh + 1))
            x0 = int(rng.integers(0, ref.width - ww + 1))
            win = source.read(ref.id, y0, y0 + wh, x0, x0 + ww)
            px = win.image.reshape(win.image.shape[0], -1)[:, ::step]
            if win.valid is not None:
                px = px[:, win.valid.reshape(-1)[::step]]
            parts.append(px.astype(np.float64))
    pixels = np.concatenate(parts, axis=1) if parts else np.zeros((0, 0))
    if pixels.size == 0:
        names = [s.id for s in scenes][:5]
        raise ValueError(f"no valid (non-nodata) pixels in the training scenes {names}; check "
                         "the nodata value and the scenes")
    return pixels


def measure_normalization(pixels: np.ndarray, dtype: str) -> Normalization:
    """One C1 entry from (C, M) raw training pixels of ``dtype``."""
    finite = np.isfinite(pixels).all(axis=0)
    px = pixels[:, finite]
    lo, hi = np.percentile(px, PERCENTILES, axis=1)
    std = px.std(axis=1)
    # a constant band (std 0) still needs a divisor: its span, else 1 raw unit
    std = np.where(std > 0, std, np.maximum(hi - lo, 1.0))
    return Normalization(
        dtype=dtype, mean=[float(v) for v in px.mean(axis=1)], std=[float(v) for v in std],
        value_range=[(float(a), float(b)) for a, b in zip(lo, hi, strict=True)],
    )

"""Noise fields and the small numeric helpers the scene layers share.

Every helper that draws takes the caller's ``np.random.Generator``: the draws and their order
are part of the generator's output (see ``GENERATOR_VERSION``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi


def _cubic_taps(n: int, cell: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """First grid index and the 4 Catmull-Rom weights of upsampling ``n`` px by ``cell``."""
    pos = (np.arange(n, dtype=np.float64) + 0.5) / cell + 1.0  # grid padded by a cell or more
    i0 = np.floor(pos).astype(np.intp)
    t = pos - i0
    t2, t3 = t * t, t * t * t
    weights = [
        (-t3 + 2 * t2 - t) / 2,
        (3 * t3 - 5 * t2 + 2) / 2,
        (-3 * t3 + 4 * t2 + t) / 2,
        (t3 - t2) / 2,
    ]
    return i0 - 1, [wk.astype(np.float32) for wk in weights]


def _smooth_gain(sigma: float) -> float:
    """Factor restoring unit std after a 2-D Gaussian filter of white noise."""
    delta = np.zeros(41)
    delta[20] = 1.0
    k = ndi.gaussian_filter1d(delta, sigma)
    return float(1.0 / np.sum(k**2))  # 2-D variance = (sum k^2)^2, so std = sum k^2


_SMOOTH_GAIN = _smooth_gain(0.8)


def _noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth stationary noise, ~unit std, correlation length ~``cell`` px; cost O(h * w).

    A Gaussian-smoothed random grid, upsampled with separable cubic (Catmull-Rom)
    interpolation: bilinear would leave creases along the grid lines and polygonal contours.
    """
    gh, gw = math.ceil(h / cell) + 4, math.ceil(w / cell) + 4
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    grid = ndi.gaussian_filter(grid, 0.8, mode="wrap") * np.float32(_SMOOTH_GAIN)
    ix, wx = _cubic_taps(w, cell)
    iy, wy = _cubic_taps(h, cell)
    rows = grid[:, ix] * wx[0]
    for k in range(1, 4):
        rows += grid[:, ix + k] * wx[k]
    out = rows[iy] * wy[0][:, None]
    for k in range(1, 4):
        tmp = rows[iy + k]
        tmp *= wy[k][:, None]
        out += tmp
    return out


def _blur3(x: np.ndarray, a: float) -> None:
    """In-place separable [a, 1 - 2a, a] blur of a 2-D float32 array (reflected edges)."""
    for arr in (x, x.T):
        if arr.shape[1] < 2:
            continue
        first = (1.0 - a) * arr[:, 0] + a * arr[:, 1]
        last = (1.0 - a) * arr[:, -1] + a * arr[:, -2]
        if arr.shape[1] >= 3:
            side = arr[:, :-2] + arr[:, 2:]
            side *= np.float32(a)
            arr[:, 1:-1] *= np.float32(1.0 - 2.0 * a)
            arr[:, 1:-1] += side
        arr[:, 0] = first
        arr[:, -1] = last


def _top_fraction(values: np.ndarray, frac: float) -> float:
    """Threshold above which ``frac`` of ``values`` lie (exact order statistic)."""
    n = values.size
    k = min(n - 1, max(0, round(n * (1.0 - frac))))
    return float(np.partition(values, k)[k])


def _bilinear_at(small: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear value of a 1/4-resolution field at full-resolution pixels (ys, xs)."""
    h4, w4 = small.shape

    def index(p: np.ndarray, n4: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((p.astype(np.float32) + 0.5) * 0.25 - 0.5, 0, n4 - 1)
        i0 = pos.astype(np.intp)
        return i0, np.minimum(i0 + 1, n4 - 1), pos - i0

    y0, y1, wy = index(ys, h4)
    x0, x1, wx = index(xs, w4)
    top = small[y0, x0] * (1.0 - wx) + small[y0, x1] * wx
    bottom = small[y1, x0] * (1.0 - wx) + small[y1, x1] * wx
    return top * (1.0 - wy) + bottom * wy


def _full_nonzero(mask4: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution pixel coordinates of the 4x4 blocks flagged in a 1/4-resolution mask."""
    full = np.repeat(np.repeat(mask4, 4, axis=0), 4, axis=1)[:h, :w]
    return np.nonzero(full)

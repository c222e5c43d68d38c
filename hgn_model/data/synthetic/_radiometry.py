"""Radiometry: class 0 (clouds, no-data), nuisances, band composition, sensor noise, quantising.

Scenes are composed in float32 reflectance-like values in [0, 1] and quantised at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ._noise import _bilinear_at, _blur3, _full_nonzero, _noise, _top_fraction
from ._texture import _T_CROP

_CLOUD_COVER = (0.003, 0.03)
_NODATA_PROB = 0.3
_CLOUD_RGBN = np.array([0.93, 0.94, 0.96, 0.85], dtype=np.float32)


def _class0(
    rng: np.random.Generator, h: int, w: int
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray, float]:
    """Clouds and no-data, the content of class 0.

    Returns the cloud pixels (ys, xs), their opacity in (0, 1], a no-data mask (an exact-zero
    corner, as at the edge of a satellite swath) and the drawn cloud cover.
    """
    h4, w4 = math.ceil(h / 4), math.ceil(w / 4)
    f = _noise(rng, h4, w4, 80.0) + 0.5 * _noise(rng, h4, w4, 20.0)
    cover = float(rng.uniform(*_CLOUD_COVER))
    thr = _top_fraction(f.ravel(), cover)
    soft = 0.2  # field units from opacity 0 to 0.5: the soft cloud edge
    # opacity is 0 wherever the four interpolation nodes are all below thr - soft
    ys, xs = _full_nonzero(ndi.maximum_filter(f > thr - soft, 3), h, w)
    alpha = np.clip((_bilinear_at(f, ys, xs) - thr) * (0.5 / soft) + 0.5, 0.0, 1.0)
    keep = alpha > 0
    ys, xs, alpha = ys[keep], xs[keep], alpha[keep].astype(np.float32)
    has_nodata = rng.random() < _NODATA_PROB
    legs = rng.uniform(0.12, 0.3, 2)
    corner = int(rng.integers(0, 4))
    nodata = np.zeros((h, w), dtype=bool)
    if has_nodata:
        yy = np.arange(h, dtype=np.float32)[:, None] / h
        xx = np.arange(w, dtype=np.float32)[None, :] / w
        if corner & 1:
            xx = 1.0 - xx
        if corner & 2:
            yy = 1.0 - yy
        nodata = xx / np.float32(legs[0]) + yy / np.float32(legs[1]) < 1.0
    return (ys, xs), alpha, nodata, cover


@dataclass
class _Nuisance:
    """Per-scene sensor and atmosphere draws (per band: gain, offset, haze; scalars else)."""

    gain: np.ndarray
    offset: np.ndarray
    haze: np.ndarray
    grad: list[float]
    blur: float
    read_noise: float
    shot_noise: float


def _nuisance(
    rng: np.random.Generator, mod: np.ndarray, h: int, w: int, nuisances: bool
) -> _Nuisance:
    """Draw the nuisances (always, so a seed draws the same either way) and shade ``mod``.

    With ``nuisances`` the illumination (a linear gradient plus low-frequency shading) is
    multiplied into ``mod``; without, gain is 1 and offset and haze are 0.
    """
    gain = rng.uniform(0.88, 1.12, 4).astype(np.float32)
    offset = rng.uniform(-0.02, 0.02, 4).astype(np.float32)
    haze = rng.uniform(0.0, 0.05) * np.array([1.0, 1.05, 1.2, 0.6], dtype=np.float32)
    grad = [float(g) for g in rng.uniform(-0.2, 0.2, 2)]
    shading = _noise(rng, h, w, 400.0)
    blur = float(rng.uniform(0.08, 0.2))
    read_noise = float(rng.uniform(0.004, 0.01))
    shot_noise = float(rng.uniform(0.002, 0.006))
    if nuisances:
        shading *= np.float32(0.04)
        shading += np.float32(1.0 - 0.5 * grad[0] - 0.5 * grad[1])
        shading += np.float32(grad[0] / h) * np.arange(h, dtype=np.float32)[:, None]
        shading += np.float32(grad[1] / w) * np.arange(w, dtype=np.float32)[None, :]
        mod *= shading
    else:
        gain[:] = 1.0
        offset[:] = 0.0
        haze[:] = 0.0
    return _Nuisance(gain, offset, haze, grad, blur, read_noise, shot_noise)


def _compose(
    tex: np.ndarray,
    mod: np.ndarray,
    table: np.ndarray,
    crop_col: np.ndarray,
    crop_cell: np.ndarray,
    nuis: _Nuisance,
    bands: int,
    nuisances: bool,
) -> np.ndarray:
    """(bands, H, W) float32: base colour (per-field colour on crops) x ``mod``, + path radiance."""
    h, w = tex.shape
    img = np.empty((bands, h, w), dtype=np.float32)
    crop_flat = np.flatnonzero(tex == _T_CROP)
    crop_rgbn = crop_col[crop_cell[crop_cell >= 0]]
    gain, offset, haze = nuis.gain, nuis.offset, nuis.haze
    for b in range(bands):
        base = (table[:, b] * gain[b])[tex]
        base.ravel()[crop_flat] = crop_rgbn[:, b] * gain[b]
        np.multiply(base, mod, out=img[b])
        if nuisances:  # haze is additive path radiance, not shaded by the ground
            img[b] += offset[b] + haze[b]
    return img


def _add_clouds(
    img: np.ndarray, cloud_yx: tuple[np.ndarray, np.ndarray], cloud: np.ndarray
) -> None:
    """Blend the cloud colour over ``img`` in place with opacity ``cloud`` at ``cloud_yx``."""
    for b in range(img.shape[0]):
        img[b][cloud_yx] = img[b][cloud_yx] * (1.0 - cloud) + _CLOUD_RGBN[b] * cloud


def _sensor(img: np.ndarray, noise_rngs: list[np.random.Generator], nuis: _Nuisance) -> None:
    """Optical blur, then signal-dependent noise, in place; band ``b`` draws from rng ``b``."""
    h, w = img.shape[1:]
    root12 = math.sqrt(12.0)  # uniform noise of unit std
    for b in range(img.shape[0]):
        _blur3(img[b], nuis.blur)
        # signal-dependent noise std: read noise + a share of the signal (shot-noise-like)
        sigma = img[b] * np.float32(nuis.shot_noise * root12)
        sigma += np.float32(nuis.read_noise * root12)
        u = noise_rngs[b].random((h, w), dtype=np.float32)
        u -= 0.5
        u *= sigma
        img[b] += u


def _quantise(img: np.ndarray, dt: np.dtype, depth: int) -> tuple[np.ndarray, int]:
    """Clip ``img`` to [0, 1] and round to ``depth``-bit integers of ``dt``; also the maximum."""
    value_max = (1 << depth) - 1
    np.clip(img, 0.0, 1.0, out=img)
    img *= np.float32(value_max)
    img += 0.5
    return img.astype(dt), value_max

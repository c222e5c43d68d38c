"""Appearance of the ground: a texture entry per pixel and its multiplicative modulation.

A pixel's value is ``base * mod`` with ``mod = 1 + sum(amp_k * field_k)`` over a fine, a mid
and a coarse noise field, plus class-specific patterns (urban blocks, crop rows) and building
shadows. Forest and plantation share one entry, so they are locally identical by construction.
"""

from __future__ import annotations

import math

import numpy as np

from ._layout import _Fields
from ._noise import _noise

# texture entries: base R, G, B, NIR and amplitudes of the fine / mid / coarse noise fields,
# applied multiplicatively: value = base * (1 + sum(amp_k * field_k)).
_T_URBAN, _T_CROP, _T_TRACK, _T_RANGE, _T_TREES, _T_WATER, _T_RIVER = range(7)
_T_PAVED, _T_DIRT, _T_ROOF = 7, 8, 9  # _T_ROOF + i: roof colour i
_TEXTURES = np.array(
    [  # R     G     B     NIR   fine  mid   coarse
        [0.44, 0.42, 0.40, 0.30, 0.10, 0.06, 0.08],  # urban fabric (+ block pattern)
        [0.00, 0.00, 0.00, 0.00, 0.05, 0.05, 0.06],  # crops: colour per field (+ row stripes)
        [0.42, 0.47, 0.30, 0.45, 0.08, 0.08, 0.06],  # grass tracks between fields
        [0.52, 0.49, 0.35, 0.42, 0.06, 0.10, 0.12],  # rangeland
        [0.17, 0.25, 0.14, 0.58, 0.14, 0.38, 0.06],  # tree canopy: forest AND plantation
        [0.08, 0.15, 0.21, 0.04, 0.015, 0.01, 0.08],  # lake water
        [0.22, 0.27, 0.25, 0.10, 0.03, 0.02, 0.05],  # river water (muddier)
        [0.56, 0.56, 0.57, 0.27, 0.04, 0.02, 0.05],  # paved road
        [0.70, 0.61, 0.48, 0.36, 0.05, 0.03, 0.05],  # dirt road
        [0.66, 0.30, 0.22, 0.28, 0.03, 0.02, 0.02],  # roof: terracotta
        [0.84, 0.83, 0.80, 0.60, 0.03, 0.02, 0.02],  # roof: light concrete
        [0.28, 0.29, 0.33, 0.20, 0.03, 0.02, 0.02],  # roof: dark slate
        [0.46, 0.56, 0.66, 0.40, 0.03, 0.02, 0.02],  # roof: blue metal
    ],
    dtype=np.float32,
)
_N_ROOFS = len(_TEXTURES) - _T_ROOF
_TEX_OF_CLASS = np.array(
    [
        _T_RANGE,
        _T_URBAN,
        _T_CROP,
        _T_RANGE,
        _T_TREES,
        _T_TREES,
        _T_WATER,
        _T_PAVED,
        _T_RIVER,
        _T_ROOF,
    ],
    dtype=np.uint8,
)  # the shared _T_TREES entry is what makes forest and plantation locally identical
_URBAN_BLOCK_PX, _URBAN_BLOCK_AMP = 10.0, 0.16  # built-up fabric: blocks on the street grid
_SHADOW_GAIN = 0.55  # buildings cast shadows on the ground


def _texture_ids(labels: np.ndarray, roads: np.ndarray, roof: np.ndarray) -> np.ndarray:
    """(H, W) uint8 texture entry per pixel: by class, dirt roads and each roof's colour."""
    roof_px = roof > 0
    tex = _TEX_OF_CLASS[labels]
    tex[roads == 2] = _T_DIRT
    tex[roof_px] = (_T_ROOF - 1 + roof[roof_px]).astype(np.uint8)
    return tex


def _modulation(
    rng: np.random.Generator, tex: np.ndarray, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-scene jittered texture table and ``sum(amp_k * field_k)`` of the three noise fields."""
    table = _TEXTURES.copy()
    table[:, :4] *= rng.normal(1.0, 0.04, (len(table), 4)).astype(np.float32)
    fine = rng.random((h, w), dtype=np.float32)
    fine -= 0.5
    fine *= np.float32(math.sqrt(12.0))
    mid = _noise(rng, h, w, 4.0)
    coarse = _noise(rng, h, w, 48.0)
    mod = np.ascontiguousarray(table[:, 4])[tex] * fine
    mod += np.ascontiguousarray(table[:, 5])[tex] * mid
    mod += np.ascontiguousarray(table[:, 6])[tex] * coarse
    return table, mod


def _urban_blocks(
    rng: np.random.Generator, tex: np.ndarray, mod: np.ndarray, street_angle: float
) -> None:
    """Add the built-up fabric to ``mod``: a block pattern aligned with the street grid."""
    block_values = rng.normal(0.0, 1.0, 4096).astype(np.float32)  # drawn even without a town
    urban = tex == _T_URBAN
    if urban.any():
        ys, xs = np.nonzero(urban)
        c, s = math.cos(street_angle), math.sin(street_angle)
        bu = np.floor((xs * c + ys * s) / _URBAN_BLOCK_PX).astype(np.int64)
        bv = np.floor((ys * c - xs * s) / _URBAN_BLOCK_PX).astype(np.int64)
        mod[urban] += _URBAN_BLOCK_AMP * block_values[(bu * 7919 + bv * 104729) % 4096]


def _crop_rows(tex: np.ndarray, mod: np.ndarray, fields: _Fields) -> np.ndarray:
    """Add crop row stripes to ``mod`` and turn field edges into grass tracks in ``tex``.

    Returns the field cell of every crop pixel (in ``np.nonzero`` order), -1 on tracks.
    """
    crop = tex == _T_CROP
    crop_cell = np.zeros(0, dtype=np.intp)
    if not crop.any():
        return crop_cell
    grid = fields.grid
    nv = len(grid.v_edges) - 1
    ys, xs = np.nonzero(crop)
    u, v = grid.uv(xs.astype(np.float32), ys.astype(np.float32))
    iu, iv = grid.cell(u, v)
    crop_cell = iu * nv + iv
    ue, ve = grid.u_edges.astype(np.float32), grid.v_edges.astype(np.float32)
    edge = np.minimum(
        np.minimum(u - ue[iu], ue[iu + 1] - u), np.minimum(v - ve[iv], ve[iv + 1] - v)
    )
    coord = np.where(fields.stripe_axis[crop_cell] == 0, u, v)
    coord *= fields.stripe_freq[crop_cell]
    coord += fields.stripe_phase[crop_cell]
    stripes = fields.stripe_amp[crop_cell] * np.sin(coord)
    track = edge < fields.track_half
    stripes[track] = 0.0
    mod[crop] += stripes
    crop_cell = np.where(track, -1, crop_cell)
    tex_crop = tex[crop]
    tex_crop[track] = _T_TRACK
    tex[crop] = tex_crop
    return crop_cell


def _ground(
    rng: np.random.Generator,
    labels: np.ndarray,
    roads: np.ndarray,
    roof: np.ndarray,
    shadow: np.ndarray,
    fields: _Fields,
    street_angle: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Texture ids, modulation ``mod`` (>= 0, shadows applied), texture table, crop cells."""
    h, w = labels.shape
    tex = _texture_ids(labels, roads, roof)
    table, mod = _modulation(rng, tex, h, w)
    _urban_blocks(rng, tex, mod, street_angle)
    crop_cell = _crop_rows(tex, mod, fields)
    mod += 1.0
    shadow_idx = np.flatnonzero((shadow > 0) & ~(roof > 0))
    mod.ravel()[shadow_idx] *= np.float32(_SHADOW_GAIN)
    return tex, mod, table, crop_cell

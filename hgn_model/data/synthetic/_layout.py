"""Landscape layout: region zones, the agricultural field grid and its plantation parcels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from ._classes import AGRICULTURE, CLASSES, FOREST, RANGELAND, URBAN, WATER
from ._noise import _bilinear_at, _full_nonzero, _noise, _top_fraction

# px at full resolution
# zone fields: (class, noise cell of the main field); a larger cell gives larger regions
_ZONE_ORDER = ((AGRICULTURE, 320), (FOREST, 224), (WATER, 224), (URBAN, 192))
_ZONE_TARGET = {WATER: 0.07, URBAN: 0.13, FOREST: 0.21, AGRICULTURE: 0.33}  # rest: rangeland
_ZONE_DIRICHLET = 25.0  # concentration of per-scene zone shares around the targets
_ZONE_DETAIL = 0.35  # weight of the 4x finer noise that roughens region borders
_PARCEL_U, _PARCEL_V = (180.0, 420.0), (120.0, 360.0)  # field sizes along the two grid axes
PLANTATION_FOREST_GAP = 64  # px: a plantation parcel never comes closer to forest than this
_PLANTATION_PROB = (0.25, 0.5)  # per-scene chance that an eligible parcel is a plantation
_PLANTATION_AGRI_SHARE = 0.5  # an eligible parcel is at least this much farmland
_TRACK_HALF = (1.5, 3.0)  # half width of the grass tracks between fields (px)
_CROPS = np.array(
    [  # R     G     B     NIR
        [0.30, 0.42, 0.20, 0.62],  # green crop
        [0.44, 0.52, 0.29, 0.50],  # young crop
        [0.70, 0.62, 0.38, 0.40],  # ripe grain
        [0.46, 0.37, 0.28, 0.24],  # ploughed soil
        [0.62, 0.57, 0.46, 0.33],  # stubble
    ],
    dtype=np.float32,
)


def _zones(
    rng: np.random.Generator, h4: int, w4: int
) -> tuple[np.ndarray, list[tuple[int, np.ndarray, float]], dict[str, float]]:
    """Region classes at 1/4 resolution: each zone takes the top share of its own noise field.

    Returns the 1/4-resolution map, the (class, field, threshold) steps that made it (replayed
    at full resolution by ``_zones_full``) and the drawn zone shares.
    """
    classes = [c for c, _ in _ZONE_ORDER]
    target = np.array([_ZONE_TARGET[c] for c in classes] + [1.0 - sum(_ZONE_TARGET.values())])
    shares = rng.dirichlet(_ZONE_DIRICHLET * target)
    fields = [
        _noise(rng, h4, w4, cell / 4) + _ZONE_DETAIL * _noise(rng, h4, w4, cell / 16)
        for _, cell in _ZONE_ORDER
    ]
    zone = np.full((h4, w4), RANGELAND, dtype=np.uint8)
    free = np.ones((h4, w4), dtype=bool)
    steps = []
    left = 1.0
    for cls, share, f in zip(classes, shares, fields, strict=False):
        vals = f[free]
        if vals.size == 0:
            break
        thr = _top_fraction(vals, min(1.0, share / left))
        take = free & (f >= thr)
        zone[take] = cls
        free &= ~take
        steps.append((cls, f, thr))
        left = max(left - share, 1e-6)
    return (
        zone,
        steps,
        {CLASSES[c].name: round(float(s), 4) for c, s in zip(classes, shares, strict=False)},
    )


def _zones_full(
    zone4: np.ndarray, steps: list[tuple[int, np.ndarray, float]], h: int, w: int
) -> np.ndarray:
    """Replay the zone assignment at full resolution on bilinearly interpolated fields.

    Exact and cheap: where a 1/4-resolution pixel and its 8 neighbours share one zone, every
    interpolated value is a convex combination of values that pass (or fail) the same
    thresholds, so only blocks on zone borders need evaluating. Borders come out as smooth
    curves instead of 4 px staircases.
    """
    zone = np.repeat(np.repeat(zone4, 4, axis=0), 4, axis=1)[:h, :w].copy()
    border = ndi.maximum_filter(zone4, 3) != ndi.minimum_filter(zone4, 3)
    ys, xs = _full_nonzero(border, h, w)
    sub = np.full(ys.shape, RANGELAND, dtype=np.uint8)
    free = np.ones(ys.shape, dtype=bool)
    for cls, f, thr in steps:
        take = _bilinear_at(f, ys, xs) >= thr
        take &= free
        sub[take] = cls
        free &= ~take
    zone[ys, xs] = sub
    return zone


@dataclass
class _Grid:
    """The rotated field grid of the agricultural zones."""

    cos: float
    sin: float
    u_edges: np.ndarray
    v_edges: np.ndarray

    def uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x * self.cos + y * self.sin, y * self.cos - x * self.sin

    def xy(self, u: float, v: float) -> tuple[float, float]:
        return u * self.cos - v * self.sin, u * self.sin + v * self.cos

    def cell(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        iu = np.clip(np.searchsorted(self.u_edges, u, side="right") - 1, 0, len(self.u_edges) - 2)
        iv = np.clip(np.searchsorted(self.v_edges, v, side="right") - 1, 0, len(self.v_edges) - 2)
        return iu, iv


def _edges(
    rng: np.random.Generator, lo: float, hi: float, sizes: tuple[float, float]
) -> np.ndarray:
    edges = [lo - rng.uniform(0.0, sizes[1])]
    while edges[-1] < hi:
        edges.append(edges[-1] + rng.uniform(*sizes))
    return np.array(edges)


def _field_grid(rng: np.random.Generator, h: int, w: int) -> _Grid:
    theta = rng.uniform(-math.pi / 4, math.pi / 4)
    g = _Grid(math.cos(theta), math.sin(theta), np.zeros(0), np.zeros(0))
    cx = np.array([0.0, w, 0.0, w])
    cy = np.array([0.0, 0.0, h, h])
    u, v = g.uv(cx, cy)
    g.u_edges = _edges(rng, u.min(), u.max(), _PARCEL_U)
    g.v_edges = _edges(rng, v.min(), v.max(), _PARCEL_V)
    return g


def _plantation_cells(
    rng: np.random.Generator, grid: _Grid, zone4: np.ndarray, h: int, w: int
) -> np.ndarray:
    """Boolean per field cell: a plantation (mostly farmland, inside the scene, far from forest)."""
    nu, nv = len(grid.u_edges) - 1, len(grid.v_edges) - 1
    prob = rng.uniform(*_PLANTATION_PROB)
    pick = rng.random(nu * nv) < prob
    force = rng.integers(0, 1 << 30)
    h4, w4 = zone4.shape
    ys = (np.arange(h4, dtype=np.float32)[:, None] + 0.5) * 4 - 0.5
    xs = (np.arange(w4, dtype=np.float32)[None, :] + 0.5) * 4 - 0.5
    iu, iv = grid.cell(*grid.uv(xs, ys))
    cell4 = (iu * nv + iv).ravel()
    near_forest = ndi.distance_transform_edt(zone4 != FOREST) < PLANTATION_FOREST_GAP / 4
    # a plantation may replace rangeland inside its parcel, never forest, water or town
    bad = (near_forest | (zone4 == WATER) | (zone4 == URBAN)).ravel()
    n_bad = np.bincount(cell4[bad], minlength=nu * nv)
    n_agri = np.bincount(cell4[(zone4 == AGRICULTURE).ravel()], minlength=nu * nv)
    n_all = np.bincount(cell4, minlength=nu * nv)
    inside = np.zeros(nu * nv, dtype=bool)
    for a in range(nu):
        for b in range(nv):
            corners = [
                grid.xy(grid.u_edges[a + i], grid.v_edges[b + j]) for i in (0, 1) for j in (0, 1)
            ]
            inside[a * nv + b] = all(2 <= x <= w - 3 and 2 <= y <= h - 3 for x, y in corners)
    eligible = (n_bad == 0) & (n_agri >= _PLANTATION_AGRI_SHARE * n_all) & (n_all > 0) & inside
    chosen = eligible & pick
    if eligible.any() and not chosen.any():  # keep the context pair present whenever possible
        chosen[np.flatnonzero(eligible)[force % int(eligible.sum())]] = True
    return chosen


@dataclass
class _Fields:
    """The field grid, its plantation parcels and the look of every field cell.

    Per cell (index ``iu * nv + iv``): crop colour (R, G, B, NIR) and row stripes along one grid
    axis (``stripe_axis`` 0 = u, 1 = v) with their angular frequency, phase and amplitude.
    """

    grid: _Grid
    plant_cells: np.ndarray
    track_half: float
    crop_col: np.ndarray
    stripe_axis: np.ndarray
    stripe_freq: np.ndarray
    stripe_phase: np.ndarray
    stripe_amp: np.ndarray


def _draw_fields(rng: np.random.Generator, zone4: np.ndarray, h: int, w: int) -> _Fields:
    """Field grid, plantation parcels, track width, then each cell's crop and row stripes."""
    grid = _field_grid(rng, h, w)
    plant_cells = _plantation_cells(rng, grid, zone4, h, w)
    track_half = rng.uniform(*_TRACK_HALF)
    nv = len(grid.v_edges) - 1
    n_cells = (len(grid.u_edges) - 1) * nv
    crop_kind = rng.integers(0, len(_CROPS), n_cells)
    crop_col = _CROPS[crop_kind] * rng.normal(1.0, 0.05, (n_cells, 4)).astype(np.float32)
    stripe_axis = rng.integers(0, 2, n_cells)
    stripe_freq = (2 * math.pi / rng.uniform(5.0, 14.0, n_cells)).astype(np.float32)
    stripe_phase = rng.uniform(0.0, 2 * math.pi, n_cells).astype(np.float32)
    stripe_amp = rng.uniform(0.03, 0.13, n_cells).astype(np.float32)
    return _Fields(
        grid, plant_cells, track_half, crop_col, stripe_axis, stripe_freq, stripe_phase, stripe_amp
    )


def _plantation_mask(fields: _Fields, h: int, w: int) -> np.ndarray:
    """(H, W) bool: the plantation parcels, each inset from its cell edges by the track."""
    grid, track_half = fields.grid, fields.track_half
    nv = len(grid.v_edges) - 1
    plant_img = Image.new("L", (w, h), 0)
    pdraw = ImageDraw.Draw(plant_img)
    for cell in np.flatnonzero(fields.plant_cells):
        a, b = divmod(int(cell), nv)
        u0, u1 = grid.u_edges[a] + track_half, grid.u_edges[a + 1] - track_half
        v0, v1 = grid.v_edges[b] + track_half, grid.v_edges[b + 1] - track_half
        pdraw.polygon([grid.xy(u, v) for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1))], fill=1)
    return np.asarray(plant_img) > 0

"""A procedural ultra-high-resolution (UHR) aerial benchmark, deterministic from a seed.

No real UHR aerial data can be fetched here, so this module draws scenes that make the HGN
trade-off real (see ``shared/design/hgn-model.md``, "Why a synthetic benchmark"):

* **Region classes** (urban, agriculture, rangeland, forest, water) are smooth irregular areas
  hundreds of px across, each with its own texture. Their layout is a per-scene random partition
  of smooth noise fields at 1/4 resolution; border pixels are decided again at full resolution
  on the interpolated fields, so borders are smooth curves rather than 4 px staircases.
* **Context pair** ``CONTEXT_CLASSES = (forest, plantation)``: both are painted by one texture
  entry (same base colour, same noise fields, same amplitudes), so their local statistics are
  identical. They differ only in large-scale layout: a plantation is one parcel of the
  agricultural field grid - a straight-edged rotated rectangle of ~115-415 px per side, wholly
  inside the scene, in a parcel that is mostly farmland (it may replace rangeland, never town or
  water) and framed by the grid's grass tracks - while forest is an irregular blob of the
  natural landscape, never closer than ``PLANTATION_FOREST_GAP`` px to a plantation. Telling an
  interior pixel apart therefore needs a receptive field of hundreds of px (to see the outline
  of the region or the field grid around it). tests/test_synthetic.py measures the cue as the
  rectangularity of connected components (area / smallest rotated bounding-box area): >= 0.88
  for plantations, 0.37-0.76 for forests on seeds 0-4.
* **Thin classes** ``THIN_CLASSES = (road, river, building)``: roads are 2-6 px polylines
  (paved or dirt) plus street grids in urban areas; rivers are 3-6 px meandering lines with
  tributaries that end at lakes; buildings are 4-8 px rotated rectangles with varied roof
  colours and a cast shadow, mostly along roads and in towns. At 1/4 resolution they are one or
  two mixed pixels wide (a perfect block-majority map at 1/4 reaches only ~0.4-0.7 IoU on them,
  ~0.98 on region classes) and at 1/16 they are gone (IoU <= 0.03), so a deep-only network on a
  1/4 input fails them.
* **Class 0 (unknown)**: opaque clouds (label 0 where cloud opacity >= 0.5) and, in some scenes,
  a no-data corner of exact zeros, as at the edge of a satellite swath.
* **Nuisances** (``nuisances=True``): per-scene band gain/offset and haze, a linear illumination
  gradient with low-frequency shading, optical blur, and signal-dependent sensor noise.

Radiometry: scenes are composed in float32 reflectance-like values in [0, 1] and quantised at the
end. ``dtype="uint8"`` gives 0-255. ``dtype="uint16"`` gives 16-bit radiometry by default
(``bit_depth=16``: 0-65535, which a model reading uint16 as ``/ 65535`` takes as is) or, with
``bit_depth=12``, 12-bit values 0-4095 in a uint16 container as many satellite products store
them (read them with a value maximum of 4095). Same seed and size give the same labels and the
same scene at every dtype, band count and bit depth. The optional 4th band is near-infrared-like:
high for vegetation (trees, green crops), low for water, medium for built surfaces.

Sizes are in pixels at full resolution and do not scale with the scene: a 1000 x 1333 scene is a
crop-like piece of the same landscape statistics as a 2448 x 2448 one.

Class shares, mean of seeds 0-9 at 2448 x 2448 (%): unknown 2.6, urban 12.9, agriculture 29.0,
rangeland 23.8, forest 18.9, plantation 2.0, water 8.0, road 1.65, river 0.70, building 0.53.
One 2448 x 2448 scene takes ~1.5 s of one CPU core.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

__all__ = [
    "CLASSES",
    "CONTEXT_CLASSES",
    "GENERATOR_VERSION",
    "NUM_CLASSES",
    "THIN_CLASSES",
    "ClassSpec",
    "Scene",
    "generate_scene",
    "main",
    "make_archive",
    "preview_png",
    "read_scene_zarr",
    "write_scene_zarr",
]

GENERATOR_VERSION = 1  # bump when the same seed would draw a different scene


@dataclass(frozen=True, slots=True)
class ClassSpec:
    """One label class: ``name`` and display ``color`` as RGBA 0-255."""

    name: str
    color: tuple[int, int, int, int]


# index == label id; colours follow DeepGlobe where the class exists there
CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("unknown", (0, 0, 0, 255)),
    ClassSpec("urban", (0, 255, 255, 255)),
    ClassSpec("agriculture", (255, 255, 0, 255)),
    ClassSpec("rangeland", (255, 0, 255, 255)),
    ClassSpec("forest", (0, 255, 0, 255)),
    ClassSpec("plantation", (0, 120, 0, 255)),
    ClassSpec("water", (0, 0, 255, 255)),
    ClassSpec("road", (255, 140, 0, 255)),
    ClassSpec("river", (0, 170, 255, 255)),
    ClassSpec("building", (255, 0, 0, 255)),
)
NUM_CLASSES = len(CLASSES)
UNKNOWN, URBAN, AGRICULTURE, RANGELAND, FOREST, PLANTATION, WATER, ROAD, RIVER, BUILDING = range(
    NUM_CLASSES
)
THIN_CLASSES: tuple[int, ...] = (ROAD, RIVER, BUILDING)
CONTEXT_CLASSES: tuple[int, ...] = (FOREST, PLANTATION)

# --- landscape layout (px at full resolution) -------------------------------------------------
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
# --- thin classes ------------------------------------------------------------------------------
_ROADS_PER_2448 = 3.0  # expected major roads crossing a 2448 px scene (beside the guaranteed one)
_MINOR_PER_ROAD = 3.0
_MAJOR_WIDTHS, _MAJOR_P = (4, 5, 6), (0.4, 0.35, 0.25)
_MINOR_WIDTHS = (2, 3)
_STREET_WIDTHS, _STREET_SPACING = (2, 3, 4), (70.0, 130.0)
_RIVERS_PER_2448 = 3.2
_RIVER_WIDTHS, _RIVER_P = (3, 4, 5, 6), (0.2, 0.3, 0.3, 0.2)
_TRIB_WIDTHS = (3, 4)
_BUILDING_SIDE = (4, 9)  # rectangle sides drawn from [4, 9) px, so at most 8
_BUILDING_CELL = 12  # occupancy grid: buildings never share or touch a neighbouring cell
_URBAN_BUILDING_AREA = 500.0  # one building candidate per this many urban px
# --- class 0 -----------------------------------------------------------------------------------
_CLOUD_COVER = (0.003, 0.03)
_NODATA_PROB = 0.3

# --- appearance --------------------------------------------------------------------------------
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
_URBAN_BLOCK_PX, _URBAN_BLOCK_AMP = 10.0, 0.16  # built-up fabric: blocks on the street grid
_CLOUD_RGBN = np.array([0.93, 0.94, 0.96, 0.85], dtype=np.float32)


@dataclass(eq=False)
class Scene:
    """One generated scene: ``image`` (C, H, W), ``labels`` (H, W) uint8 class ids, its ``seed``.

    ``params`` records how it was generated (JSON-serialisable; written to zarr attributes).
    """

    image: np.ndarray
    labels: np.ndarray
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# noise helpers


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


def _smooth_gain(sigma: float) -> float:
    """Factor restoring unit std after a 2-D Gaussian filter of white noise."""
    delta = np.zeros(41)
    delta[20] = 1.0
    k = ndi.gaussian_filter1d(delta, sigma)
    return float(1.0 / np.sum(k**2))  # 2-D variance = (sum k^2)^2, so std = sum k^2


_SMOOTH_GAIN = _smooth_gain(0.8)


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


# ---------------------------------------------------------------------------------------------
# layout


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


def _crossing(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Two points on different scene edges."""
    sides = rng.choice(4, size=2, replace=False)
    pts = []
    for s in sides:
        t = rng.uniform(0.05, 0.95)
        pts.append(
            {0: (t * w, -8.0), 1: (w + 8.0, t * h), 2: (t * w, h + 8.0), 3: (-8.0, t * h)}[s]
        )
    return np.array(pts[0]), np.array(pts[1])


def _polyline(
    rng: np.random.Generator, a: np.ndarray, b: np.ndarray, bends: int, wobble: float
) -> np.ndarray:
    """A road from ``a`` to ``b``; ``bends`` vertices pushed sideways by ~``wobble`` x length."""
    t = np.sort(rng.uniform(0.15, 0.85, bends))
    d = b - a
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    side = rng.normal(0.0, wobble * np.hypot(*d), bends)
    mids = a + t[:, None] * d + side[:, None] * normal
    return np.vstack([a, mids, b])


def _meander(
    rng: np.random.Generator, start: np.ndarray, heading: float, length: float, h: int, w: int
) -> np.ndarray:
    """A meandering river path from ``start``; stops when it leaves the scene."""
    step = 6.0
    n = max(2, int(length / step))
    amp = rng.uniform(0.5, 1.0)  # swing of the heading (rad)
    wavelength = rng.uniform(250.0, 600.0)
    phase = rng.uniform(0.0, 2 * math.pi)
    drift = np.cumsum(rng.normal(0.0, 0.025, n))
    s = np.arange(n) * step
    ang = heading + amp * np.sin(2 * math.pi * s / wavelength + phase) + drift
    x = start[0] + np.concatenate([[0.0], np.cumsum(step * np.cos(ang))[:-1]])
    y = start[1] + np.concatenate([[0.0], np.cumsum(step * np.sin(ang))[:-1]])
    out = (x < -20) | (x > w + 20) | (y < -20) | (y > h + 20)
    out[0] = False
    stop = int(np.argmax(out)) + 1 if out.any() else n
    return np.stack([x[:stop], y[:stop]], axis=1)


def _draw_line(draw: ImageDraw.ImageDraw, pts: np.ndarray, width: int, value: int) -> None:
    if len(pts) >= 2:
        draw.line(
            [(float(x), float(y)) for x, y in pts], fill=value, width=int(width), joint="curve"
        )


def _scale(h: int, w: int) -> float:
    return (h + w) / (2 * 2448.0)


def _rivers(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, int]:
    """River mask (uint8 0/1) of meandering rivers and their tributaries."""
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    n = int(rng.poisson(_RIVERS_PER_2448 * _scale(h, w))) + (_scale(h, w) >= 0.4)
    for _ in range(n):
        a, b = _crossing(rng, h, w)
        heading = math.atan2(b[1] - a[1], b[0] - a[0])
        path = _meander(rng, a, heading, 3.0 * (h + w), h, w)
        width = int(rng.choice(_RIVER_WIDTHS, p=_RIVER_P))
        _draw_line(draw, path, width, 1)
        for _ in range(int(rng.integers(1, 4))):  # tributaries join from either bank
            k = int(rng.integers(0, len(path)))
            d = path[min(k + 1, len(path) - 1)] - path[max(k - 1, 0)]
            ang = math.atan2(d[1], d[0]) + math.pi + rng.choice([-1, 1]) * rng.uniform(0.6, 1.3)
            trib = _meander(rng, path[k], ang, rng.uniform(400.0, 1500.0), h, w)
            _draw_line(draw, trib, int(rng.choice(_TRIB_WIDTHS)), 1)
    return np.asarray(img), n


def _roads(
    rng: np.random.Generator, h: int, w: int, zone: np.ndarray
) -> tuple[np.ndarray, list[tuple[np.ndarray, int]], int, float]:
    """Road raster (0 none, 1 paved, 2 dirt), polylines with widths, road count, street angle."""
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    lines: list[tuple[np.ndarray, int]] = []
    n_major = int(rng.poisson(_ROADS_PER_2448 * _scale(h, w))) + (_scale(h, w) >= 0.4)
    majors = []
    for _ in range(n_major):
        a, b = _crossing(rng, h, w)
        majors.append(
            (
                _polyline(rng, a, b, int(rng.integers(1, 4)), 0.07),
                int(rng.choice(_MAJOR_WIDTHS, p=_MAJOR_P)),
            )
        )
    minors = []
    for pts, _ in majors:
        for _ in range(int(rng.poisson(_MINOR_PER_ROAD))):
            seg = int(rng.integers(0, len(pts) - 1))
            t = rng.uniform(0.1, 0.9)
            a = pts[seg] + t * (pts[seg + 1] - pts[seg])
            d = pts[seg + 1] - pts[seg]
            ang = math.atan2(d[1], d[0]) + rng.choice([-1, 1]) * rng.uniform(1.1, 2.0)
            length = rng.uniform(200.0, 900.0)
            b = a + length * np.array([math.cos(ang), math.sin(ang)])
            kind = 2 if rng.random() < 0.6 else 1
            minors.append(
                (
                    _polyline(rng, a, b, int(rng.integers(1, 3)), 0.08),
                    int(rng.choice(_MINOR_WIDTHS)),
                    kind,
                )
            )
    for pts, width, kind in minors:
        _draw_line(draw, pts, width, kind)
        lines.append((pts, width))
    for pts, width in majors:
        _draw_line(draw, pts, width, 1)
        lines.append((pts, width))
    # urban street grid: long lines across the scene, kept only inside urban zones
    street_angle = rng.uniform(0.0, math.pi / 2)
    spacing = rng.uniform(*_STREET_SPACING)
    width = int(rng.choice(_STREET_WIDTHS))
    offset = rng.uniform(0.0, spacing, 2)
    streets = Image.new("L", (w, h), 0)
    sdraw = ImageDraw.Draw(streets)
    c, s = math.cos(street_angle), math.sin(street_angle)
    reach = math.hypot(h, w)
    for ang_c, ang_s, off in ((c, s, offset[0]), (-s, c, offset[1])):
        # lines perpendicular to direction (ang_c, ang_s), every `spacing` px along it
        for k in range(-int(reach / spacing) - 1, int(reach / spacing) + 2):
            p = np.array([w / 2, h / 2]) + (k * spacing + off) * np.array([ang_c, ang_s])
            d = np.array([-ang_s, ang_c]) * reach
            sdraw.line([tuple(p - d), tuple(p + d)], fill=1, width=width)
    roads = np.asarray(img).copy()
    street_px = (np.asarray(streets) > 0) & (zone == URBAN) & (roads == 0)
    roads[street_px] = 1
    return roads, lines, n_major, street_angle


def _buildings(
    rng: np.random.Generator,
    h: int,
    w: int,
    lines: list[tuple[np.ndarray, int]],
    blocked: np.ndarray,
    zone: np.ndarray,
    street_angle: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Roof raster (0 none, 1 + roof colour) and shadow mask, with the building count."""
    cands: list[tuple[float, float, float]] = []  # x, y, orientation
    for pts, width in lines:
        seg = np.diff(pts, axis=0)
        seglen = np.hypot(seg[:, 0], seg[:, 1])
        total = float(seglen.sum())
        if total < 1.0:
            continue
        s = np.arange(rng.uniform(0, 20), total, rng.uniform(13.0, 22.0))
        keep = rng.random(s.size) < rng.uniform(0.35, 0.8)
        cum = np.concatenate([[0.0], np.cumsum(seglen)])
        idx = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(seg) - 1)
        frac = (s - cum[idx]) / np.maximum(seglen[idx], 1e-9)
        pos = pts[idx] + frac[:, None] * seg[idx]
        ang = np.arctan2(seg[idx, 1], seg[idx, 0])
        side = rng.choice([-1.0, 1.0], size=s.size)
        off = width / 2 + rng.uniform(2.0, 6.0, s.size) + 4.5
        nx, ny = -np.sin(ang) * side * off, np.cos(ang) * side * off
        for k in np.flatnonzero(keep):
            cands.append((pos[k, 0] + nx[k], pos[k, 1] + ny[k], ang[k]))
    n_urban = int(rng.poisson(h * w / _URBAN_BUILDING_AREA))
    ux, uy = rng.uniform(0, w, n_urban), rng.uniform(0, h, n_urban)
    for x, y in zip(ux, uy, strict=True):
        if zone[int(y), int(x)] == URBAN:
            cands.append((x, y, street_angle))
    n = len(cands)
    sides = rng.integers(_BUILDING_SIDE[0], _BUILDING_SIDE[1], size=(n, 2))
    roofs = rng.integers(0, _N_ROOFS, size=n)
    jitter = rng.normal(0.0, 0.08, size=n)
    shadow_dx, shadow_dy = rng.uniform(1.0, 2.5, 2) * rng.choice([-1.0, 1.0], 2)
    occ = np.zeros((h // _BUILDING_CELL + 3, w // _BUILDING_CELL + 3), dtype=bool)
    roof_img = Image.new("L", (w, h), 0)
    shadow_img = Image.new("L", (w, h), 0)
    rdraw, sdraw = ImageDraw.Draw(roof_img), ImageDraw.Draw(shadow_img)
    placed = 0
    for k, (x, y, ang) in enumerate(cands):
        xi, yi = int(x), int(y)
        if not (6 <= xi < w - 6 and 6 <= yi < h - 6):
            continue
        if zone[yi, xi] not in (URBAN, AGRICULTURE, RANGELAND):
            continue
        if blocked[yi - 6 : yi + 7, xi - 6 : xi + 7].any():
            continue
        cy, cx = yi // _BUILDING_CELL + 1, xi // _BUILDING_CELL + 1
        if occ[cy - 1 : cy + 2, cx - 1 : cx + 2].any():
            continue
        occ[cy, cx] = True
        a = ang + jitter[k]
        c, s = math.cos(a), math.sin(a)
        hx, hy = sides[k, 0] / 2.0, sides[k, 1] / 2.0
        poly = [
            (x + c * px - s * py, y + s * px + c * py)
            for px, py in ((-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy))
        ]
        sdraw.polygon([(px + shadow_dx, py + shadow_dy) for px, py in poly], fill=1)
        rdraw.polygon(poly, fill=int(roofs[k]) + 1)
        placed += 1
    return np.asarray(roof_img), np.asarray(shadow_img), placed


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


# ---------------------------------------------------------------------------------------------
# the generator


def _check_args(
    seed: int, height: int, width: int, bands: int, dtype: str, bit_depth: int | None
) -> tuple[np.dtype, int]:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected a non-negative int")
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}={v!r}: expected an int >= 1")
    if bands not in (3, 4):
        raise ValueError(f"bands={bands!r}: expected 3 (RGB) or 4 (RGB + NIR)")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise ValueError(f"dtype={dtype!r}: expected 'uint8' or 'uint16'")
    depth = (8 if dt == np.uint8 else 16) if bit_depth is None else bit_depth
    allowed = (8,) if dt == np.uint8 else tuple(range(9, 17))
    if not isinstance(depth, (int, np.integer)) or isinstance(depth, bool) or depth not in allowed:
        raise ValueError(
            f"bit_depth={bit_depth!r} with dtype={dtype!r}: expected None (full range), 8 for "
            "uint8, or 9-16 for uint16 (e.g. 12 for 12-bit radiometry)"
        )
    return dt, int(depth)


def generate_scene(
    seed: int,
    height: int = 2448,
    width: int = 2448,
    bands: int = 3,
    dtype: str = "uint8",
    *,
    bit_depth: int | None = None,
    nuisances: bool = True,
) -> Scene:
    """Draw one scene; the same arguments always give identical arrays.

    ``bands`` 3 (RGB) or 4 (RGB + NIR-like); ``dtype`` "uint8" or "uint16"; ``bit_depth`` sets
    the value range of uint16 scenes (default 16: 0-65535; 12: 0-4095). ``nuisances=False``
    leaves out gain/offset jitter, haze, illumination, blur and sensor noise (labels unchanged).
    """
    dt, depth = _check_args(seed, height, width, bands, dtype, bit_depth)
    h, w = int(height), int(width)
    names = (
        "zones",
        "fields",
        "rivers",
        "roads",
        "buildings",
        "class0",
        "texture",
        "nuisance",
        "noise0",
        "noise1",
        "noise2",
        "noise3",
    )
    rngs = dict(
        zip(
            names,
            (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(len(names))),
            strict=True,
        )
    )
    h4, w4 = math.ceil(h / 4), math.ceil(w / 4)

    # --- labels
    zone4, steps, shares = _zones(rngs["zones"], h4, w4)
    zone = _zones_full(zone4, steps, h, w)
    del steps
    grid = _field_grid(rngs["fields"], h, w)
    plant_cells = _plantation_cells(rngs["fields"], grid, zone4, h, w)
    track_half = rngs["fields"].uniform(*_TRACK_HALF)
    nv = len(grid.v_edges) - 1
    n_cells = (len(grid.u_edges) - 1) * nv
    frng = rngs["fields"]
    crop_kind = frng.integers(0, len(_CROPS), n_cells)
    crop_col = _CROPS[crop_kind] * frng.normal(1.0, 0.05, (n_cells, 4)).astype(np.float32)
    stripe_axis = frng.integers(0, 2, n_cells)
    stripe_freq = (2 * math.pi / frng.uniform(5.0, 14.0, n_cells)).astype(np.float32)
    stripe_phase = frng.uniform(0.0, 2 * math.pi, n_cells).astype(np.float32)
    stripe_amp = frng.uniform(0.03, 0.13, n_cells).astype(np.float32)
    plant_img = Image.new("L", (w, h), 0)
    pdraw = ImageDraw.Draw(plant_img)
    for cell in np.flatnonzero(plant_cells):
        a, b = divmod(int(cell), nv)
        u0, u1 = grid.u_edges[a] + track_half, grid.u_edges[a + 1] - track_half
        v0, v1 = grid.v_edges[b] + track_half, grid.v_edges[b + 1] - track_half
        pdraw.polygon([grid.xy(u, v) for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1))], fill=1)
    labels = zone.copy()
    labels[np.asarray(plant_img) > 0] = PLANTATION
    river, n_rivers = _rivers(rngs["rivers"], h, w)
    river_px = (river > 0) & (labels != WATER)  # rivers end at lake shores
    labels[river_px] = RIVER
    roads, lines, n_roads, street_angle = _roads(rngs["roads"], h, w, zone)
    labels[roads > 0] = ROAD  # bridges: roads cross rivers and lakes
    blocked = (roads > 0) | river_px | (labels == WATER) | (labels == PLANTATION)
    roof, shadow, n_buildings = _buildings(
        rngs["buildings"], h, w, lines, blocked, zone, street_angle
    )
    roof_px = roof > 0
    labels[roof_px] = BUILDING
    cloud_yx, cloud, nodata, cloud_cover = _class0(rngs["class0"], h, w)

    # --- appearance: texture id per pixel, then base colour x (1 + texture modulation)
    tex = _TEX_OF_CLASS[labels]
    tex[roads == 2] = _T_DIRT
    tex[roof_px] = (_T_ROOF - 1 + roof[roof_px]).astype(np.uint8)
    trng = rngs["texture"]
    table = _TEXTURES.copy()
    table[:, :4] *= trng.normal(1.0, 0.04, (len(table), 4)).astype(np.float32)
    fine = trng.random((h, w), dtype=np.float32)
    fine -= 0.5
    fine *= np.float32(math.sqrt(12.0))
    mid = _noise(trng, h, w, 4.0)
    coarse = _noise(trng, h, w, 48.0)
    mod = np.ascontiguousarray(table[:, 4])[tex] * fine
    mod += np.ascontiguousarray(table[:, 5])[tex] * mid
    mod += np.ascontiguousarray(table[:, 6])[tex] * coarse
    del fine, mid, coarse
    block_values = trng.normal(0.0, 1.0, 4096).astype(np.float32)
    urban = tex == _T_URBAN
    if urban.any():  # built-up fabric: a block pattern aligned with the street grid
        ys, xs = np.nonzero(urban)
        c, s = math.cos(street_angle), math.sin(street_angle)
        bu = np.floor((xs * c + ys * s) / _URBAN_BLOCK_PX).astype(np.int64)
        bv = np.floor((ys * c - xs * s) / _URBAN_BLOCK_PX).astype(np.int64)
        mod[urban] += _URBAN_BLOCK_AMP * block_values[(bu * 7919 + bv * 104729) % 4096]
    crop = tex == _T_CROP
    crop_cell = np.zeros(0, dtype=np.intp)
    if crop.any():  # crops: per-field colour and row stripes; grass tracks along field edges
        ys, xs = np.nonzero(crop)
        u, v = grid.uv(xs.astype(np.float32), ys.astype(np.float32))
        iu, iv = grid.cell(u, v)
        crop_cell = iu * nv + iv
        ue, ve = grid.u_edges.astype(np.float32), grid.v_edges.astype(np.float32)
        edge = np.minimum(
            np.minimum(u - ue[iu], ue[iu + 1] - u), np.minimum(v - ve[iv], ve[iv + 1] - v)
        )
        coord = np.where(stripe_axis[crop_cell] == 0, u, v)
        coord *= stripe_freq[crop_cell]
        coord += stripe_phase[crop_cell]
        stripes = stripe_amp[crop_cell] * np.sin(coord)
        track = edge < track_half
        stripes[track] = 0.0
        mod[crop] += stripes
        crop_cell = np.where(track, -1, crop_cell)
        tex_crop = tex[crop]
        tex_crop[track] = _T_TRACK
        tex[crop] = tex_crop
    mod += 1.0
    shadow_idx = np.flatnonzero((shadow > 0) & ~roof_px)
    mod.ravel()[shadow_idx] *= np.float32(0.55)  # buildings cast shadows on the ground

    # --- nuisances and class 0
    nrng = rngs["nuisance"]
    gain = nrng.uniform(0.88, 1.12, 4).astype(np.float32)
    offset = nrng.uniform(-0.02, 0.02, 4).astype(np.float32)
    haze = nrng.uniform(0.0, 0.05) * np.array([1.0, 1.05, 1.2, 0.6], dtype=np.float32)
    grad = [float(g) for g in nrng.uniform(-0.2, 0.2, 2)]
    shading = _noise(nrng, h, w, 400.0)
    blur = float(nrng.uniform(0.08, 0.2))
    read_noise = float(nrng.uniform(0.004, 0.01))
    shot_noise = float(nrng.uniform(0.002, 0.006))
    if nuisances:  # illumination: a linear gradient plus low-frequency shading
        shading *= np.float32(0.04)
        shading += np.float32(1.0 - 0.5 * grad[0] - 0.5 * grad[1])
        shading += np.float32(grad[0] / h) * np.arange(h, dtype=np.float32)[:, None]
        shading += np.float32(grad[1] / w) * np.arange(w, dtype=np.float32)[None, :]
        mod *= shading
    else:
        gain[:] = 1.0
        offset[:] = 0.0
        haze[:] = 0.0
    del shading
    img = np.empty((bands, h, w), dtype=np.float32)
    crop_flat = np.flatnonzero(tex == _T_CROP)
    crop_rgbn = crop_col[crop_cell[crop_cell >= 0]]
    for b in range(bands):
        base = (table[:, b] * gain[b])[tex]
        base.ravel()[crop_flat] = crop_rgbn[:, b] * gain[b]
        np.multiply(base, mod, out=img[b])
        if nuisances:  # haze is additive path radiance, not shaded by the ground
            img[b] += offset[b] + haze[b]
    del mod, tex, base
    for b in range(bands):
        img[b][cloud_yx] = img[b][cloud_yx] * (1.0 - cloud) + _CLOUD_RGBN[b] * cloud
    if nuisances:
        root12 = math.sqrt(12.0)  # uniform noise of unit std
        for b in range(bands):
            _blur3(img[b], blur)
            # signal-dependent noise std: read noise + a share of the signal (shot-noise-like)
            sigma = img[b] * np.float32(shot_noise * root12)
            sigma += np.float32(read_noise * root12)
            u = rngs[f"noise{b}"].random((h, w), dtype=np.float32)
            u -= 0.5
            u *= sigma
            img[b] += u
    opaque = cloud >= 0.5
    labels[cloud_yx[0][opaque], cloud_yx[1][opaque]] = UNKNOWN
    has_nodata = bool(nodata.any())
    if has_nodata:
        labels[nodata] = UNKNOWN
        img[:, nodata] = 0.0
    value_max = (1 << depth) - 1
    np.clip(img, 0.0, 1.0, out=img)
    img *= np.float32(value_max)
    img += 0.5
    image = img.astype(dt)
    params = {
        "generator": "hgn_model.data.synthetic",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "height": h,
        "width": w,
        "bands": bands,
        "band_names": ["red", "green", "blue", "nir"][:bands],
        "dtype": dt.name,
        "bit_depth": depth,
        "value_max": value_max,
        "nuisances": bool(nuisances),
        "zone_shares": shares,
        "field_grid_angle_deg": round(math.degrees(math.atan2(grid.sin, grid.cos)), 3),
        "plantation_parcels": int(plant_cells.sum()),
        "major_roads": n_roads,
        "rivers": n_rivers,
        "buildings": n_buildings,
        "cloud_cover_target": round(cloud_cover, 5),
        "nodata_corner": has_nodata,
        "illumination_gradient": [round(float(g), 4) for g in grad],
    }
    return Scene(image=image, labels=labels, seed=int(seed), params=params)


# ---------------------------------------------------------------------------------------------
# preview


def _to_rgb8(scene: Scene) -> np.ndarray:
    """First three bands as (H, W, 3) uint8, scaled by the scene's value range."""
    img = scene.image[:3]
    if img.dtype == np.uint8:
        rgb = img
    else:
        vmax = float(scene.params.get("value_max") or np.iinfo(img.dtype).max)
        rgb = np.clip(img.astype(np.float32) * (255.0 / vmax) + 0.5, 0, 255).astype(np.uint8)
    return np.moveaxis(rgb, 0, -1)


def preview_png(scene: Scene, path: str | Path, max_width: int | None = None) -> Path:
    """Save the RGB image and the label colours side by side as a PNG; returns the path.

    ``max_width`` shrinks the picture (box filter for the image, nearest for labels) to at most
    that many px wide.
    """
    lut = np.array([c.color[:3] for c in CLASSES], dtype=np.uint8)
    rgb = Image.fromarray(np.ascontiguousarray(_to_rgb8(scene)))
    lab = Image.fromarray(lut[scene.labels])
    h, w = scene.labels.shape
    gap = 8
    if max_width is not None and 2 * w + gap > max_width:
        f = max(max_width - gap, 2) / (2 * w)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
        lab = lab.resize(size, Image.Resampling.NEAREST)
        w, h = size
    out = Image.new("RGB", (2 * w + gap, h), (255, 255, 255))
    out.paste(rgb, (0, 0))
    out.paste(lab, (w + gap, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path


# ---------------------------------------------------------------------------------------------
# zarr archives

_ATTR_KEY = "hgn_synthetic"  # group attribute holding the generator record
_LAYOUTS = {"CHW": ("c", "y", "x"), "HWC": ("y", "x", "c")}


def _open_kwargs(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    if url.startswith("file://"):
        # fsspec's local filesystem does not create parent folders of new files by default
        return {"storage_options": {"auto_mkdir": True} | (storage_options or {})}
    # zarr refuses storage_options for plain local paths, so pass them only when given
    return {} if storage_options is None else {"storage_options": storage_options}


def write_scene_zarr(
    path_or_url: str | Path,
    scene: Scene,
    chunks: int = 512,
    zarr_format: int = 3,
    layout: str = "CHW",
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write ``scene`` as a zarr group with arrays "image" and "labels"; returns the location.

    ``path_or_url``: a local path or an fsspec URL (``file://``, ``s3://...`` with
    ``storage_options``). "image" is stored (C, H, W) or, with ``layout="HWC"``, (H, W, C),
    chunked ``chunks`` px square with all bands in each chunk; "labels" is (H, W) uint8. Arrays
    carry dimension names (zarr v3 ``dimension_names``, v2 ``_ARRAY_DIMENSIONS``) and a
    ``layout`` attribute; the group attribute ``hgn_synthetic`` records the seed, generator
    parameters, layout and classes. An existing group at the location is replaced.
    """
    import zarr  # local import: generating scenes needs no zarr

    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format={zarr_format!r}: expected 2 or 3")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {sorted(_LAYOUTS)}")
    if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1:
        raise ValueError(f"chunks={chunks!r}: expected a positive int (chunk side in px)")
    image = scene.image
    if image.ndim != 3 or scene.labels.shape != image.shape[1:]:
        raise ValueError(
            f"scene seed={scene.seed}: image shape {image.shape} and labels shape "
            f"{scene.labels.shape} do not match (expected (C, H, W) and (H, W))"
        )
    c, h, w = image.shape
    cy, cx = min(chunks, h), min(chunks, w)
    if layout == "HWC":
        image = np.moveaxis(image, 0, -1)
        image_chunks: tuple[int, ...] = (cy, cx, c)
    else:
        image_chunks = (c, cy, cx)
    record = {
        "seed": scene.seed,
        "layout": layout,
        "params": scene.params,
        "classes": [
            {"id": i, "name": k.name, "color": list(k.color)} for i, k in enumerate(CLASSES)
        ],
        "thin_classes": list(THIN_CLASSES),
        "context_classes": list(CONTEXT_CLASSES),
    }
    group = zarr.open_group(
        str(path_or_url),
        mode="w",
        zarr_format=zarr_format,
        **_open_kwargs(str(path_or_url), storage_options),
    )
    group.attrs[_ATTR_KEY] = record
    for name, data, chunk_shape, dims in (
        ("image", image, image_chunks, _LAYOUTS[layout]),
        ("labels", scene.labels, (cy, cx), ("y", "x")),
    ):
        attrs: dict[str, Any] = {"layout": layout} if name == "image" else {}
        extra: dict[str, Any] = {}
        if zarr_format == 3:
            extra["dimension_names"] = dims
        else:
            attrs["_ARRAY_DIMENSIONS"] = list(dims)  # xarray's convention for zarr v2
        arr = group.create_array(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=chunk_shape,
            attributes=attrs,
            fill_value=0,
            **extra,
        )
        arr[...] = data
    return str(path_or_url)


def read_scene_zarr(
    path_or_url: str | Path, storage_options: dict[str, Any] | None = None
) -> Scene:
    """Read a scene written by :func:`write_scene_zarr` (either zarr format, either layout)."""
    import zarr

    group = zarr.open_group(
        str(path_or_url), mode="r", **_open_kwargs(str(path_or_url), storage_options)
    )
    missing = [k for k in ("image", "labels") if k not in group]
    if missing:
        raise ValueError(
            f"{path_or_url}: zarr group lacks array(s) {missing}; expected a scene written by "
            "hgn_model.data.synthetic.write_scene_zarr (arrays 'image' and 'labels')"
        )
    record = dict(group.attrs.get(_ATTR_KEY, {}))
    arr = group["image"]
    layout = arr.attrs.get("layout", record.get("layout", "CHW"))
    if layout not in _LAYOUTS:
        raise ValueError(f"{path_or_url}: image attribute layout={layout!r} is not CHW or HWC")
    image = np.asarray(arr[...])
    if layout == "HWC":
        image = np.ascontiguousarray(np.moveaxis(image, -1, 0))
    labels = np.asarray(group["labels"][...])
    return Scene(
        image=image,
        labels=labels,
        seed=int(record.get("seed", -1)),
        params=dict(record.get("params", {})),
    )


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if "://" in root else str(Path(root) / name)


def make_archive(
    root: str | Path,
    seeds: Sequence[int],
    sizes: Sequence[int] | Sequence[Sequence[int]],
    bands: int = 3,
    dtype: str = "uint8",
    zarr_format: int = 3,
    *,
    layout: str = "CHW",
    chunks: int = 512,
    bit_depth: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Generate one scene per seed and write each as ``<root>/scene-<seed>.zarr``.

    ``sizes``: one (height, width) for every scene, or one (height, width) per seed. Returns the
    scene locations (local paths or URLs) in seed order.
    """
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r}: each seed names one scene, so they must differ")
    if len(sizes) == 2 and all(isinstance(v, (int, np.integer)) for v in sizes):
        shapes = [(int(sizes[0]), int(sizes[1]))] * len(seeds)  # type: ignore[arg-type]
    else:
        shapes = [(int(hw[0]), int(hw[1])) for hw in sizes]  # type: ignore[index]
        if len(shapes) == 1:
            shapes *= len(seeds)
        if len(shapes) != len(seeds):
            raise ValueError(
                f"sizes has {len(shapes)} entries for {len(seeds)} seeds: give one "
                "(height, width) for all scenes or one per seed"
            )
    root = str(root)
    if "://" not in root:
        Path(root).mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, (h, w) in zip(seeds, shapes, strict=True):
        scene = generate_scene(seed, h, w, bands=bands, dtype=dtype, bit_depth=bit_depth)
        paths.append(
            write_scene_zarr(
                _join(root, f"scene-{seed}.zarr"),
                scene,
                chunks=chunks,
                zarr_format=zarr_format,
                layout=layout,
                storage_options=storage_options,
            )
        )
    return paths


# ---------------------------------------------------------------------------------------------
# command line


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size {text!r}: expected HEIGHTxWIDTH, e.g. 2448x2448"
        ) from None
    return h, w


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hgn_model.data.synthetic OUT --seeds 0 1 2``: write a synthetic archive."""
    parser = argparse.ArgumentParser(
        prog="python -m hgn_model.data.synthetic",
        description="Write a procedural UHR aerial benchmark archive: one zarr group "
        "(arrays 'image' and 'labels') per seed, named scene-<seed>.zarr.",
    )
    parser.add_argument("root", help="output folder or fsspec URL (s3://bucket/prefix)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one scene per seed")
    parser.add_argument(
        "--sizes",
        type=_size,
        nargs="+",
        default=[(2448, 2448)],
        metavar="HxW",
        help="one size for all scenes, or one per seed",
    )
    parser.add_argument(
        "--bands", type=int, choices=(3, 4), default=3, help="3 = RGB, 4 = RGB + NIR-like"
    )
    parser.add_argument("--dtype", choices=("uint8", "uint16"), default="uint8")
    parser.add_argument(
        "--bit-depth",
        type=int,
        default=None,
        help="uint16 value range: 16 (default, 0-65535) or e.g. 12 (0-4095)",
    )
    parser.add_argument("--zarr-format", type=int, choices=(2, 3), default=3)
    parser.add_argument("--layout", choices=sorted(_LAYOUTS), default="CHW")
    parser.add_argument("--chunks", type=int, default=512, help="chunk side in px")
    parser.add_argument(
        "--preview",
        type=Path,
        default=None,
        metavar="DIR",
        help="also save a scene-<seed>.png preview per scene in DIR",
    )
    args = parser.parse_args(argv)
    try:
        paths = make_archive(
            args.root,
            args.seeds,
            args.sizes,
            bands=args.bands,
            dtype=args.dtype,
            zarr_format=args.zarr_format,
            layout=args.layout,
            chunks=args.chunks,
            bit_depth=args.bit_depth,
        )
    except ValueError as exc:
        parser.error(str(exc))
    for seed, path in zip(args.seeds, paths, strict=True):
        line = {"seed": seed, "path": path}
        if args.preview is not None:
            t0 = time.perf_counter()
            scene = read_scene_zarr(path)
            line["preview"] = str(
                preview_png(scene, args.preview / f"scene-{seed}.png", max_width=2048)
            )
            line["preview_s"] = round(time.perf_counter() - t0, 2)
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``generate_scene``: labels, then ground appearance, then radiometry, from one seed.

Each phase draws from its own random stream (spawned from the seed), so a phase's draws never
shift another's; within a stream the order of draws is part of the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._classes import BUILDING, PLANTATION, RIVER, ROAD, UNKNOWN, WATER, Scene
from ._layout import _draw_fields, _Fields, _plantation_mask, _zones, _zones_full
from ._radiometry import (
    _add_clouds,
    _class0,
    _compose,
    _Nuisance,
    _nuisance,
    _quantise,
    _sensor,
)
from ._texture import _ground
from ._thin import _buildings, _rivers, _roads

GENERATOR_VERSION = 1  # bump when the same seed would draw a different scene

# one random stream per phase, spawned from the seed in this order (never reorder or insert)
_STREAMS = (
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


def _spawn_rngs(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(int(seed)).spawn(len(_STREAMS))
    return dict(zip(_STREAMS, (np.random.default_rng(s) for s in children), strict=True))


@dataclass
class _Layers:
    """What the label phase hands to the appearance phase (all (H, W) unless noted)."""

    labels: np.ndarray  # uint8 class ids before class 0 is painted
    roads: np.ndarray  # 0 none, 1 paved, 2 dirt
    roof: np.ndarray  # 0 none, 1 + roof colour
    shadow: np.ndarray  # building shadows (0/1)
    fields: _Fields
    street_angle: float
    shares: dict[str, float]  # drawn zone shares
    n_rivers: int
    n_roads: int
    n_buildings: int


def _draw_labels(rngs: dict[str, np.random.Generator], h: int, w: int) -> _Layers:
    """Zones, plantations, rivers, roads and buildings, in the order they overwrite labels."""
    zone4, steps, shares = _zones(rngs["zones"], math.ceil(h / 4), math.ceil(w / 4))
    zone = _zones_full(zone4, steps, h, w)
    del steps  # the 1/4-resolution zone fields are not needed again
    fields = _draw_fields(rngs["fields"], zone4, h, w)
    labels = zone.copy()
    labels[_plantation_mask(fields, h, w)] = PLANTATION
    river, n_rivers = _rivers(rngs["rivers"], h, w)
    river_px = (river > 0) & (labels != WATER)  # rivers end at lake shores
    labels[river_px] = RIVER
    roads, lines, n_roads, street_angle = _roads(rngs["roads"], h, w, zone)
    labels[roads > 0] = ROAD  # bridges: roads cross rivers and lakes
    blocked = (roads > 0) | river_px | (labels == WATER) | (labels == PLANTATION)
    roof, shadow, n_buildings = _buildings(
        rngs["buildings"], h, w, lines, blocked, zone, street_angle
    )
    labels[roof > 0] = BUILDING
    return _Layers(
        labels, roads, roof, shadow, fields, street_angle, shares, n_rivers, n_roads, n_buildings
    )


def _render(
    rngs: dict[str, np.random.Generator], lay: _Layers, bands: int, nuisances: bool
) -> tuple[np.ndarray, _Nuisance]:
    """(bands, H, W) float32 ground under illumination (before clouds), and the nuisances drawn.

    The texture and modulation planes live only in here, so they are freed before the caller
    adds clouds and sensor noise.
    """
    h, w = lay.labels.shape
    tex, mod, table, crop_cell = _ground(
        rngs["texture"], lay.labels, lay.roads, lay.roof, lay.shadow, lay.fields, lay.street_angle
    )
    nuis = _nuisance(rngs["nuisance"], mod, h, w, nuisances)
    img = _compose(tex, mod, table, lay.fields.crop_col, crop_cell, nuis, bands, nuisances)
    return img, nuis


def _paint_class0(
    labels: np.ndarray,
    img: np.ndarray,
    cloud_yx: tuple[np.ndarray, np.ndarray],
    cloud: np.ndarray,
    nodata: np.ndarray,
) -> bool:
    """Label opaque clouds and no-data UNKNOWN and zero the no-data pixels; True if any."""
    opaque = cloud >= 0.5
    labels[cloud_yx[0][opaque], cloud_yx[1][opaque]] = UNKNOWN
    has_nodata = bool(nodata.any())
    if has_nodata:
        labels[nodata] = UNKNOWN
        img[:, nodata] = 0.0
    return has_nodata


def _params(
    seed: int,
    bands: int,
    dt: np.dtype,
    depth: int,
    value_max: int,
    nuisances: bool,
    lay: _Layers,
    nuis: _Nuisance,
    cloud_cover: float,
    has_nodata: bool,
) -> dict[str, Any]:
    """The JSON record of how a scene was made (key order is kept in the zarr attribute)."""
    h, w = lay.labels.shape
    grid = lay.fields.grid
    return {
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
        "zone_shares": lay.shares,
        "field_grid_angle_deg": round(math.degrees(math.atan2(grid.sin, grid.cos)), 3),
        "plantation_parcels": int(lay.fields.plant_cells.sum()),
        "major_roads": lay.n_roads,
        "rivers": lay.n_rivers,
        "buildings": lay.n_buildings,
        "cloud_cover_target": round(cloud_cover, 5),
        "nodata_corner": has_nodata,
        "illumination_gradient": [round(float(g), 4) for g in nuis.grad],
    }


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
    rngs = _spawn_rngs(seed)
    lay = _draw_labels(rngs, h, w)
    cloud_yx, cloud, nodata, cloud_cover = _class0(rngs["class0"], h, w)
    img, nuis = _render(rngs, lay, bands, nuisances)
    _add_clouds(img, cloud_yx, cloud)
    if nuisances:
        _sensor(img, [rngs[f"noise{b}"] for b in range(bands)], nuis)
    has_nodata = _paint_class0(lay.labels, img, cloud_yx, cloud, nodata)
    image, value_max = _quantise(img, dt, depth)
    params = _params(
        seed, bands, dt, depth, value_max, nuisances, lay, nuis, cloud_cover, has_nodata
    )
    return Scene(image=image, labels=lay.labels, seed=int(seed), params=params)

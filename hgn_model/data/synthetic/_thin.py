"""Thin classes: rivers, roads (with urban street grids) and buildings, drawn as rasters."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from ._classes import AGRICULTURE, RANGELAND, URBAN
from ._texture import _N_ROOFS

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


def _road_lines(
    rng: np.random.Generator, h: int, w: int
) -> tuple[list[tuple[np.ndarray, int]], list[tuple[np.ndarray, int, int]]]:
    """Major roads across the scene (points, width) and minor roads off them (+ kind 1 or 2)."""
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
    return majors, minors


def _street_grid(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    """Street grid mask over the whole scene (bool) and its angle; kept only in towns later."""
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
    return np.asarray(streets) > 0, street_angle


def _roads(
    rng: np.random.Generator, h: int, w: int, zone: np.ndarray
) -> tuple[np.ndarray, list[tuple[np.ndarray, int]], int, float]:
    """Road raster (0 none, 1 paved, 2 dirt), polylines with widths, road count, street angle."""
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    lines: list[tuple[np.ndarray, int]] = []
    majors, minors = _road_lines(rng, h, w)
    for pts, width, kind in minors:
        _draw_line(draw, pts, width, kind)
        lines.append((pts, width))
    for pts, width in majors:
        _draw_line(draw, pts, width, 1)
        lines.append((pts, width))
    # urban street grid: long lines across the scene, kept only inside urban zones
    streets, street_angle = _street_grid(rng, h, w)
    roads = np.asarray(img).copy()
    street_px = streets & (zone == URBAN) & (roads == 0)
    roads[street_px] = 1
    return roads, lines, len(majors), street_angle


def _building_sites(
    rng: np.random.Generator,
    h: int,
    w: int,
    lines: list[tuple[np.ndarray, int]],
    zone: np.ndarray,
    street_angle: float,
) -> list[tuple[float, float, float]]:
    """Candidate building centres and orientations: along every road, then scattered in towns."""
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
    return cands


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
    cands = _building_sites(rng, h, w, lines, zone, street_angle)
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

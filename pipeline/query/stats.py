"""Per-class pixel counts and true areas (m2 on the ellipsoid) of a label window.

Reads a label array tile by tile (memory: one tile), counts pixels per class and weights
them by their geodesic pixel areas (:mod:`pipeline.query.areas`): exact per row on grids whose pixel
area varies only with latitude (per-row class counts times that row's pixel area), from an
interpolated area field elsewhere. Scenes without a georeference get pixel counts only:
``area_unit`` None, never an invented unit.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from pipeline.query.areas import NoAreaError, PixelAreas
from pipeline.scene import Georef

__all__ = ["ClassRow", "ClassStats", "class_stats", "with_coverage"]

_Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ClassRow:
    label: int
    name: str
    pixels: float  # level-0 pixels (exact at level 0, weighted estimate above)
    area: float | None  # m2 on the ellipsoid; None without a georeference
    fraction: float  # of the counted pixels (the whole window unless coverage < 1)
    coverage: float | None = None  # --allow-incomplete: share of the window counted


@dataclass(frozen=True)
class ClassStats:
    """Per-class pixel counts and true areas (m2, geodesic) of a scene or window.

    ``area_unit`` is ``"m2"`` when the scene is georeferenced, else None (and every row's
    ``area`` None): pixels only, never an invented unit; ``note`` says why.
    """

    scene_id: str
    level: int
    box: tuple[int, int, int, int]  # level-0 (y0, y1, x0, x1)
    exact: bool
    area_unit: str | None
    rows: tuple[ClassRow, ...]
    note: str | None = None
    coverage: float | None = None  # --allow-incomplete: share of the window counted
    left_out: tuple[str, ...] = ()  # chunk keys not counted (missing / damaged / not computed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": [asdict(r) for r in self.rows]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        areas = self.area_unit is not None
        cov = ["coverage"] if self.coverage is not None else []
        w.writerow(["label", "name", "pixels", *(["area_m2", "area_ha", "area_km2"] if areas
                                                 else []), "fraction", *cov])
        for r in self.rows:
            extra = ([f"{r.area:.3f}", f"{r.area / 1e4:.6f}", f"{r.area / 1e6:.8f}"]
                     if areas and r.area is not None else [])
            c = [f"{r.coverage:.6f}"] if r.coverage is not None else []
            w.writerow([r.label, r.name, _num(r.pixels), *extra, f"{r.fraction:.6f}", *c])
        return buf.getvalue()


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3f}"


def class_stats(scene_id: str, arr: Any, b: _Box, level: int, tiles: Sequence[_Box],
                classes: Sequence[tuple[str, Any]], georef: Georef | None,
                workers: int = 4) -> ClassStats:
    """Stats of level-0 box ``b`` from ``arr`` (the labels of pyramid ``level``), read in
    ``tiles`` (level coordinates, covering the level box of ``b``)."""
    f = 2**level
    n = max(len(classes), 256)
    lbox = (b[0] // f, -(-b[1] // f), b[2] // f, -(-b[3] // f))
    try:
        areas: PixelAreas | None = PixelAreas(georef.scaled(f) if georef else None)
        note = None
    except NoAreaError as exc:
        areas, note = None, f"scene {scene_id!r}: {exc}"
    row_area = areas.rows(lbox[0], lbox[1]) if areas and areas.rows_only else None

    def weights(lo: int, hi: int, full0: int, full1: int) -> np.ndarray:
        # Share of each coarse pixel lo..hi-1 inside [full0, full1) in level-0 pixels.
        starts = np.arange(lo, hi) * f
        return (np.minimum(starts + f, full1) - np.maximum(starts, full0)) / f

    def count(tile: _Box) -> tuple[np.ndarray, np.ndarray]:
        ty0, ty1, tx0, tx1 = tile
        labels = np.asarray(arr[ty0:ty1, tx0:tx1]).astype(np.intp)
        share = np.outer(weights(ty0, ty1, b[0], b[1]), weights(tx0, tx1, b[2], b[3]))
        pixels = np.bincount(labels.ravel(), weights=share.ravel() * f * f, minlength=n)
        if areas is None:
            return pixels, np.zeros(n)
        if row_area is not None:  # exact: per-row class counts times that row's area
            rows = labels + n * np.arange(ty1 - ty0)[:, None]
            per_row = np.bincount(rows.ravel(), weights=share.ravel(),
                                  minlength=n * (ty1 - ty0)).reshape(ty1 - ty0, n)
            return pixels, row_area[ty0 - lbox[0]:ty1 - lbox[0]] @ per_row
        pa = areas.block(ty0, ty1, tx0, tx1) * share
        return pixels, np.bincount(labels.ravel(), weights=pa.ravel(), minlength=n)

    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(count, tiles))
    counts = sum(p for p, _ in parts)
    area = sum(a for _, a in parts)
    total = (b[1] - b[0]) * (b[3] - b[2])
    rows = tuple(
        ClassRow(i, classes[i][0] if i < len(classes) else str(i), float(c),
                 float(area[i]) if areas is not None else None, float(c) / total)
        for i, c in enumerate(counts) if c > 0 or i < len(classes)
    )
    return ClassStats(scene_id, level, b, level == 0, "m2" if areas is not None else None,
                      rows, note)


def with_coverage(st: ClassStats, b: _Box, left_out: set[str]) -> ClassStats:
    """``st`` counted over part of window ``b``: fractions of what was counted, and beside
    every figure the share of the window it covers (:mod:`pipeline.query.coverage`)."""
    counted = sum(r.pixels for r in st.rows)
    coverage = counted / ((b[1] - b[0]) * (b[3] - b[2]))
    rows = tuple(replace(r, fraction=r.pixels / counted if counted else 0.0, coverage=coverage)
                 for r in st.rows)
    return replace(st, rows=rows, coverage=coverage, left_out=tuple(sorted(left_out)))

"""True pixel areas (m2) on the ellipsoid, checked against pyproj and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pyproj
import pytest

from pipeline.query.areas import NoAreaError, PixelAreas
from pipeline.scene import Georef


def _footprint_m2(georef: Georef, row: int, col: int) -> float:
    """Independent reference: pyproj.Geod on the 4 corners of one pixel."""
    crs = pyproj.CRS.from_user_input(georef.crs)
    to_ll = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    x0, dx, rx, y0, ry, dy = georef.transform
    rr, cc = np.array([row, row, row + 1, row + 1]), np.array([col, col + 1, col + 1, col])
    lon, lat = to_ll.transform(x0 + cc * dx + rr * rx, y0 + cc * ry + rr * dy)
    return abs(crs.get_geod().polygon_area_perimeter(lon, lat)[0])


def _wgs84_cell(lat0: float, lat1: float, dlon: float) -> float:
    """Closed-form area of a lat/lon cell on the WGS84 ellipsoid (authalic zone areas)."""
    a, f = 6378137.0, 1 / 298.257223563
    e2, b = f * (2 - f), a * (1 - f)
    e = math.sqrt(e2)

    def zone(lat: float) -> float:
        s = math.sin(math.radians(lat))
        return b * b / 2 * (s / (1 - e2 * s * s) + math.log((1 + e * s) / (1 - e * s)) / (2 * e))

    return math.radians(dlon) * abs(zone(lat0) - zone(lat1))


def test_geographic_grid_is_exact_per_row() -> None:
    g = Georef("EPSG:4326", (10.0, 0.25, 0.0, 60.0, 0.0, -0.25))
    areas = PixelAreas(g)
    assert areas.rows_only
    rows = areas.rows(0, 8)
    for r in range(8):
        want = _wgs84_cell(60 - 0.25 * r, 60 - 0.25 * (r + 1), 0.25)
        assert rows[r] == pytest.approx(want, rel=1e-6), r
    block = areas.block(2, 5, 0, 4)
    assert block.shape == (3, 4) and np.allclose(block, rows[2:5, None], rtol=0, atol=0)


def test_web_mercator_overstates_by_the_latitude_factor() -> None:
    """EPSG:3857 at San Francisco (37.8 N): nominal 100 m2 pixels are ~62 m2 on the ground."""
    y = pyproj.Transformer.from_crs(4326, 3857, always_xy=True).transform(-122.4, 37.8)[1]
    g = Georef("EPSG:3857", (-13627000.0, 10.0, 0.0, y, 0.0, -10.0))
    row = PixelAreas(g).rows(0, 1)[0]
    assert row == pytest.approx(_footprint_m2(g, 0, 0), rel=1e-7)
    assert 100 / row == pytest.approx(1.6, abs=0.02)  # the "60% too large" of crs_unit2
    assert row == pytest.approx(100 * math.cos(math.radians(37.8)) ** 2, rel=5e-3)


def test_utm_varies_along_rows_and_is_interpolated_exactly_enough() -> None:
    g = Georef("EPSG:32618", (180000.0, 30.0, 0.0, 4700000.0, 0.0, -30.0))  # far from CM
    areas = PixelAreas(g)
    assert not areas.rows_only
    block = areas.block(0, 300, 0, 400)
    assert block[0, 0] != pytest.approx(block[0, -1], rel=1e-6)  # scale factor changes with x
    rng = np.random.default_rng(0)
    for r, c in zip(rng.integers(0, 300, 12), rng.integers(0, 400, 12), strict=True):
        assert block[r, c] == pytest.approx(_footprint_m2(g, int(r), int(c)), rel=1e-7)


def test_rotated_and_custom_grids() -> None:
    rotated = Georef("EPSG:32633", (500000.0, 8.0, 6.0, 4600000.0, 6.0, -8.0))
    custom = Georef("+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80",
                    (4321000.0, 100.0, 0.0, 3210000.0, 0.0, -100.0))
    for g in (rotated, custom):
        areas = PixelAreas(g)
        assert not areas.rows_only
        got = areas.block(10, 80, 20, 90)
        for r, c in ((10, 20), (45, 61), (79, 89)):
            assert got[r - 10, c - 20] == pytest.approx(_footprint_m2(g, r, c), rel=1e-7)


@pytest.mark.parametrize("georef", [None, Georef(None, (0.0, 1.0, 0.0, 0.0, 0.0, -1.0))])
def test_no_crs_means_no_area(georef) -> None:
    with pytest.raises(NoAreaError, match="pixel counts only"):
        PixelAreas(georef)

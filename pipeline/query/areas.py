"""True areas of pixels on the ellipsoid, in m2, from a grid's :class:`~pipeline.scene.Georef`.

A pixel's footprint is the quadrilateral its four corners map to through the affine transform;
its corners are taken to longitude/latitude on the CRS's own datum (pyproj ``Transformer``) and
its area measured with ``pyproj.Geod`` on the CRS's ellipsoid, each edge densified with
:data:`DENSIFY` points so that edges that are straight in the CRS (parallels in lat/lon and
Mercator grids) are followed, not replaced by geodesics.

- Grids whose pixel area varies only with the row (north-up transforms in a geographic CRS or
  a cylindrical projection: Mercator, Web Mercator, equirectangular, cylindrical equal-area)
  get every row's pixel area computed exactly (:meth:`PixelAreas.rows`).
- Any other grid (UTM, Lambert, rotated transforms...) gets exact areas on a lattice every
  :data:`SAMPLE_STEP` pixels, interpolated bilinearly in between (pixel area is a smooth
  function of position: the interpolation error is far below 1e-6 relative for real grids).

Grids without a CRS have no area: :class:`NoAreaError` says so (report pixels only).
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import NoAreaError
from pipeline.scene import Georef

__all__ = ["DENSIFY", "SAMPLE_STEP", "NoAreaError", "PixelAreas"]

DENSIFY = 4  # points per footprint edge: edge-shape error falls as 1/DENSIFY^2
SAMPLE_STEP = 64  # px between exact samples on general grids
MAX_SAMPLES = 250_000  # exact footprints per grid at most (~3 s); the step grows beyond it
_CYLINDRICAL = {
    "Mercator (variant A)", "Mercator (variant B)", "Mercator (variant C)",
    "Mercator (Spherical)", "Popular Visualisation Pseudo Mercator", "Equidistant Cylindrical",
    "Equidistant Cylindrical (Spherical)", "Lambert Cylindrical Equal Area",
    "Lambert Cylindrical Equal Area (Spherical)", "Miller Cylindrical",
}


class PixelAreas:
    """Pixel areas (m2) of one grid; see the module docstring for the method."""

    def __init__(self, georef: Georef | None) -> None:
        if georef is None or not georef.crs:
            raise NoAreaError("the grid has no georeference (CRS + transform): pixel counts "
                              "only, no areas")
        from pyproj import Transformer

        from pipeline.io.geotiff import to_pyproj

        self.georef = georef
        crs = to_pyproj(georef.crs)
        self._geod = crs.get_geod()
        if self._geod is None:
            raise NoAreaError(f"CRS {georef.crs[:60]!r} has no ellipsoid: no areas in m2")
        self._to_lonlat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
        _, _, rx, _, ry, _ = georef.transform
        op = crs.coordinate_operation
        cylindrical = crs.is_geographic or (op is not None and op.method_name in _CYLINDRICAL)
        self.rows_only = bool(cylindrical and rx == 0 and ry == 0)

    def footprints(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Exact area (m2) of the pixels at integer ``rows``/``cols`` (same-shape arrays)."""
        rows, cols = np.broadcast_arrays(np.asarray(rows, float), np.asarray(cols, float))
        t = np.linspace(0.0, 1.0, DENSIFY + 1)[:-1]
        # one ring per pixel, corners (0,0) -> (0,1) -> (1,1) -> (1,0) in (row, col) offsets
        dr = np.concatenate([np.zeros_like(t), t, np.ones_like(t), 1 - t])
        dc = np.concatenate([t, np.ones_like(t), 1 - t, np.zeros_like(t)])
        r = rows.reshape(-1, 1) + dr
        c = cols.reshape(-1, 1) + dc
        x0, dx, rx, y0, ry, dy = self.georef.transform
        lon, lat = self._to_lonlat.transform(x0 + c * dx + r * rx, y0 + c * ry + r * dy)
        lon, lat = np.asarray(lon), np.asarray(lat)
        out = np.empty(lon.shape[0])
        for i in range(lon.shape[0]):
            area, _ = self._geod.polygon_area_perimeter(lon[i], lat[i])
            out[i] = abs(area)
        return out.reshape(rows.shape)

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Pixel area of each row ``y0..y1-1`` (grids with :attr:`rows_only`)."""
        if not self.rows_only:
            raise ValueError("pixel area varies along rows on this grid; use block()")
        return self.footprints(np.arange(y0, y1), np.zeros(y1 - y0))

    def block(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """``(y1 - y0, x1 - x0)`` pixel areas of a block of the grid."""
        if self.rows_only:
            return np.repeat(self.rows(y0, y1)[:, None], x1 - x0, axis=1)
        step = SAMPLE_STEP
        while ((y1 - y0) // step + 2) * ((x1 - x0) // step + 2) > MAX_SAMPLES:
            step *= 2
        ys = np.arange(y0, y1 + step, step, dtype=float)
        xs = np.arange(x0, x1 + step, step, dtype=float)
        lattice = self.footprints(ys[:, None], xs[None, :])
        fy = (np.arange(y0, y1) - y0) / step
        fx = (np.arange(x0, x1) - x0) / step
        iy, ix = np.minimum(fy.astype(int), len(ys) - 2), np.minimum(fx.astype(int), len(xs) - 2)
        wy, wx = (fy - iy)[:, None], (fx - ix)[None, :]
        a, b = lattice[iy][:, ix], lattice[iy][:, ix + 1]
        c, d = lattice[iy + 1][:, ix], lattice[iy + 1][:, ix + 1]
        return (a * (1 - wy) * (1 - wx) + b * (1 - wy) * wx + c * wy * (1 - wx) + d * wy * wx)

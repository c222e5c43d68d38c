"""Georeference of GDAL rasters, through rasterio (GDAL) and pyproj: never parsed by hand.

GDAL reads every way a GeoTIFF can state its grid (tiepoint + pixel scale, a transformation
matrix, PixelIsPoint, user-defined projections from GeoKeys, ``.aux.xml`` and world-file
sidecars) and hands rasterio a CRS and an affine transform. Here they become a
:class:`~pipeline.scene.Georef`: the CRS as ``"EPSG:<code>"`` when pyproj finds an exact EPSG
match (confidence 100), else as WKT2 so no parameter of a custom projection is lost.
"""

from __future__ import annotations

import warnings
from typing import Any

from pipeline.scene import Georef

__all__ = ["crs_string", "georef_of", "to_pyproj", "to_rasterio_crs"]

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def crs_string(crs: Any) -> str | None:
    """``"EPSG:<code>"`` for an exact EPSG CRS, else WKT2 (2019); None for no CRS.

    ``crs``: a rasterio ``CRS``, a pyproj ``CRS``, or anything pyproj accepts (WKT, PROJ
    strings, ``"EPSG:4326"``).
    """
    if crs is None:
        return None
    proj = to_pyproj(crs)
    code = proj.to_epsg(min_confidence=100)
    if code is not None:
        return f"EPSG:{code}"
    return proj.to_wkt(version="WKT2_2019")


def to_pyproj(crs: Any) -> Any:
    """A ``pyproj.CRS`` from a rasterio CRS, a pyproj CRS or any CRS text."""
    import pyproj

    if isinstance(crs, pyproj.CRS):
        return crs
    if hasattr(crs, "to_wkt"):  # rasterio CRS
        return pyproj.CRS.from_wkt(crs.to_wkt())
    return pyproj.CRS.from_user_input(crs)


def to_rasterio_crs(crs: str | None) -> Any:
    """A rasterio ``CRS`` for a :class:`Georef` CRS string (EPSG code or WKT); None for None."""
    if crs is None:
        return None
    from rasterio.crs import CRS

    return CRS.from_user_input(crs)


def georef_of(dataset: Any) -> Georef | None:
    """The georeference of an open rasterio dataset; None for a plain image.

    GDAL reports an identity transform for rasters without one (a PNG without world file):
    that is no georeference, unless a CRS is declared with it. Rasters georeferenced only by
    GCPs or RPCs have no affine grid and are treated as not georeferenced.
    """
    transform = tuple(float(v) for v in tuple(dataset.transform)[:6])
    crs = dataset.crs
    if transform == _IDENTITY and not crs:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Georef.from_affine(crs_string(crs) if crs else None, transform)

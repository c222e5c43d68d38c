"""GeoTIFF georeference: read from TIFF tags, write tags for tifffile.

Only the parts we need, parsed from the raw tags (no GDAL/rasterio):
``ModelTransformationTag`` (34264) or ``ModelTiepointTag`` (33922) + ``ModelPixelScaleTag``
(33550) give the affine transform; the ``GeoKeyDirectoryTag`` (34735) gives the EPSG code
(ProjectedCSTypeGeoKey 3072, else GeographicTypeGeoKey 2048) and the raster type
(GTRasterTypeGeoKey 1025). Transforms are returned in GDAL order
``(x0, dx, rx, y0, ry, dy)``; for PixelIsPoint rasters the origin is shifted by half a pixel,
as GDAL does by default, so it always refers to the corner of pixel (0, 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["geotiff_extratags", "parse_geotiff"]

TAG_PIXEL_SCALE = 33550
TAG_TIEPOINT = 33922
TAG_TRANSFORMATION = 34264
TAG_GEOKEYS = 34735
KEY_MODEL_TYPE = 1024
KEY_RASTER_TYPE = 1025
KEY_GEOGRAPHIC_CRS = 2048
KEY_PROJECTED_CRS = 3072
RASTER_PIXEL_IS_AREA = 1
RASTER_PIXEL_IS_POINT = 2
MODEL_PROJECTED = 1
MODEL_GEOGRAPHIC = 2
USER_DEFINED = 32767

Transform = tuple[float, float, float, float, float, float]


def _geokeys(values: Sequence[int]) -> dict[int, int]:
    """Short-valued keys of a GeoKeyDirectory (others point into other tags; unneeded)."""
    if len(values) < 4:
        return {}
    count = int(values[3])
    keys: dict[int, int] = {}
    for i in range(count):
        entry = values[4 + 4 * i : 8 + 4 * i]
        if len(entry) < 4:
            break
        key_id, location, _n, value = (int(v) for v in entry)
        if location == 0:
            keys[key_id] = value
    return keys


def parse_geotiff(tags: Any) -> tuple[str | None, Transform] | None:
    """``(crs, gdal_transform)`` from a tifffile ``TiffTags`` mapping, or None if ungeoreferenced.

    ``crs`` is ``"EPSG:<code>"`` or None when the file uses a user-defined CRS.
    """
    def value(code: int) -> Any:
        tag = tags.get(code)
        return None if tag is None else tag.value

    matrix, tiepoint, scale = value(TAG_TRANSFORMATION), value(TAG_TIEPOINT), value(TAG_PIXEL_SCALE)
    transform: list[float] | None = None
    if matrix is not None and len(matrix) >= 8:
        m = [float(v) for v in matrix]
        transform = [m[3], m[0], m[1], m[7], m[4], m[5]]
    elif tiepoint is not None and scale is not None and len(tiepoint) >= 6 and len(scale) >= 2:
        # One tiepoint + pixel scale: pixel (i, j) maps to model (x, y); y grows downwards in
        # raster space, so the GDAL dy is -scale_y.
        i, j, _k, x, y, _z = (float(v) for v in tiepoint[:6])
        sx, sy = float(scale[0]), float(scale[1])
        transform = [x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy]
    if transform is None:
        return None
    keys = _geokeys(value(TAG_GEOKEYS) or ())
    if keys.get(KEY_RASTER_TYPE) == RASTER_PIXEL_IS_POINT:
        transform[0] -= 0.5 * transform[1] + 0.5 * transform[2]
        transform[3] -= 0.5 * transform[4] + 0.5 * transform[5]
    crs: str | None = None
    for key in (KEY_PROJECTED_CRS, KEY_GEOGRAPHIC_CRS):
        code = keys.get(key)
        if code is not None and 0 < code < USER_DEFINED:
            crs = f"EPSG:{code}"
            break
    return crs, (transform[0], transform[1], transform[2], transform[3], transform[4], transform[5])


ExtraTag = tuple[int, str, int, tuple, bool]


def geotiff_extratags(crs: str | None, transform: Sequence[float]) -> list[ExtraTag]:
    """tifffile ``extratags`` that georeference an image (PixelIsArea).

    ``crs``: ``"EPSG:<code>"`` (projected codes 2000-32766 other than 4000-4999 are written as
    ProjectedCSTypeGeoKey, 4000-4999 as GeographicTypeGeoKey) or None. ``transform``: GDAL
    order. North-up transforms are written as tiepoint + scale, others as a full matrix.
    """
    x0, dx, rx, y0, ry, dy = (float(v) for v in transform)
    tags: list[ExtraTag] = []
    if rx == 0.0 and ry == 0.0 and dy < 0:
        tags.append((TAG_PIXEL_SCALE, "d", 3, (dx, -dy, 0.0), True))
        tags.append((TAG_TIEPOINT, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True))
    else:
        matrix = (dx, rx, 0.0, x0, ry, dy, 0.0, y0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
        tags.append((TAG_TRANSFORMATION, "d", 16, matrix, True))
    keys: list[tuple[int, int]] = [(KEY_RASTER_TYPE, RASTER_PIXEL_IS_AREA)]
    if crs is not None:
        if not crs.upper().startswith("EPSG:"):
            raise ValueError(f"crs={crs!r}: only 'EPSG:<code>' can be written as GeoKeys")
        code = int(crs.split(":", 1)[1])
        geographic = 4000 <= code < 5000
        keys.append((KEY_MODEL_TYPE, MODEL_GEOGRAPHIC if geographic else MODEL_PROJECTED))
        keys.append((KEY_GEOGRAPHIC_CRS if geographic else KEY_PROJECTED_CRS, code))
    keys.sort()
    directory = [1, 1, 0, len(keys)]
    for key_id, val in keys:
        directory += [key_id, 0, 1, val]
    tags.append((TAG_GEOKEYS, "H", len(directory), tuple(directory), True))
    return tags

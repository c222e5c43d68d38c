"""Export a scene's labels (or confidence) as a Cloud-Optimized GeoTIFF for GIS tools.

What the COG holds (GDAL's COG driver writes it, so QGIS, ArcGIS, GDAL and web maps read it):

- the input's CRS and a pixel-exact transform (the window's origin shifted by whole pixels);
- one uint8 band; nodata 0 (label 0 is "no data / unclassified"; confidence 0 is nodata);
- labels: the class colours as a colour table, class names in the metadata
  (``CLASS_<id>=<name>`` and ``CLASSES`` as JSON) so ``gdalinfo`` lists them;
- 512 px internal tiles, overviews down to one tile built by MODE for labels (a coarse pixel
  is the most frequent class, never an interpolated id) and AVERAGE for confidence, nodata
  excluded; DEFLATE (default) or ZSTD compression.

Level-0 tiles are read through :class:`pipeline.query.SceneView` (local or ``s3://`` outputs)
into a temporary tiled GeoTIFF, one output chunk at a time (memory bounded by the chunk, never
the scene), which the COG driver then copies with overviews. ``path`` may be local or
``s3://`` (written locally, then uploaded); a local file appears only once complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, OutputError
from pipeline.io.geotiff import to_rasterio_crs
from pipeline.io.omezarr import CONFIDENCE_LAYER, LABELS_LAYER
from pipeline.names import check_export_path
from pipeline.storage import get_fs, is_remote, redact, strip_protocol

__all__ = ["COMPRESSIONS", "FORMATS", "ExportResult", "export_cog"]

FORMATS = ("cog",)
COMPRESSIONS = ("deflate", "zstd")
BLOCKSIZE = 512  # COG tile side: the common choice of GDAL, QGIS and tile servers


@dataclass(frozen=True)
class ExportResult:
    path: str
    layer: str
    box: tuple[int, int, int, int]  # level-0 (y0, y1, x0, x1) exported
    crs: str | None
    transform: tuple[float, ...] | None  # GDAL order of the exported grid
    overviews: list[int]

    def describe(self) -> str:
        y0, y1, x0, x1 = self.box
        geo = f"CRS {self.crs if self.crs and len(self.crs) < 40 else 'custom (WKT2)'}" \
            if self.crs else "no georeference"
        return (f"{self.path}: {self.layer}, {y1 - y0} x {x1 - x0} px (box {list(self.box)}), "
                f"{geo}, overviews {self.overviews}")


def _metadata(view: Any, layer: str) -> tuple[dict[str, str], dict[int, tuple[int, ...]] | None]:
    if layer != LABELS_LAYER:
        return {"LAYER": "confidence", "UNITS": "round(255 * max softmax); 0 = nodata"}, None
    names = [name for name, _ in view.classes]
    tags = {"LAYER": "segmentation", "CLASSES": json.dumps(names)}
    tags.update({f"CLASS_{i}": name for i, name in enumerate(names)})
    colours = {i: tuple(int(c) for c in rgba) for i, (_, rgba) in enumerate(view.classes)}
    return tags, colours


def _write_tiles(view: Any, tmp: str, layer: str, box: tuple[int, int, int, int],
                 georef: Any) -> None:
    """The window as a tiled GeoTIFF, one output chunk (or so) at a time."""
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    tags, colours = _metadata(view, layer)
    profile: dict[str, Any] = dict(
        driver="GTiff", width=w, height=h, count=1, dtype="uint8", nodata=0, tiled=True,
        blockxsize=BLOCKSIZE, blockysize=BLOCKSIZE, compress="deflate", zlevel=1,
        BIGTIFF="IF_SAFER",
    )
    if georef is not None:
        profile["transform"] = Affine(*georef.affine)
        if georef.crs:
            profile["crs"] = to_rasterio_crs(georef.crs)
    step_y = max(BLOCKSIZE, view.chunk[0] // BLOCKSIZE * BLOCKSIZE)
    step_x = max(BLOCKSIZE, view.chunk[1] // BLOCKSIZE * BLOCKSIZE)
    with rasterio.open(tmp, "w", **profile) as dst:
        for ty in range(y0, y1, step_y):
            for tx in range(x0, x1, step_x):
                tile = (ty, min(ty + step_y, y1), tx, min(tx + step_x, x1))
                data = view.read(tile, layer=layer)
                dst.write(data, 1, window=Window(tx - x0, ty - y0, data.shape[1],
                                                 data.shape[0]))
        dst.update_tags(**tags)
        dst.set_band_description(1, "class id" if layer == LABELS_LAYER else "confidence")
        if colours is not None:
            dst.write_colormap(1, colours)


def _to_cog(tmp: str, out: str, layer: str, compress: str) -> list[int]:
    import rasterio
    from rasterio.shutil import copy as rio_copy

    resampling = "MODE" if layer == LABELS_LAYER else "AVERAGE"
    rio_copy(tmp, out, driver="COG", COMPRESS=compress.upper(), BLOCKSIZE=BLOCKSIZE,
             OVERVIEWS="AUTO", RESAMPLING=resampling, OVERVIEW_RESAMPLING=resampling,
             BIGTIFF="IF_SAFER")
    with rasterio.open(out) as ds:
        return list(ds.overviews(1))


def export_cog(
    view: Any,
    path: str | Path,
    *,
    what: str = LABELS_LAYER,
    box: Sequence[int] | None = None,
    bbox: Sequence[float] | None = None,
    clip: bool = False,
    compress: str = "deflate",
    storage_options: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Write ``view``'s ``what`` layer (or a window) as a COG at ``path`` (see module doc)."""
    layer = {"labels": LABELS_LAYER}.get(what, what)
    if layer not in (LABELS_LAYER, CONFIDENCE_LAYER):
        raise ConfigError(f"--what {what!r}: export {LABELS_LAYER!r} (labels) or "
                          f"{CONFIDENCE_LAYER!r}")
    if layer not in view.layers:
        raise ConfigError(f"scene {view.scene_id!r} has no {layer} layer (layers: "
                          f"{view.layers}); it was run with confidence: false")
    if compress not in COMPRESSIONS:
        raise ConfigError(f"compress={compress!r}: use one of {COMPRESSIONS}")
    b = view.pixel_box(box, bbox, clip)
    georef = view.georef.shifted(b[0], b[2]) if view.georef is not None else None
    target = check_export_path(str(path))  # pipeline.names: one rule for names that are paths
    remote = is_remote(target)
    if not remote:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hgn-export-",
                                     dir=None if remote else str(Path(target).parent)) as tmpd:
        tiles = os.path.join(tmpd, "tiles.tif")
        local = os.path.join(tmpd, "out.tif")
        try:
            _write_tiles(view, tiles, layer, b, georef)
            overviews = _to_cog(tiles, local, layer, compress)
            if remote:
                get_fs(target, storage_options).put_file(local, strip_protocol(target))
            else:
                os.replace(local, target)  # same folder: never a half-written target
        except Exception as exc:
            raise OutputError(f"scene {view.scene_id!r}: exporting {layer} to {target} failed: "
                              f"{type(exc).__name__}: {redact(str(exc), storage_options)}"
                              ) from None
    return ExportResult(target, layer, b, georef.crs if georef else None,
                        georef.transform if georef else None, overviews)

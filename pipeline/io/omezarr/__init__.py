"""OME-Zarr 0.5 (zarr v3) output: one group per scene at ``<output>/<scene_id>.ome.zarr``.

Store layout (``L`` levels, ``L >= 3`` by default; level k is 2^k times coarser)::

    <scene_id>.ome.zarr/
      zarr.json               root attrs: ome {version "0.5", multiscales: the confidence image},
                              hgn {provenance, georeference, writer grid, status},
                              GeoZarr-like proj:code / spatial:* keys (level 0)
      0 .. L-1                confidence, uint8 (y, x): round(max softmax * 255)
      labels/zarr.json        ome {version "0.5", labels: ["segmentation"]}
      labels/segmentation/    multiscale label image + image-label (colors, properties)
        0 .. L-1              class ids, uint8 (y, x)

Where confidence lives: it is the *root image* of the OME-Zarr group. The spec attaches a
``labels`` group to an image, so the confidence map (a real, per-pixel image on the same
grid) is that image; viewers (napari, ome-zarr-py) then show confidence as grey levels with
the segmentation overlaid, and ome-zarr-models validates the whole group as an ``Image`` with
labels. With ``confidence=False`` the root has no image (``ome`` holds only the version) and
``labels/segmentation`` is still a complete, valid image-label group; open that path directly.

Georeference (when the input has one), kept in three forms:
- ``attrs["hgn"]["georeference"] = {"crs": "EPSG:32633", "transform": [x0, dx, rx, y0, ry, dy]}``
  (GDAL order, level 0; ``crs`` is WKT2 when the CRS has no EPSG code), as the contract says;
- GeoZarr-like keys on the root group, the ``labels/segmentation`` group (level 0 values) and
  on every level array (that level's values): ``proj:code`` (EPSG CRSs) and ``proj:wkt2``
  (always: the full CRS, so custom projections survive),
  ``spatial:transform`` (affine in rasterio ``Affine`` order ``[a, b, c, d, e, f]``),
  ``spatial:dimensions`` ``["y", "x"]``, ``spatial:shape``, ``spatial:registration`` "pixel".
  An xarray user reads them from ``DataArray.attrs``; a rioxarray user does
  ``da.rio.write_crs(attrs["proj:wkt2"]).rio.write_transform(Affine(*attrs["spatial:transform"]))``.

Multiscale coordinate transforms are in level-0 pixel units: level k has ``scale`` 2^k and
``translation`` (2^k - 1) / 2, so each coarse pixel centre sits at the centre of the level-0
block it summarises. Labels are downsampled by the 2x2 *mode* (ties go to the first value in
row-major order inside the block; odd edges replicate the last row/column), never
interpolated; confidence by the rounded 2x2 mean.

Writes: ``write_block`` stores level 0 only, in whole chunk-aligned regions (the last
row/column of chunks may be short at the scene edge), so each chunk has exactly one writer.
``finalize`` builds levels 1.. block by block: each task writes whole coarse chunks (about
0.25 Mpx, at least one chunk) from the 2x larger finer region, so memory stays bounded by the
chunk size for any scene size; then it marks ``hgn.status = "complete"``.
"""

from pipeline.io.omezarr._arrays import open_group, read_array
from pipeline.io.omezarr._change_layer import (
    CHANGE_LAYER,
    UNCHANGED_RGBA,
    ChangeLayerWriter,
    change_colors,
    open_change_level,
    read_change_attrs,
)
from pipeline.io.omezarr._layout import (
    CONFIDENCE_LAYER,
    LABELS_LAYER,
    MIN_LEVELS,
    STORE_SUFFIX,
    crs_attrs,
    georef_attrs,
    scene_store_url,
)
from pipeline.io.omezarr._pyramid import downsample_level, mean_downsample, mode_downsample
from pipeline.io.omezarr._writer import SceneWriter

__all__ = [
    "CHANGE_LAYER",
    "CONFIDENCE_LAYER",
    "LABELS_LAYER",
    "MIN_LEVELS",
    "STORE_SUFFIX",
    "UNCHANGED_RGBA",
    "ChangeLayerWriter",
    "SceneWriter",
    "change_colors",
    "crs_attrs",
    "downsample_level",
    "georef_attrs",
    "mean_downsample",
    "mode_downsample",
    "open_change_level",
    "open_group",
    "read_array",
    "read_change_attrs",
    "scene_store_url",
]

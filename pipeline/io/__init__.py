"""Bytes in and out: scene readers, the OME-Zarr output store, GeoTIFF export.

- :mod:`~pipeline.io.formats`: one module per input format (probe metadata + open), behind
  the :class:`~pipeline.io.readers.SceneReader` base of :mod:`~pipeline.io.readers`;
- :mod:`~pipeline.io.omezarr`: the output store (layout, writer, pyramid, change layer);
- :mod:`~pipeline.io.geotiff`: CRS and georeference conversions for GDAL/rasterio;
- :mod:`~pipeline.io.export`: a scene as a Cloud-Optimized GeoTIFF.
"""

from pipeline.io.omezarr import SceneWriter, scene_store_url
from pipeline.io.readers import SceneReader, open_scene

__all__ = ["SceneReader", "SceneWriter", "open_scene", "scene_store_url"]

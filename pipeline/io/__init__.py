"""Scene readers (zarr, OME-Zarr, TIFF) and the OME-Zarr scene writer."""

from pipeline.io.omezarr import SceneWriter, scene_store_url
from pipeline.io.readers import SceneReader, open_scene

__all__ = ["SceneReader", "SceneWriter", "open_scene", "scene_store_url"]

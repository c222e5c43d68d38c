"""A procedural ultra-high-resolution (UHR) aerial benchmark, deterministic from a seed.

No real UHR aerial data can be fetched here, so this module draws scenes that make the HGN
trade-off real (see ``shared/design/hgn-model.md``, "Why a synthetic benchmark"):

* **Region classes** (urban, agriculture, rangeland, forest, water) are smooth irregular areas
  hundreds of px across, each with its own texture. Their layout is a per-scene random partition
  of smooth noise fields at 1/4 resolution; border pixels are decided again at full resolution
  on the interpolated fields, so borders are smooth curves rather than 4 px staircases.
* **Context pair** ``CONTEXT_CLASSES = (forest, plantation)``: both are painted by one texture
  entry (same base colour, same noise fields, same amplitudes), so their local statistics are
  identical. They differ only in large-scale layout: a plantation is one parcel of the
  agricultural field grid - a straight-edged rotated rectangle of ~115-415 px per side, wholly
  inside the scene, in a parcel that is mostly farmland (it may replace rangeland, never town or
  water) and framed by the grid's grass tracks - while forest is an irregular blob of the
  natural landscape, never closer than ``PLANTATION_FOREST_GAP`` px to a plantation. Telling an
  interior pixel apart therefore needs a receptive field of hundreds of px (to see the outline
  of the region or the field grid around it). tests/test_synthetic.py measures the cue as the
  rectangularity of connected components (area / smallest rotated bounding-box area): >= 0.88
  for plantations, 0.37-0.76 for forests on seeds 0-4.
* **Thin classes** ``THIN_CLASSES = (road, river, building)``: roads are 2-6 px polylines
  (paved or dirt) plus street grids in urban areas; rivers are 3-6 px meandering lines with
  tributaries that end at lakes; buildings are 4-8 px rotated rectangles with varied roof
  colours and a cast shadow, mostly along roads and in towns. At 1/4 resolution they are one or
  two mixed pixels wide (a perfect block-majority map at 1/4 reaches only ~0.4-0.7 IoU on them,
  ~0.98 on region classes) and at 1/16 they are gone (IoU <= 0.03), so a deep-only network on a
  1/4 input fails them.
* **Class 0 (unknown)**: opaque clouds (label 0 where cloud opacity >= 0.5) and, in some scenes,
  a no-data corner of exact zeros, as at the edge of a satellite swath.
* **Nuisances** (``nuisances=True``): per-scene band gain/offset and haze, a linear illumination
  gradient with low-frequency shading, optical blur, and signal-dependent sensor noise.

Radiometry: scenes are composed in float32 reflectance-like values in [0, 1] and quantised at the
end. ``dtype="uint8"`` gives 0-255. ``dtype="uint16"`` gives 16-bit radiometry by default
(``bit_depth=16``: 0-65535, which a model reading uint16 as ``/ 65535`` takes as is) or, with
``bit_depth=12``, 12-bit values 0-4095 in a uint16 container as many satellite products store
them (read them with a value maximum of 4095). Same seed and size give the same labels and the
same scene at every dtype, band count and bit depth. The optional 4th band is near-infrared-like:
high for vegetation (trees, green crops), low for water, medium for built surfaces.

Sizes are in pixels at full resolution and do not scale with the scene: a 1000 x 1333 scene is a
crop-like piece of the same landscape statistics as a 2448 x 2448 one.

Class shares, mean of seeds 0-9 at 2448 x 2448 (%): unknown 2.6, urban 12.9, agriculture 29.0,
rangeland 23.8, forest 18.9, plantation 2.0, water 8.0, road 1.65, river 0.70, building 0.53.
One 2448 x 2448 scene takes ~1.5 s of one CPU core.

Modules (private; import from this package): ``_classes`` (label classes, ``Scene``),
``_noise`` (noise fields), ``_layout`` (zones, field grid, plantations), ``_thin`` (rivers,
roads, buildings), ``_texture`` (ground appearance), ``_radiometry`` (class 0, nuisances, sensor,
quantising), ``_scene`` (``generate_scene``, its phases and random streams), ``_store`` (zarr),
``_preview`` (PNG) and ``_cli`` (``python -m hgn_model.data.synthetic``).
"""

from __future__ import annotations

# the class ids and PLANTATION_FOREST_GAP stay importable from here, outside ``__all__``
from ._classes import AGRICULTURE as AGRICULTURE
from ._classes import BUILDING as BUILDING
from ._classes import CLASSES, CONTEXT_CLASSES, NUM_CLASSES, THIN_CLASSES, ClassSpec, Scene
from ._classes import FOREST as FOREST
from ._classes import PLANTATION as PLANTATION
from ._classes import RANGELAND as RANGELAND
from ._classes import RIVER as RIVER
from ._classes import ROAD as ROAD
from ._classes import UNKNOWN as UNKNOWN
from ._classes import URBAN as URBAN
from ._classes import WATER as WATER
from ._cli import main
from ._layout import PLANTATION_FOREST_GAP as PLANTATION_FOREST_GAP
from ._preview import preview_png
from ._scene import GENERATOR_VERSION, generate_scene
from ._store import make_archive, read_scene_zarr, write_scene_zarr

__all__ = [
    "CLASSES",
    "CONTEXT_CLASSES",
    "GENERATOR_VERSION",
    "NUM_CLASSES",
    "THIN_CLASSES",
    "ClassSpec",
    "Scene",
    "generate_scene",
    "main",
    "make_archive",
    "preview_png",
    "read_scene_zarr",
    "write_scene_zarr",
]

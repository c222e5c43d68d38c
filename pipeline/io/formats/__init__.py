"""The format layer: one module per input format, each behind the :class:`Format` protocol.

A format answers two questions:

- ``probe(target) -> SceneInfo | Skip | Unreadable``: from metadata only (never pixels), is
  this file / store a scene, and what is it (shape (C, H, W), dtype, nodata, georeference,
  fingerprint)? ``Skip``: not a scene, reported but no error; ``Unreadable``: meant to be a
  scene and unusable, the scene fails with the reason.
- ``open(info, storage_options) -> SceneReader``: a picklable, lazy reader of windows
  ``(C, h, w)`` in the scene's native dtype (:mod:`pipeline.io.readers`).

Formats:

========================  =================  ===============================================
module                    ``SceneInfo.kind``  what
========================  =================  ===============================================
:mod:`.zarr_store`        zarr, ome-zarr     zarr v2/v3 arrays and groups, OME-Zarr 0.4/0.5
:mod:`.raster`            raster             GeoTIFF/COG, PNG, JPEG, JPEG 2000, VRT (GDAL)
:mod:`.band_files`        bandfiles          one single-band raster per band, one grid
========================  =================  ===============================================

:func:`format_for_file` picks a format by file name, :func:`format_for_kind` by
``SceneInfo.kind``. ``pipeline.catalog`` walks an archive and dispatches to ``probe``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from pipeline.errors import SceneReadError
from pipeline.io.formats._common import BandFile, Target
from pipeline.io.formats.band_files import BandFilesFormat
from pipeline.io.formats.raster import RASTER_SUFFIXES, RasterFormat
from pipeline.io.formats.zarr_store import ZarrFormat, is_zarr_store
from pipeline.io.readers import SceneReader
from pipeline.scene import Probe, SceneInfo

__all__ = [
    "FORMATS",
    "RASTER_SUFFIXES",
    "BandFile",
    "Format",
    "Target",
    "format_for_file",
    "format_for_kind",
    "is_zarr_store",
]


@runtime_checkable
class Format(Protocol):
    """One input format: metadata probe + lazy windowed reader."""

    name: str
    kinds: tuple[str, ...]  # SceneInfo.kind values it reads
    suffixes: tuple[str, ...]  # lowercase file-name endings it claims

    def probe(self, target: Target) -> Probe: ...

    def open(self, info: SceneInfo, storage_options: Mapping[str, Any] | None = None
             ) -> SceneReader: ...


FORMATS: tuple[Format, ...] = (ZarrFormat(), RasterFormat(), BandFilesFormat())
_BY_KIND = {kind: fmt for fmt in FORMATS for kind in fmt.kinds}


def format_for_kind(kind: str, info: SceneInfo | None = None) -> Format:
    """The format that reads scenes of ``kind``; SceneReadError names the scene otherwise."""
    fmt = _BY_KIND.get(kind)
    if fmt is None:
        sid, url = (info.scene_id, info.url) if info is not None else ("?", "?")
        raise SceneReadError(sid, url, f"unknown scene kind {kind!r}; known: "
                                       f"{sorted(_BY_KIND)}")
    return fmt


def format_for_file(name: str) -> Format | None:
    """The format claiming a file name by its ending (longest ending wins); None if none."""
    lower = name.lower()
    best: tuple[int, Format] | None = None
    for fmt in FORMATS:
        for suffix in fmt.suffixes:
            fits = lower.endswith(suffix) and len(lower) > len(suffix)
            if fits and (best is None or len(suffix) > best[0]):
                best = (len(suffix), fmt)
    return best[1] if best else None

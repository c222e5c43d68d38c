"""Scene value types shared by every layer: catalog, formats, readers, planning, outputs.

A leaf module: it imports nothing from ``pipeline`` except :mod:`pipeline.errors`, so every
layer may import it without cycles. All types are frozen dataclasses with JSON round trips.

- :class:`Georef`: CRS + GDAL affine transform of a pixel grid.
- :class:`SceneInfo`: one scene (where, shape ``(C, H, W)``, dtype, nodata, fingerprint...).
- Probe outcomes of a format (:mod:`pipeline.io.formats`): a ``SceneInfo``, :class:`Skip`
  (not a scene: reported, never an error) or :class:`Unreadable` (meant to be a scene, but it
  cannot be used: the scene fails with the reason).
- :class:`SceneFailure` (a scene the catalog found but cannot use) and :class:`SkippedFile`
  (a file under the archive that is not a scene), both reported in the run summary/manifest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.errors import ConfigError

__all__ = [
    "LAYOUTS",
    "SUPPORTED_DTYPES",
    "Georef",
    "Probe",
    "SceneFailure",
    "SceneInfo",
    "Skip",
    "SkippedFile",
    "Unreadable",
    "nodata_from_json",
    "nodata_to_json",
]

LAYOUTS = ("CHW", "HWC")
# Every real dtype the model normalises (contract C1); bool, complex and 64-bit ints are not.
SUPPORTED_DTYPES = (
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float16", "float32", "float64",
)

Transform = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class Georef:
    """CRS + affine transform of pixel (0, 0)'s corner, GDAL order ``(x0, dx, rx, y0, ry, dy)``.

    ``crs`` is ``"EPSG:<code>"`` when the CRS is exactly an EPSG definition, else its WKT2
    text (a user-defined projection keeps every parameter), None when the file declares none.
    """

    crs: str | None
    transform: Transform

    def __post_init__(self) -> None:
        if len(self.transform) != 6:
            raise ConfigError(
                f"Georef.transform={self.transform!r} must have 6 floats (x0, dx, rx, y0, ry, dy)"
            )
        object.__setattr__(self, "transform", tuple(float(v) for v in self.transform))

    @property
    def affine(self) -> tuple[float, float, float, float, float, float]:
        """The transform in rasterio ``Affine`` order ``(a, b, c, d, e, f)``."""
        x0, dx, rx, y0, ry, dy = self.transform
        return (dx, rx, x0, ry, dy, y0)

    @classmethod
    def from_affine(cls, crs: str | None, affine: Any) -> Georef:
        """From a rasterio ``Affine`` (or its first 6 coefficients)."""
        a, b, c, d, e, f = (float(v) for v in tuple(affine)[:6])
        return cls(crs, (c, a, b, f, d, e))

    def scaled(self, factor: float) -> Georef:
        """The georef of a grid downsampled by ``factor`` (same origin, bigger pixels)."""
        x0, dx, rx, y0, ry, dy = self.transform
        return Georef(self.crs, (x0, dx * factor, rx * factor, y0, ry * factor, dy * factor))

    def shifted(self, row: int, col: int) -> Georef:
        """The georef of the sub-grid whose pixel (0, 0) is this grid's pixel (row, col)."""
        x0, dx, rx, y0, ry, dy = self.transform
        return Georef(self.crs, (x0 + col * dx + row * rx, dx, rx, y0 + col * ry + row * dy,
                                 ry, dy))

    def to_dict(self) -> dict[str, Any]:
        return {"crs": self.crs, "transform": list(self.transform)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Georef:
        return cls(data.get("crs"), tuple(data["transform"]))


def nodata_to_json(value: float | None) -> float | str | None:
    """JSON has no NaN: a NaN nodata is written as the string ``"nan"``."""
    if value is not None and math.isnan(value):
        return "nan"
    return value


def nodata_from_json(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)  # float("nan") parses "nan"


@dataclass(frozen=True)
class SceneInfo:
    """One scene: where it is, its (C, H, W) shape, dtype, nodata, fingerprint, georeference.

    ``kind`` names the format that reads it (``"zarr"``, ``"ome-zarr"``, ``"raster"`` for
    every file GDAL reads, ``"bandfiles"`` for one file per band); ``axes`` the stored axis
    order in lowercase (``"cyx"``, ``"yxc"``, ``"tczyx"``...); ``chunks`` the stored chunk or
    tile shape as (C, H, W) when known. ``nodata`` is the effective nodata value (from the file
    or the run config's ``nodata``; NaN allowed). ``files`` lists the band files of a
    multi-file scene, in band order (``url`` is then the first of them).
    """

    scene_id: str
    url: str  # zarr store root, raster file, or first band file
    kind: str
    array_path: str | None  # array inside a zarr store ("image", "0"); None otherwise
    shape: tuple[int, int, int]  # (C, H, W)
    layout: str  # "CHW" | "HWC" as stored
    dtype: str
    fingerprint: str
    georef: Georef | None = None
    ground_truth: str | None = None  # array path of ground-truth labels in the same store
    axes: str = ""
    chunks: tuple[int, int, int] | None = None
    nodata: float | None = None
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.nodata is not None:
            value = float(self.nodata)
            # One NaN object, so two infos with NaN nodata compare equal (tuples check `is`).
            object.__setattr__(self, "nodata", math.nan if math.isnan(value) else value)

    @property
    def bands(self) -> int:
        return self.shape[0]

    @property
    def height(self) -> int:
        return self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[2]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (manifests, ledgers); NaN nodata as ``"nan"``."""
        data = asdict(self)
        data["nodata"] = nodata_to_json(self.nodata)
        data["files"] = list(self.files)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SceneInfo:
        values = dict(data)
        georef = values.get("georef")
        if isinstance(georef, Mapping):
            values["georef"] = Georef.from_dict(georef)
        values["shape"] = tuple(values["shape"])
        if values.get("chunks") is not None:
            values["chunks"] = tuple(values["chunks"])
        values["nodata"] = nodata_from_json(values.get("nodata"))
        values["files"] = tuple(values.get("files") or ())
        return cls(**values)


@dataclass(frozen=True)
class Skip:
    """Probe outcome: not a scene (a text file, a sidecar). Reported, never an error."""

    reason: str


@dataclass(frozen=True)
class Unreadable:
    """Probe outcome: meant to be a scene but unusable; the scene fails with ``reason``."""

    reason: str


Probe = SceneInfo | Skip | Unreadable


@dataclass(frozen=True)
class SceneFailure:
    """A scene the catalog found but cannot use; ``str()`` names scene, URL and reason."""

    scene_id: str
    url: str
    reason: str

    def __str__(self) -> str:
        return f"scene {self.scene_id!r} ({self.url}): {self.reason}"


@dataclass(frozen=True)
class SkippedFile:
    """A file (or folder) under the archive that is not a scene, and why."""

    path: str  # relative to the archive root
    url: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

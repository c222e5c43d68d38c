"""Names, paths and metadata of the store layout (see :mod:`pipeline.io.omezarr`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError
from pipeline.names import check_scene_id
from pipeline.storage import join_url, redact, resolve_url

if TYPE_CHECKING:
    from pipeline.scene import Georef

LABELS_LAYER = "segmentation"
CONFIDENCE_LAYER = "confidence"
MIN_LEVELS = 3
WRITER_FORMAT = 1  # bump when the store layout changes
STORE_SUFFIX = ".ome.zarr"
_AXES = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def scene_store_url(output_url: str, scene_id: str) -> str:
    """``<output>/<scene_id>.ome.zarr``; refuses ids that break :mod:`pipeline.names`' rule."""
    check_scene_id(scene_id, STORE_SUFFIX)
    return join_url(resolve_url(output_url), scene_id + STORE_SUFFIX)



def georef_attrs(georef: Georef, shape: tuple[int, int]) -> dict[str, Any]:
    """GeoZarr-like attributes (see module docstring) for a grid of ``shape`` pixels."""
    x0, dx, rx, y0, ry, dy = georef.transform
    attrs: dict[str, Any] = {
        "spatial:dimensions": ["y", "x"],
        "spatial:transform": [dx, rx, x0, ry, dy, y0],
        "spatial:shape": [int(shape[0]), int(shape[1])],
        "spatial:registration": "pixel",
    }
    if georef.crs is not None:
        attrs.update(crs_attrs(georef.crs))
    return attrs


def crs_attrs(crs: str) -> dict[str, str]:
    """``proj:code`` when the CRS is an EPSG code, and always the full CRS as ``proj:wkt2``.

    WKT2 carries every parameter of a custom projection (no EPSG code to look up), so a GIS
    reading the store never has to guess; unknown CRS text is kept as it is.
    """
    from pipeline.io.geotiff import to_pyproj

    out: dict[str, str] = {}
    if crs.upper().startswith("EPSG:"):
        out["proj:code"] = crs.upper()
    try:
        out["proj:wkt2"] = to_pyproj(crs).to_wkt(version="WKT2_2019")
    except Exception:  # a CRS pyproj cannot parse: carry the text we were given
        out["proj:wkt2"] = crs
    return out


def level_shapes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    shapes = [(height, width)]
    for _ in range(1, levels):
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def multiscale(name: str, levels: int, method: str) -> dict[str, Any]:
    datasets = []
    for k in range(levels):
        f = float(2**k)
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [f, f]}]
        if k:
            transforms.append({"type": "translation", "translation": [(f - 1) / 2, (f - 1) / 2]})
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    return {
        "name": name,
        "axes": _AXES,
        "datasets": datasets,
        "type": method,
        "metadata": {"method": f"2x2 {method}", "description": f"hgn-pipeline {method} pyramid"},
    }


def class_list(classes: Sequence[Any]) -> list[tuple[str, list[int]]]:
    out: list[tuple[str, list[int]]] = []
    for i, item in enumerate(classes):
        if isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            name, rgba = item
        elif hasattr(item, "name") and hasattr(item, "color"):
            name, rgba = item.name, item.color
        else:
            raise ConfigError(f"classes[{i}]={item!r}: expected (name, (r, g, b, a))")
        rgba = [int(c) for c in rgba]
        if len(rgba) == 3:
            rgba.append(255)
        if len(rgba) != 4 or any(not 0 <= c <= 255 for c in rgba):
            raise ConfigError(f"classes[{i}] ({name!r}) color {rgba!r}: expected 4 ints in 0..255")
        out.append((str(name), rgba))
    if not 1 <= len(out) <= 256:
        raise ConfigError(f"{len(out)} classes: uint8 labels hold 1..256 classes")
    return out


def jsonable(value: Any, what: str, options: Mapping[str, Any]) -> Any:
    """A JSON round-trip of ``value`` (unknown types as str), credentials redacted."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not JSON-serialisable: {exc}") from None
    return json.loads(redact(text, options))


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hgn-pipeline")
    except PackageNotFoundError:
        return "unknown"

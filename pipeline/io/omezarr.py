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

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import ConfigError, OutputError, OutputNotFoundError, WindowError
from pipeline.integrity import Record, block_keys, digest_store
from pipeline.names import check_scene_id
from pipeline.storage import (
    StorageOptions,
    get_fs,
    is_remote,
    join_url,
    redact,
    resolve_url,
    strip_protocol,
)

if TYPE_CHECKING:
    from pipeline.scene import Georef

__all__ = [
    "CONFIDENCE_LAYER",
    "LABELS_LAYER",
    "MIN_LEVELS",
    "STORE_SUFFIX",
    "SceneWriter",
    "crs_attrs",
    "downsample_level",
    "georef_attrs",
    "mean_downsample",
    "mode_downsample",
    "scene_store_url",
]

LABELS_LAYER = "segmentation"
CONFIDENCE_LAYER = "confidence"
MIN_LEVELS = 3
PYRAMID_WORKERS = 4  # concurrent pyramid tasks in finalize
PYRAMID_BLOCK_PIXELS = 1 << 18  # coarse pixels per task (>= 1 chunk): batching small chunks
# halved finalize time for 128-px chunks here; memory per task stays ~1 Mpx of source
WRITER_FORMAT = 1  # bump when the store layout changes
STORE_SUFFIX = ".ome.zarr"
_AXES = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def scene_store_url(output_url: str, scene_id: str) -> str:
    """``<output>/<scene_id>.ome.zarr``; refuses ids that break :mod:`pipeline.names`' rule."""
    check_scene_id(scene_id, STORE_SUFFIX)
    return join_url(resolve_url(output_url), scene_id + STORE_SUFFIX)


# --------------------------------------------------------------------------- downsampling


def _pad_even(a: np.ndarray) -> np.ndarray:
    if a.shape[0] % 2:
        a = np.concatenate([a, a[-1:]], axis=0)
    if a.shape[1] % 2:
        a = np.concatenate([a, a[:, -1:]], axis=1)
    return a


def mode_downsample(labels: np.ndarray) -> np.ndarray:
    """2x2 mode of a (H, W) label array -> (ceil(H/2), ceil(W/2)), same dtype.

    Ties go to the value met first in row-major order inside the block; an odd last
    row/column is replicated (which leaves the mode and its tie order unchanged).
    """
    a = _pad_even(np.asarray(labels))
    v = (a[0::2, 0::2], a[0::2, 1::2], a[1::2, 0::2], a[1::2, 1::2])
    # How many of the 4 block values equal v[i], from the 6 pairwise comparisons (6x faster
    # than a (4, 4, h, w) broadcast).
    e01, e02, e03 = v[0] == v[1], v[0] == v[2], v[0] == v[3]
    e12, e13, e23 = v[1] == v[2], v[1] == v[3], v[2] == v[3]
    counts = (
        e01.astype(np.uint8) + e02 + e03,
        e01.astype(np.uint8) + e12 + e13,
        e02.astype(np.uint8) + e12 + e23,
        e03.astype(np.uint8) + e13 + e23,
    )
    out, best = v[0].copy(), counts[0]
    for value, count in zip(v[1:], counts[1:], strict=True):
        np.copyto(out, value, where=count > best)  # strictly more: earlier values win ties
        best = np.maximum(best, count)
    return out


def mean_downsample(values: np.ndarray) -> np.ndarray:
    """Rounded 2x2 mean of a (H, W) uint8 array (odd edges replicated)."""
    a = _pad_even(np.asarray(values)).astype(np.uint16)
    total = a[0::2, 0::2] + a[0::2, 1::2] + a[1::2, 0::2] + a[1::2, 1::2]
    return ((total + 2) // 4).astype(np.uint8)


# --------------------------------------------------------------------------- metadata


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


def _level_shapes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    shapes = [(height, width)]
    for _ in range(1, levels):
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def _multiscale(name: str, levels: int, method: str) -> dict[str, Any]:
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


def _class_list(classes: Sequence[Any]) -> list[tuple[str, list[int]]]:
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


def _jsonable(value: Any, what: str, options: Mapping[str, Any]) -> Any:
    """A JSON round-trip of ``value`` (unknown types as str), credentials redacted."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not JSON-serialisable: {exc}") from None
    return json.loads(redact(text, options))


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hgn-pipeline")
    except PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- per-process cache

MAX_OPEN_ARRAYS = 256  # per process; zarr Array objects are small (metadata + store ref)
_ARRAYS: OrderedDict[tuple, Any] = OrderedDict()
_ARRAYS_LOCK = threading.Lock()


def _open_array(url: str, path: str, options: Mapping[str, Any], mode: str = "r+") -> Any:
    import zarr

    key = (os.getpid(), url, path, mode, json.dumps(options, sort_keys=True, default=str))
    with _ARRAYS_LOCK:
        if key in _ARRAYS:
            _ARRAYS.move_to_end(key)
            return _ARRAYS[key]
    if mode == "r":
        kwargs = {"storage_options": dict(options)} if is_remote(url) else {}
        array = zarr.open_array(store=url, path=path, mode=mode, zarr_format=3, **kwargs)
    else:  # writes go through a store that records each stored chunk's checksum
        array = zarr.open_array(store=digest_store(url, options), path=path, mode=mode,
                                zarr_format=3)
    with _ARRAYS_LOCK:
        array = _ARRAYS.setdefault(key, array)
        while len(_ARRAYS) > MAX_OPEN_ARRAYS:
            _ARRAYS.popitem(last=False)
        return array


def _forget_arrays(url: str) -> None:
    with _ARRAYS_LOCK:
        for key in [k for k in _ARRAYS if k[1] == url]:
            del _ARRAYS[key]


def _open_group(url: str, options: Mapping[str, Any], mode: str, path: str | None = None) -> Any:
    import zarr

    kwargs = {"storage_options": dict(options)} if is_remote(url) else {}
    return zarr.open_group(store=url, path=path, mode=mode, zarr_format=3, **kwargs)


# --------------------------------------------------------------------------- writer


class SceneWriter:
    """Writes one scene's OME-Zarr store. Picklable (spec only; arrays open lazily)."""

    def __init__(self, url: str, scene_id: str, height: int, width: int, chunk: tuple[int, int],
                 levels: int, confidence: bool, storage_options: Mapping[str, Any] | None) -> None:
        self.url = url
        self.scene_id = scene_id
        self.height = height
        self.width = width
        self.chunk = chunk
        self.levels = levels
        self.confidence = confidence
        self._options = StorageOptions(storage_options or {})

    def __repr__(self) -> str:
        return (f"SceneWriter({self.scene_id!r}, url={self.url!r}, shape=({self.height}, "
                f"{self.width}), chunk={self.chunk}, levels={self.levels}, "
                f"confidence={self.confidence})")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_options"] = dict(self._options)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._options = StorageOptions(state["_options"])

    # -- construction
    @classmethod
    def create(
        cls,
        output_url: str,
        scene_id: str,
        height: int,
        width: int,
        chunk: int | tuple[int, int],
        classes: Sequence[Any],
        provenance: Mapping[str, Any],
        georef: Georef | None = None,
        confidence: bool = True,
        levels: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> SceneWriter:
        """Create the store, every level array (empty) and all metadata (status "incomplete").

        ``levels`` None: enough 2x levels for the coarsest to fit one chunk, at least
        :data:`MIN_LEVELS`. ``classes``: ``[(name, rgba), ...]`` indexed by label id (objects
        with ``.name``/``.color`` work too). An existing store is refused unless ``overwrite``;
        use :meth:`open` to resume one.
        """
        url = scene_store_url(output_url, scene_id)
        if int(height) < 1 or int(width) < 1:
            raise ConfigError(f"scene {scene_id!r}: height={height}, width={width} must be >= 1")
        if isinstance(chunk, Sequence):
            if len(chunk) != 2:
                raise ConfigError(f"chunk={chunk!r}: give an int or (height, width)")
            ch, cw = int(chunk[0]), int(chunk[1])
        else:
            ch = cw = int(chunk)
        if ch < 1 or cw < 1:
            raise ConfigError(f"chunk={chunk!r} must be positive")
        if levels is None:
            levels = MIN_LEVELS
            while True:
                h_top, w_top = _level_shapes(int(height), int(width), levels)[-1]
                if h_top <= ch and w_top <= cw:
                    break
                levels += 1
        if int(levels) < 1:
            raise ConfigError(f"levels={levels!r} must be >= 1 (default: >= {MIN_LEVELS})")
        writer = cls(url, scene_id, int(height), int(width), (ch, cw), int(levels),
                     bool(confidence), storage_options)
        class_list = _class_list(classes)
        # Provenance often embeds the run config: make sure the credentials used for this
        # very write can never end up in the store's attributes.
        hgn = dict(_jsonable(dict(provenance), "provenance", writer._options))
        hgn.setdefault("package_version", _package_version())
        hgn.setdefault("created", _now())
        if georef is not None:
            hgn["georeference"] = georef.to_dict()
        hgn["status"] = "incomplete"
        hgn["writer"] = {
            "format": WRITER_FORMAT, "height": writer.height, "width": writer.width,
            "chunk": [ch, cw], "levels": writer.levels, "confidence": writer.confidence,
            "labels": f"labels/{LABELS_LAYER}",
            "confidence_image": "." if writer.confidence else None,
        }
        try:
            writer._create_store(class_list, hgn, georef, overwrite)
        except (OutputError, ConfigError):
            raise
        except Exception as exc:
            raise OutputError(
                f"scene {scene_id!r}: cannot create {url}: {type(exc).__name__}: "
                f"{redact(str(exc), writer._options)}"
            ) from None
        return writer

    def _create_store(self, classes: list[tuple[str, list[int]]], hgn: dict[str, Any],
                      georef: Georef | None, overwrite: bool) -> None:
        if not overwrite and self._exists():
            raise OutputError(
                f"scene {self.scene_id!r}: {self.url} already exists but the output's ledger "
                "(_hgn/ledger) has no record of it (deleted, or written by another tool): rerun "
                "with `--set overwrite=true` (config `overwrite: true`) to recompute and replace "
                "it, or write to another --output"
            )
        shapes = _level_shapes(self.height, self.width, self.levels)
        geo0 = georef_attrs(georef, shapes[0]) if georef is not None else {}
        ome_root: dict[str, Any] = {"version": "0.5"}
        if self.confidence:
            ome_root["multiscales"] = [_multiscale(CONFIDENCE_LAYER, self.levels, "mean")]
        _forget_arrays(self.url)
        root = _open_group(self.url, self._options, mode="w")
        root.attrs.put({"ome": ome_root, "hgn": hgn, **geo0})
        labels = root.create_group("labels", attributes={
            "ome": {"version": "0.5", "labels": [LABELS_LAYER]},
        })
        image_label: dict[str, Any] = {
            "colors": [{"label-value": i, "rgba": rgba} for i, (_, rgba) in enumerate(classes)],
            "properties": [{"label-value": i, "name": name} for i, (name, _) in enumerate(classes)],
        }
        if self.confidence:
            image_label["source"] = {"image": "../../"}
        seg = labels.create_group(LABELS_LAYER, attributes={
            "ome": {"version": "0.5",
                    "multiscales": [_multiscale(LABELS_LAYER, self.levels, "mode")],
                    "image-label": image_label},
            **geo0,
        })
        targets = [seg] + ([root] if self.confidence else [])
        for k, shape in enumerate(shapes):
            attrs = georef_attrs(georef.scaled(2**k), shape) if georef is not None else {}
            chunks = (min(self.chunk[0], shape[0]), min(self.chunk[1], shape[1]))
            for group in targets:
                group.create_array(
                    str(k), shape=shape, chunks=chunks, dtype="uint8", fill_value=0,
                    dimension_names=("y", "x"), attributes=attrs, overwrite=True,
                )

    def _exists(self) -> bool:
        fs = get_fs(self.url, self._options)
        return bool(fs.exists(join_url(strip_protocol(self.url), "zarr.json")))

    @classmethod
    def exists(cls, output_url: str, scene_id: str,
               storage_options: Mapping[str, Any] | None = None) -> bool:
        """Whether ``<output>/<scene_id>.ome.zarr`` has root metadata (complete or not)."""
        url = scene_store_url(output_url, scene_id)
        return cls(url, scene_id, 1, 1, (1, 1), 1, False, storage_options)._exists()

    @classmethod
    def open(cls, output_url: str, scene_id: str,
             storage_options: Mapping[str, Any] | None = None) -> SceneWriter:
        """Reopen a store made by :meth:`create` (resume, finalize, inspection)."""
        url = scene_store_url(output_url, scene_id)
        try:
            attrs = dict(_open_group(url, storage_options or {}, mode="r").attrs)
        except FileNotFoundError:
            raise OutputNotFoundError(
                f"scene {scene_id!r}: no output store at {url}; create it with SceneWriter.create"
            ) from None
        except Exception as exc:
            raise OutputError(
                f"scene {scene_id!r}: cannot open {url}: {type(exc).__name__}: "
                f"{redact(str(exc), storage_options)}"
            ) from None
        spec = (attrs.get("hgn") or {}).get("writer")
        if not isinstance(spec, Mapping) or spec.get("format") != WRITER_FORMAT:
            raise OutputError(
                f"scene {scene_id!r}: {url} was not written by this SceneWriter "
                f"(hgn.writer={spec!r}); remove it or write to another output root"
            )
        return cls(url, scene_id, int(spec["height"]), int(spec["width"]),
                   (int(spec["chunk"][0]), int(spec["chunk"][1])), int(spec["levels"]),
                   bool(spec["confidence"]), storage_options)

    # -- inspection
    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes as stored now (fresh read)."""
        return dict(_open_group(self.url, self._options, mode="r").attrs)

    @property
    def complete(self) -> bool:
        return (self.attrs.get("hgn") or {}).get("status") == "complete"

    def level_shape(self, level: int) -> tuple[int, int]:
        return _level_shapes(self.height, self.width, self.levels)[level]

    def chunk_origins(self) -> Iterator[tuple[int, int]]:
        """Top-left corners of level-0 output chunks, row by row."""
        for y in range(0, self.height, self.chunk[0]):
            for x in range(0, self.width, self.chunk[1]):
                yield y, x

    def read_level(self, level: int = 0, layer: str = LABELS_LAYER) -> np.ndarray:
        """A whole level as numpy (previews, tests); mind the size of level 0."""
        return np.asarray(self._array(layer, level, mode="r")[...])

    def array_path(self, layer: str, level: int) -> str:
        """Path of a layer's level array inside the store (also its chunks' key prefix)."""
        if layer == LABELS_LAYER:
            return f"labels/{LABELS_LAYER}/{level}"
        if layer == CONFIDENCE_LAYER and self.confidence:
            return str(level)
        raise ConfigError(f"layer={layer!r}: this store has {self._layers()}")

    def _array(self, layer: str, level: int, mode: str = "r+") -> Any:
        return _open_array(self.url, self.array_path(layer, level), self._options, mode)

    def _layers(self) -> list[str]:
        return [LABELS_LAYER] + ([CONFIDENCE_LAYER] if self.confidence else [])

    # -- writing
    def write_block(self, y0: int, x0: int, labels: np.ndarray,
                    confidence: np.ndarray | None = None) -> dict[str, Record]:
        """Write a chunk-aligned level-0 block (one or more whole chunks).

        ``y0``/``x0`` must be multiples of the chunk size and the block must span whole chunks
        (short only at the scene's bottom/right edge). ``confidence`` is required when the
        store has a confidence layer and ignored otherwise. Returns the checksum record of
        every chunk written, by store key (:mod:`pipeline.integrity`; None: nothing stored).
        """
        labels = np.asarray(labels)
        where = f"scene {self.scene_id!r}: block at y={y0}, x={x0}"
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise WindowError(f"{where}: labels must be a 2-D uint8 array, got {labels.dtype} "
                              f"{labels.shape}")
        h, w = labels.shape
        ch, cw = self.chunk
        aligned = (
            y0 >= 0 and x0 >= 0 and y0 % ch == 0 and x0 % cw == 0 and h >= 1 and w >= 1
            and y0 + h <= self.height and x0 + w <= self.width
            and (h % ch == 0 or y0 + h == self.height)
            and (w % cw == 0 or x0 + w == self.width)
        )
        if not aligned:
            raise WindowError(
                f"{where}, size {h} x {w} is not chunk-aligned: origins must be multiples of "
                f"the chunk {ch} x {cw} and blocks must span whole chunks of the "
                f"{self.height} x {self.width} scene (short only at its edge)"
            )
        conf = None
        if self.confidence:
            if confidence is None:
                raise WindowError(f"{where}: this store has a confidence layer; pass confidence")
            conf = np.asarray(confidence)
            if conf.shape != labels.shape or conf.dtype != np.uint8:
                raise WindowError(f"{where}: confidence must be uint8 {labels.shape}, got "
                                  f"{conf.dtype} {conf.shape}")
        try:
            self._array(LABELS_LAYER, 0)[y0:y0 + h, x0:x0 + w] = labels
            if conf is not None:
                self._array(CONFIDENCE_LAYER, 0)[y0:y0 + h, x0:x0 + w] = conf
        except Exception as exc:
            raise OutputError(
                f"{where}, size {h} x {w}: writing to {self.url} failed: {type(exc).__name__}: "
                f"{redact(str(exc), self._options)}"
            ) from None
        keys = [k for layer in self._layers()
                for k in block_keys(self.array_path(layer, 0), self.chunk, y0, x0, h, w)]
        return digest_store(self.url, self._options).take(keys)

    def finalize(self, extra_attrs: Mapping[str, Any] | None = None) -> dict[str, Record]:
        """Build levels 1.. from level 0 and mark the store complete (idempotent).

        ``extra_attrs`` are merged into ``attrs["hgn"]`` (e.g. timings, finished time).
        Returns the checksum record of every pyramid chunk written, by store key.
        """
        pyramid = tuple(f"{self.array_path(layer, k)}/" for layer in self._layers()
                        for k in range(1, self.levels))
        try:
            for layer, reduce in ((LABELS_LAYER, mode_downsample),
                                  (CONFIDENCE_LAYER, mean_downsample)):
                if layer not in self._layers():
                    continue
                for level in range(1, self.levels):
                    self._build_level(layer, level, reduce)
            root = _open_group(self.url, self._options, mode="r+")
            attrs = dict(root.attrs)
            hgn = dict(attrs.get("hgn") or {})
            hgn.update(_jsonable(dict(extra_attrs or {}), "extra_attrs", self._options))
            hgn.setdefault("finished", _now())
            hgn["status"] = "complete"
            root.attrs.update({"hgn": hgn})
            self.close()
            return digest_store(self.url, self._options).take_prefix(pyramid)
        except (ConfigError, WindowError):
            raise
        except Exception as exc:
            raise OutputError(
                f"scene {self.scene_id!r}: finalizing {self.url} failed: {type(exc).__name__}: "
                f"{redact(str(exc), self._options)}"
            ) from None

    def close(self) -> None:
        """Forget this store's opened arrays in this process (done after finalize)."""
        _forget_arrays(self.url)

    def _build_level(self, layer: str, level: int, reduce: Any) -> None:
        """Level ``level`` of ``layer`` from ``level - 1`` (see :func:`downsample_level`)."""
        downsample_level(self._array(layer, level - 1, mode="r"), self._array(layer, level),
                         reduce)


def downsample_level(src: Any, dst: Any, reduce: Any) -> None:
    """Fill array ``dst`` with ``reduce`` (2x2) of ``src``, one block of coarse chunks per task.

    A task covers k x k coarse chunks (k so the block is about PYRAMID_BLOCK_PIXELS, at least
    one chunk) and reads the 2x larger finer region: memory per task is bounded by the chunk
    size, never by the scene size.
    """
    sh, sw = src.shape
    dh, dw = dst.shape
    ch, cw = dst.chunks
    k = max(1, math.isqrt(PYRAMID_BLOCK_PIXELS // (ch * cw)))
    bh, bw = k * ch, k * cw

    def one(origin: tuple[int, int]) -> None:
        y, x = origin
        block = np.asarray(src[2 * y:min(2 * (y + bh), sh), 2 * x:min(2 * (x + bw), sw)])
        dst[y:min(y + bh, dh), x:min(x + bw, dw)] = reduce(block)

    origins = [(y, x) for y in range(0, dh, bh) for x in range(0, dw, bw)]
    with ThreadPoolExecutor(PYRAMID_WORKERS, thread_name_prefix="pyramid") as pool:
        for _ in pool.map(one, origins):
            pass

"""zarr v2/v3 arrays and groups, OME-Zarr 0.4 (zarr v2) and 0.5 (zarr v3) images.

Why zarr-python and not GDAL: GDAL's Zarr driver does not read OME-Zarr multiscales or our
``image``/``labels`` groups, and zarr-python reads every codec zarr writes, over fsspec with
the same storage options as the outputs.

A store is one scene:
- a zarr array: 2-D is one band; 3-D is ``CHW`` or ``HWC`` as the ``layout`` argument says
  (plain arrays carry no axis names);
- a group holding an ``image`` array (the synthetic benchmark layout); a 2-D ``labels`` array
  of the same height/width next to it is recorded as ground truth;
- an OME-Zarr image: level 0 of its first multiscale, axes ``(c,) y, x`` plus optional
  singleton ``t``/``z``.

The probe reads metadata JSON only (``zarr.json``, or ``.zarray``/``.zgroup``/``.zattrs``),
validated by zarr's own metadata classes; the fingerprint covers those files' ETags (or size
+ mtime), so it proves the metadata unchanged, not every chunk. Nodata is what the attributes
declare: ``_FillValue`` (CF, xarray), ``nodata`` or ``missing_value``, on the array or its
group; the zarr ``fill_value`` alone is not nodata (zarr fills never-written chunks with it,
and 0 is a valid pixel of most imagery). Georeference: our own output attributes, a
``georeference`` dict, or GeoZarr-style ``proj:code``/``proj:wkt2`` + ``spatial:transform``.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pipeline.errors import SceneReadError
from pipeline.io.formats._common import (
    Target,
    Unusable,
    check_dtype,
    fingerprint,
    stamp,
    to_chw,
)
from pipeline.io.readers import Handle, SceneReader
from pipeline.scene import Georef, Probe, SceneInfo, Unreadable
from pipeline.storage import is_remote

__all__ = ["ZarrFormat", "ZarrReader", "is_zarr_store"]

ZARR_SUFFIXES = (".ome.zarr", ".zarr", ".zr")
METADATA_FILES = ("zarr.json", ".zarray", ".zgroup")
NODATA_ATTRS = ("_FillValue", "nodata", "missing_value")


def is_zarr_store(name: str, entries: Mapping[str, Any]) -> bool:
    """A folder is a zarr store when it is named ``*.zarr`` or holds zarr metadata."""
    return name.lower().endswith(ZARR_SUFFIXES) or bool(set(METADATA_FILES) & set(entries))


# --------------------------------------------------------------------------- metadata


def _read_json(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Unusable(f"{posixpath.basename(path)} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise Unusable(f"{posixpath.basename(path)} is not a JSON object")
    return doc


@dataclass
class _Node:
    """Metadata of one zarr node (array or group) plus the stamps of the files read."""

    zarr_format: int
    is_array: bool
    doc: dict[str, Any]
    attrs: dict[str, Any]
    stamps: list[tuple[str, str]]


def _read_node(fs: Any, store: str, sub: str, entries: Mapping[str, Any] | None) -> _Node | None:
    """zarr v3 or v2 metadata of ``store/sub``; None when no node is there."""
    base = posixpath.join(store, sub) if sub else store

    def stamp_of(name: str) -> tuple[str, str]:
        key = posixpath.join(sub, name) if sub else name
        info = entries.get(name) if (entries and not sub) else None
        return key, stamp(info if info is not None else fs.info(posixpath.join(base, name)))

    doc = _read_json(fs, posixpath.join(base, "zarr.json"))
    if doc is not None:
        if doc.get("zarr_format") != 3 or doc.get("node_type") not in ("array", "group"):
            name = posixpath.join(sub, "zarr.json") if sub else "zarr.json"
            raise Unusable(
                f"{name} is not zarr v3 metadata (zarr_format={doc.get('zarr_format')!r}, "
                f"node_type={doc.get('node_type')!r})"
            )
        attrs = doc.get("attributes") or {}
        return _Node(3, doc["node_type"] == "array", doc, attrs, [stamp_of("zarr.json")])
    for name, is_array in ((".zarray", True), (".zgroup", False)):
        doc = _read_json(fs, posixpath.join(base, name))
        if doc is None:
            continue
        stamps = [stamp_of(name)]
        attrs = _read_json(fs, posixpath.join(base, ".zattrs"))
        if attrs is not None:
            stamps.append(stamp_of(".zattrs"))
        return _Node(2, is_array, doc, attrs or {}, stamps)
    return None


def _array_meta(node: _Node, where: str) -> tuple[tuple[int, ...], np.dtype,
                                                   tuple[int, ...] | None]:
    """Shape, numpy dtype and chunk shape, validated by zarr's own metadata parser."""
    from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata

    try:
        if node.zarr_format == 3:
            meta = ArrayV3Metadata.from_dict(dict(node.doc))
        else:
            meta = ArrayV2Metadata.from_dict({**node.doc, "attributes": node.attrs})
        dtype = np.dtype(meta.dtype.to_native_dtype())
    except Exception as exc:
        raise Unusable(f"{where}: invalid zarr metadata: {type(exc).__name__}: {exc}") from None
    try:
        chunks: tuple[int, ...] | None = tuple(int(c) for c in meta.chunks)
    except Exception:  # irregular / extension chunk grids
        chunks = None
    return tuple(int(s) for s in meta.shape), dtype, chunks


def _georef(attrs: Mapping[str, Any]) -> Georef | None:
    """Georef from our own output attrs, a ``georeference`` dict, or GeoZarr-style keys."""
    for cand in (attrs.get("georeference"), (attrs.get("hgn") or {}).get("georeference")):
        if isinstance(cand, Mapping) and cand.get("transform") is not None:
            return Georef.from_dict(cand)
    transform = attrs.get("spatial:transform")
    if transform is not None and len(transform) >= 6:
        crs = attrs.get("proj:code") or attrs.get("proj:wkt2")
        return Georef.from_affine(crs, transform)
    return None


def _nodata(*attr_maps: Mapping[str, Any], where: str) -> float | None:
    for attrs in attr_maps:
        for key in NODATA_ATTRS:
            value = attrs.get(key)
            if value is None:
                continue
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            try:
                return float(value)
            except (TypeError, ValueError):
                raise Unusable(
                    f"{where}: attribute {key}={value!r} is not a number; fix it or set "
                    "`nodata:` in the run config"
                ) from None
    return None


def _chunks_chw(chunks: tuple[int, ...] | None, axes: str) -> tuple[int, int, int] | None:
    if chunks is None or len(chunks) != len(axes):
        return None
    sizes = dict(zip(axes, chunks, strict=True))
    return (sizes.get("c", 1), sizes["y"], sizes["x"])


def _ome_multiscale(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], str] | None:
    ome = attrs.get("ome")
    if isinstance(ome, Mapping) and ome.get("multiscales"):
        return ome["multiscales"][0], str(ome.get("version", "0.5"))
    if attrs.get("multiscales"):
        ms = attrs["multiscales"][0]
        return ms, str(ms.get("version", "0.4"))
    return None


# --------------------------------------------------------------------------- probing


def _plain_array(t: Target, node: _Node, array_path: str | None,
                 stamps: list[tuple[str, str]], attrs: list[Mapping[str, Any]],
                 ground_truth: str | None) -> SceneInfo:
    where = f"array {array_path!r}" if array_path else "array"
    shape, dtype, chunks = _array_meta(node, where)
    if len(shape) == 2:
        axes = "yx"
    elif len(shape) == 3:
        axes = "cyx" if t.layout == "CHW" else "yxc"
    else:
        raise Unusable(f"{where} is {len(shape)}-D {shape}; expected (H, W) or 3-D {t.layout}")
    dtype_name = check_dtype(dtype, where)
    shape_chw, stored_layout = to_chw(axes, shape, where)
    merged: dict[str, Any] = {}
    for a in attrs:  # the group's georeference wins over its image array's
        merged.update(a)
    return SceneInfo(
        scene_id=t.scene_id, url=t.url, kind="zarr", array_path=array_path,
        shape=shape_chw, layout=stored_layout, dtype=dtype_name,
        fingerprint=fingerprint("zarr", array_path, shape_chw, dtype_name, axes, stamps),
        georef=_georef(merged), ground_truth=ground_truth, axes=axes,
        chunks=_chunks_chw(chunks, axes), nodata=_nodata(*attrs, where=where),
    )


def _group_scene(t: Target, root: _Node) -> SceneInfo:
    image = _read_node(t.fs, t.path, "image", None)
    if image is None or not image.is_array:
        raise Unusable(
            "zarr group has no 'image' array and no OME-Zarr multiscales metadata; "
            "store the pixels as <scene>/image or as an OME-Zarr image"
        )
    labels = _read_node(t.fs, t.path, "labels", None)
    ground_truth = "labels" if labels is not None and labels.is_array else None
    stamps = root.stamps + image.stamps + (labels.stamps if ground_truth and labels else [])
    info = _plain_array(t, image, "image", stamps, [image.attrs, root.attrs], ground_truth)
    if ground_truth is not None and labels is not None:
        gt_shape, _, _ = _array_meta(labels, "labels")
        if gt_shape != info.shape[1:]:
            info = replace(info, ground_truth=None)
    return info


def _ome_scene(t: Target, root: _Node, ms: Mapping[str, Any], version: str) -> SceneInfo:
    try:
        path = str(ms["datasets"][0]["path"])
        raw_axes = ms["axes"]
    except (KeyError, IndexError, TypeError):
        raise Unusable(
            f"OME-Zarr {version} multiscales metadata lacks datasets[0].path or axes"
        ) from None
    names = [a["name"] if isinstance(a, Mapping) else a for a in raw_axes]
    if any(len(str(n)) != 1 for n in names):
        raise Unusable(f"OME-Zarr axes {names!r} are not single-letter t/c/z/y/x names")
    axes = "".join(str(n).lower() for n in names)
    node = _read_node(t.fs, t.path, path, None)
    if node is None or not node.is_array:
        raise Unusable(f"OME-Zarr level 0 array {path!r} is missing")
    where = f"OME-Zarr level {path!r}"
    shape, dtype, chunks = _array_meta(node, where)
    dtype_name = check_dtype(dtype, where)
    shape_chw, layout = to_chw(axes, shape, where)
    stamps = root.stamps + node.stamps
    return SceneInfo(
        scene_id=t.scene_id, url=t.url, kind="ome-zarr", array_path=path,
        shape=shape_chw, layout=layout, dtype=dtype_name,
        fingerprint=fingerprint("ome-zarr", path, shape_chw, dtype_name, axes, stamps),
        georef=_georef(root.attrs), ground_truth=None, axes=axes,
        chunks=_chunks_chw(chunks, axes), nodata=_nodata(node.attrs, root.attrs, where=where),
    )


# --------------------------------------------------------------------------- reading


def _open_array(url: str, path: str, options: Mapping[str, Any]) -> Any:
    import zarr

    if is_remote(url):
        return zarr.open_array(store=url, path=path, mode="r", storage_options=dict(options))
    return zarr.open_array(store=url, path=path, mode="r")


def _axes_of(info: SceneInfo, ndim: int) -> str:
    """Stored axis names; derived from ``layout`` for SceneInfos built without ``axes``."""
    if info.axes:
        return info.axes
    if ndim == 2:
        return "yx"
    return "yxc" if info.layout == "HWC" else "cyx"


class ZarrReader(SceneReader):
    """Windows of a zarr / OME-Zarr array: slicing fetches only the chunks it overlaps."""

    def _open(self) -> Handle:
        info = self.info
        array = _open_array(info.url, info.array_path or "", self._options)
        axes = _axes_of(info, array.ndim)

        def read(y0: int, y1: int, x0: int, x1: int, bands: list[int]) -> np.ndarray:
            lo, hi = min(bands), max(bands) + 1
            spans = {"c": slice(lo, hi), "y": slice(y0, y1), "x": slice(x0, x1)}
            data = np.asarray(array[tuple(spans.get(a, 0) for a in axes)])
            kept = [a for a in axes if a in "cyx"]
            if "c" not in kept:
                data, kept = data[np.newaxis], ["c", *kept]
            data = data.transpose([kept.index(a) for a in "cyx"])
            if bands != list(range(lo, hi)):
                data = data[[b - lo for b in bands]]
            return data

        return Handle(read)

    def read_ground_truth(self, y0: int = 0, y1: int | None = None, x0: int = 0,
                          x1: int | None = None) -> np.ndarray:
        """Ground-truth labels (H, W) of synthetic-layout scenes, window optional."""
        info = self.info
        if info.ground_truth is None:
            return super().read_ground_truth(y0, y1, x0, x1)
        y1 = info.height if y1 is None else y1
        x1 = info.width if x1 is None else x1
        try:
            labels = _open_array(info.url, info.ground_truth, self._options)
            return np.ascontiguousarray(labels[y0:y1, x0:x1])
        except Exception as exc:
            from pipeline.storage import redact

            raise SceneReadError(
                info.scene_id, info.url,
                f"cannot read ground truth {info.ground_truth!r} y={y0}:{y1}, x={x0}:{x1}: "
                f"{type(exc).__name__}: {redact(str(exc), self._options)}",
            ) from None


class ZarrFormat:
    """zarr v2/v3 arrays and groups, OME-Zarr 0.4/0.5 (see module docstring)."""

    name = "zarr"
    kinds = ("zarr", "ome-zarr")
    suffixes: tuple[str, ...] = ()  # claims folders (is_zarr_store), never single files

    def probe(self, target: Target) -> Probe:
        try:
            root = _read_node(target.fs, target.path, "", target.entries)
            if root is None:
                return Unreadable(
                    "zarr metadata (zarr.json, .zarray or .zgroup) is missing: not a zarr "
                    "store, or an incomplete copy"
                )
            if root.is_array:
                return _plain_array(target, root, None, root.stamps, [root.attrs], None)
            ms = _ome_multiscale(root.attrs)
            if ms is not None:
                return _ome_scene(target, root, *ms)
            return _group_scene(target, root)
        except Unusable as exc:
            return Unreadable(str(exc))

    def open(self, info: SceneInfo, storage_options: Mapping[str, Any] | None = None
             ) -> ZarrReader:
        return ZarrReader(info, storage_options)

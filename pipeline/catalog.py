"""Catalog: list the scenes of an archive from metadata alone (never reads pixels).

A scene is one of
- a zarr v3 or v2 array;
- a zarr group holding an ``image`` array (the synthetic benchmark layout); a 2-D ``labels``
  array of the same height/width next to it is recorded as ground truth;
- an OME-Zarr image (0.4 on zarr v2, 0.5 on zarr v3): level 0 of its first multiscale, axes
  ``(c,) y, x`` plus optional singleton ``t``/``z``;
- a GeoTIFF / COG / plain TIFF (``*.tif``, ``*.tiff``): series 0, level 0.

Discovery walks the prefix directory by directory (one listing each) and never descends into
a zarr store once found; names starting with ``.`` and the pipeline's ``_hgn`` folder are
skipped. Scene id = path relative to the archive root without extension, ``/`` kept.

``SceneInfo.shape`` is always ``(C, H, W)``. Plain zarr arrays carry no axis names, so their
3-D layout (``CHW`` or ``HWC``) comes from the ``layout`` argument; OME-Zarr and TIFF declare
their axes themselves. 2-D arrays are one band.

Fingerprint: sha256 over kind, array path, shape, dtype, axes and, for every metadata object
read (zarr.json / .zarray / .zattrs, or the TIFF file), its ETag, else size + mtime. For zarr
this proves the metadata unchanged, not every chunk: rewriting pixels in place without
touching metadata is not detected (cheap by design).

Unreadable scenes (missing/corrupt metadata, unsupported dtype or axes, truncated TIFF) become
:class:`SceneFailure` entries naming the reason; the rest of the archive goes on.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, StorageError
from pipeline.io.geotiff import parse_geotiff
from pipeline.names import scene_id_problem
from pipeline.storage import get_fs, is_remote, join_url, redact, resolve_url, strip_protocol

__all__ = [
    "LAYOUTS",
    "SUPPORTED_DTYPES",
    "Catalog",
    "Georef",
    "SceneFailure",
    "SceneInfo",
    "catalog",
]

LAYOUTS = ("CHW", "HWC")
SUPPORTED_DTYPES = ("uint8", "uint16", "float32")  # what Segmenter.predict accepts
TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif")
ZARR_SUFFIXES = (".ome.zarr", ".zarr", ".zr")
SKIP_DIRS = ("_hgn",)  # pipeline bookkeeping under an output root
META_WORKERS = 16  # parallel metadata reads: S3 latency-bound, a few KB each
TIFF_BLOCK_SIZE = 1 << 18  # s3 read-ahead for IFD parsing; TIFF headers are small


@dataclass(frozen=True)
class Georef:
    """CRS + affine transform of pixel (0, 0)'s corner, GDAL order ``(x0, dx, rx, y0, ry, dy)``."""

    crs: str | None
    transform: tuple[float, float, float, float, float, float]

    def __post_init__(self) -> None:
        if len(self.transform) != 6:
            raise ConfigError(
                f"Georef.transform={self.transform!r} must have 6 floats (x0, dx, rx, y0, ry, dy)"
            )
        object.__setattr__(self, "transform", tuple(float(v) for v in self.transform))

    def scaled(self, factor: float) -> Georef:
        """The georef of a grid downsampled by ``factor`` (same origin, bigger pixels)."""
        x0, dx, rx, y0, ry, dy = self.transform
        return Georef(self.crs, (x0, dx * factor, rx * factor, y0, ry * factor, dy * factor))

    def to_dict(self) -> dict[str, Any]:
        return {"crs": self.crs, "transform": list(self.transform)}


@dataclass(frozen=True)
class SceneInfo:
    """One scene: where it is, its (C, H, W) shape, dtype, fingerprint and georeference.

    ``axes`` is the stored axis order in lowercase (``"cyx"``, ``"yxc"``, ``"yx"``,
    ``"tczyx"``...), which the readers use; ``chunks`` the stored chunk/tile shape as (C, H, W)
    when known.
    """

    scene_id: str
    url: str  # zarr store root or TIFF file
    kind: str  # "zarr" | "ome-zarr" | "tiff"
    array_path: str | None  # array inside the store ("image", "0"); None: the store is the array
    shape: tuple[int, int, int]  # (C, H, W)
    layout: str  # "CHW" | "HWC" as stored
    dtype: str
    fingerprint: str
    georef: Georef | None = None
    ground_truth: str | None = None  # array path of ground-truth labels in the same store
    axes: str = ""
    chunks: tuple[int, int, int] | None = None

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
        """JSON-ready dict (manifests, ledgers)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SceneInfo:
        values = dict(data)
        georef = values.get("georef")
        if isinstance(georef, Mapping):
            values["georef"] = Georef(georef.get("crs"), tuple(georef["transform"]))
        values["shape"] = tuple(values["shape"])
        if values.get("chunks") is not None:
            values["chunks"] = tuple(values["chunks"])
        return cls(**values)


@dataclass(frozen=True)
class SceneFailure:
    """A scene the catalog found but cannot use; ``str()`` names scene, URL and reason."""

    scene_id: str
    url: str
    reason: str

    def __str__(self) -> str:
        return f"scene {self.scene_id!r} ({self.url}): {self.reason}"


@dataclass(frozen=True)
class Catalog:
    scenes: list[SceneInfo]
    failures: list[SceneFailure] = field(default_factory=list)
    url: str = ""

    def __len__(self) -> int:
        return len(self.scenes)

    def get(self, scene_id: str) -> SceneInfo:
        for scene in self.scenes:
            if scene.scene_id == scene_id:
                return scene
        raise KeyError(f"scene {scene_id!r} is not in the catalog of {self.url}")


class _Unreadable(Exception):
    """Internal: the scene at hand cannot be used; the message is the reason."""


@dataclass(frozen=True)
class _Candidate:
    kind: str  # "zarr" or "tiff" (ome-zarr is decided after reading metadata)
    path: str  # fsspec path
    scene_id: str
    url: str
    entries: dict[str, dict[str, Any]]  # listing of a zarr store's root (names -> info)
    info: dict[str, Any]  # the TIFF file's own listing entry


def catalog(
    url: str, storage_options: Mapping[str, Any] | None = None, layout: str = "CHW"
) -> Catalog:
    """List every scene under ``url`` (see module docstring). Metadata reads only.

    Raises StorageError when the archive root itself cannot be listed; per-scene problems
    become ``Catalog.failures``.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout={layout!r} is not one of {LAYOUTS}")
    root = resolve_url(url)
    fs = get_fs(root, storage_options)
    root_path = strip_protocol(root).rstrip("/") or "/"
    if is_remote(root):
        fs.invalidate_cache()  # listings are cached per filesystem instance, across runs
    candidates, failures = _walk(fs, root, root_path, storage_options)

    def analyse(cand: _Candidate) -> SceneInfo | SceneFailure:
        try:
            if cand.kind == "tiff":
                return _tiff_scene(fs, cand, storage_options)
            return _zarr_scene(fs, cand, layout)
        except _Unreadable as exc:
            return SceneFailure(cand.scene_id, cand.url, str(exc))
        except Exception as exc:  # storage errors, anything a library raises on bad bytes
            reason = f"{type(exc).__name__}: {redact(str(exc), storage_options)}"
            return SceneFailure(cand.scene_id, cand.url, f"cannot read metadata: {reason}")

    workers = max(1, min(META_WORKERS, len(candidates)))
    with ThreadPoolExecutor(workers, thread_name_prefix="catalog") as pool:
        results = list(pool.map(analyse, candidates))

    scenes: list[SceneInfo] = []
    seen: dict[str, str] = {}
    for result in results:
        if isinstance(result, SceneFailure):
            failures.append(result)
        elif (why := scene_id_problem(result.scene_id)) is not None:  # one rule: pipeline.names
            failures.append(SceneFailure(
                result.scene_id, result.url,
                f"its id cannot name an output path: {why}; rename it in the archive"))
        elif result.scene_id in seen:
            failures.append(
                SceneFailure(
                    result.scene_id,
                    result.url,
                    f"duplicate scene id {result.scene_id!r}: {seen[result.scene_id]} has it "
                    "too; rename one of them (ids drop the extension)",
                )
            )
        else:
            seen[result.scene_id] = result.url
            scenes.append(result)
    scenes.sort(key=lambda s: s.scene_id)
    failures.sort(key=lambda f: f.scene_id)
    return Catalog(scenes=scenes, failures=failures, url=root)


# --------------------------------------------------------------------------- discovery


def _scene_id(rel: str) -> str:
    lower = rel.lower()
    for suffix in (*ZARR_SUFFIXES, *TIFF_SUFFIXES):
        if lower.endswith(suffix) and len(rel) > len(suffix):
            return rel[: -len(suffix)]
    return rel


def _url_of(root: str, root_path: str, path: str) -> str:
    rel = posixpath.relpath(path, root_path) if path != root_path else ""
    return join_url(root, rel) if rel not in ("", ".") else root


def _is_zarr_name(name: str) -> bool:
    return name.lower().endswith(ZARR_SUFFIXES)


def _is_tiff(name: str) -> bool:
    return name.lower().endswith(TIFF_SUFFIXES)


def _walk(
    fs: Any, root: str, root_path: str, storage_options: Mapping[str, Any] | None
) -> tuple[list[_Candidate], list[SceneFailure]]:
    try:
        top = fs.info(root_path)
    except FileNotFoundError:
        raise StorageError(
            f"archive {root} does not exist: check the URL (and the S3 endpoint/bucket)"
        ) from None
    except Exception as exc:
        raise StorageError(
            f"cannot access archive {root}: {type(exc).__name__}: "
            f"{redact(str(exc), storage_options)}"
        ) from None
    base = posixpath.basename(root_path.rstrip("/")) or root_path
    if top.get("type") != "directory":
        if not _is_tiff(base):
            raise StorageError(f"archive {root} is a file but not a TIFF (*.tif, *.tiff)")
        return [_Candidate("tiff", root_path, _scene_id(base), root, {}, top)], []

    candidates: list[_Candidate] = []
    failures: list[SceneFailure] = []
    queue: deque[str] = deque([root_path])
    while queue:
        path = queue.popleft()
        rel = posixpath.relpath(path, root_path) if path != root_path else ""
        try:
            listing = fs.ls(path, detail=True)
        except Exception as exc:
            if path == root_path:
                raise StorageError(
                    f"cannot list archive {root}: {type(exc).__name__}: "
                    f"{redact(str(exc), storage_options)}"
                ) from None
            detail = redact(str(exc), storage_options)
            reason = f"cannot list folder: {type(exc).__name__}: {detail}"
            failures.append(SceneFailure(_scene_id(rel), _url_of(root, root_path, path), reason))
            continue
        entries = {posixpath.basename(e["name"].rstrip("/")): e for e in listing}
        named_zarr = path != root_path and _is_zarr_name(posixpath.basename(path))
        if named_zarr or {"zarr.json", ".zarray", ".zgroup"} & entries.keys():
            scene_id = _scene_id(rel) if rel else _scene_id(base)
            url = _url_of(root, root_path, path)
            candidates.append(_Candidate("zarr", path, scene_id, url, entries, {}))
            continue  # never descend into a zarr store (one without metadata fails, named)
        for name in sorted(entries):
            entry = entries[name]
            if name.startswith(".") or name in SKIP_DIRS or entry["name"].rstrip("/") == path:
                continue
            child = posixpath.join(path, name)
            if entry.get("type") == "directory":
                queue.append(child)
            elif _is_tiff(name):
                child_rel = posixpath.relpath(child, root_path)
                candidates.append(
                    _Candidate("tiff", child, _scene_id(child_rel),
                               _url_of(root, root_path, child), {}, entry)
                )
    return candidates, failures


# --------------------------------------------------------------------------- fingerprints


def _stamp(info: Mapping[str, Any]) -> str:
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return "etag:" + str(etag).strip('"')
    mtime = info.get("mtime", info.get("LastModified", info.get("created")))
    if hasattr(mtime, "isoformat"):
        mtime = mtime.isoformat()
    return f"size:{info.get('size')},mtime:{mtime}"


def _fingerprint(kind: str, array_path: str | None, shape: tuple[int, ...], dtype: str,
                 axes: str, stamps: list[tuple[str, str]]) -> str:
    payload = json.dumps([kind, array_path, list(shape), dtype, axes, sorted(stamps)])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _check_dtype(dtype: np.dtype, where: str) -> str:
    name = dtype.newbyteorder("=").name if dtype.byteorder not in ("=", "|") else dtype.name
    if name not in SUPPORTED_DTYPES:
        raise _Unreadable(
            f"{where} has dtype {name!r}, which is not supported; convert the scene to one of "
            f"{', '.join(SUPPORTED_DTYPES)}"
        )
    return name


def _to_chw(axes: str, shape: tuple[int, ...], where: str) -> tuple[tuple[int, int, int], str]:
    """(C, H, W) and the stored layout for lowercase axes (c, y, x and singleton t / z)."""
    if len(axes) != len(shape):
        raise _Unreadable(f"{where}: axes {axes!r} do not match its {len(shape)}-D shape {shape}")
    sizes = dict(zip(axes, shape, strict=True))
    if "y" not in sizes or "x" not in sizes or len(set(axes)) != len(axes):
        raise _Unreadable(f"{where}: axes {axes!r} need exactly one 'y' and one 'x' axis")
    extra = [a for a in axes if a not in "cyx"]
    if any(sizes[a] != 1 for a in extra):
        raise _Unreadable(
            f"{where}: axes {axes!r} with shape {shape}: only c, y, x may exceed size 1 "
            "(one time point, one z plane); split the scene"
        )
    shape_chw = (sizes.get("c", 1), sizes["y"], sizes["x"])
    if min(shape_chw) < 1:
        raise _Unreadable(f"{where} is empty: shape {shape}")
    spatial = [a for a in axes if a in "cyx"]
    layout = "HWC" if spatial == ["y", "x", "c"] else "CHW"
    if "c" in sizes and spatial not in (["c", "y", "x"], ["y", "x", "c"]):
        raise _Unreadable(
            f"{where}: axis order {axes!r} is not supported; store (c, y, x) or (y, x, c)"
        )
    return shape_chw, layout


# --------------------------------------------------------------------------- zarr


def _read_json(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Unreadable(f"{posixpath.basename(path)} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _Unreadable(f"{posixpath.basename(path)} is not a JSON object")
    return doc


@dataclass
class _Node:
    """Metadata of one zarr node (array or group) plus the stamps of the files read."""

    zarr_format: int
    is_array: bool
    doc: dict[str, Any]
    attrs: dict[str, Any]
    stamps: list[tuple[str, str]]


def _read_node(fs: Any, store: str, sub: str, entries: Mapping[str, dict] | None) -> _Node | None:
    """zarr v3 or v2 metadata of ``store/sub``; None when no node is there."""
    base = posixpath.join(store, sub) if sub else store

    def stamp(name: str) -> tuple[str, str]:
        key = posixpath.join(sub, name) if sub else name
        info = entries.get(name) if (entries is not None and not sub) else None
        return key, _stamp(info if info is not None else fs.info(posixpath.join(base, name)))

    doc = _read_json(fs, posixpath.join(base, "zarr.json"))
    if doc is not None:
        if doc.get("zarr_format") != 3 or doc.get("node_type") not in ("array", "group"):
            name = posixpath.join(sub, "zarr.json") if sub else "zarr.json"
            raise _Unreadable(
                f"{name} is not zarr v3 metadata (zarr_format={doc.get('zarr_format')!r}, "
                f"node_type={doc.get('node_type')!r})"
            )
        attrs = doc.get("attributes") or {}
        return _Node(3, doc["node_type"] == "array", doc, attrs, [stamp("zarr.json")])
    for name, is_array in ((".zarray", True), (".zgroup", False)):
        doc = _read_json(fs, posixpath.join(base, name))
        if doc is None:
            continue
        stamps = [stamp(name)]
        attrs = _read_json(fs, posixpath.join(base, ".zattrs"))
        if attrs is not None:
            stamps.append(stamp(".zattrs"))
        return _Node(2, is_array, doc, attrs or {}, stamps)
    return None


def _array_meta(
    node: _Node, where: str
) -> tuple[tuple[int, ...], np.dtype, tuple[int, ...] | None]:
    """Shape, numpy dtype and chunk shape, validated by zarr's own metadata parser."""
    from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata

    try:
        if node.zarr_format == 3:
            meta = ArrayV3Metadata.from_dict(dict(node.doc))
        else:
            meta = ArrayV2Metadata.from_dict({**node.doc, "attributes": node.attrs})
        dtype = np.dtype(meta.dtype.to_native_dtype())
    except Exception as exc:
        raise _Unreadable(f"{where}: invalid zarr metadata: {type(exc).__name__}: {exc}") from None
    try:
        chunks: tuple[int, ...] | None = tuple(int(c) for c in meta.chunks)
    except Exception:  # irregular / extension chunk grids
        chunks = None
    return tuple(int(s) for s in meta.shape), dtype, chunks


def _georef_from_attrs(attrs: Mapping[str, Any]) -> Georef | None:
    """Georef from our own output attrs, a ``georeference`` dict, or GeoZarr-style keys."""
    candidates = [attrs.get("georeference"), (attrs.get("hgn") or {}).get("georeference")]
    for cand in candidates:
        if isinstance(cand, Mapping) and cand.get("transform") is not None:
            return Georef(cand.get("crs"), tuple(cand["transform"]))
    transform = attrs.get("spatial:transform")
    if transform is not None and len(transform) >= 6:
        a, b, c, d, e, f = (float(v) for v in transform[:6])  # rasterio Affine order
        return Georef(attrs.get("proj:code") or attrs.get("proj:wkt2"), (c, a, b, f, d, e))
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


def _zarr_scene(fs: Any, cand: _Candidate, layout: str) -> SceneInfo:
    store = cand.path
    root = _read_node(fs, store, "", cand.entries)
    if root is None:
        raise _Unreadable(
            "zarr metadata (zarr.json, .zarray or .zgroup) is missing: not a zarr store, or "
            "an incomplete copy"
        )
    if root.is_array:
        return _plain_array(cand, root, None, layout, root.stamps, root.attrs, None)

    ms = _ome_multiscale(root.attrs)
    if ms is not None:
        return _ome_scene(fs, cand, root, *ms)
    image = _read_node(fs, store, "image", None)
    if image is None or not image.is_array:
        raise _Unreadable(
            "zarr group has no 'image' array and no OME-Zarr multiscales metadata; "
            "store the pixels as <scene>/image or as an OME-Zarr image"
        )
    ground_truth = None
    labels = _read_node(fs, store, "labels", None)
    if labels is not None and labels.is_array:
        ground_truth = "labels"
    stamps = root.stamps + image.stamps + (labels.stamps if ground_truth else [])
    attrs = {**image.attrs, **root.attrs}
    info = _plain_array(cand, image, "image", layout, stamps, attrs, ground_truth)
    if ground_truth is not None:
        gt_shape, _, _ = _array_meta(labels, "labels")  # type: ignore[arg-type]
        if gt_shape != info.shape[1:]:
            info = replace(info, ground_truth=None)
    return info


def _plain_array(cand: _Candidate, node: _Node, array_path: str | None, layout: str,
                 stamps: list[tuple[str, str]], attrs: Mapping[str, Any],
                 ground_truth: str | None) -> SceneInfo:
    where = f"array {array_path!r}" if array_path else "array"
    shape, dtype, chunks = _array_meta(node, where)
    if len(shape) == 2:
        axes = "yx"
    elif len(shape) == 3:
        axes = "cyx" if layout == "CHW" else "yxc"
    else:
        raise _Unreadable(f"{where} is {len(shape)}-D {shape}; expected (H, W) or 3-D {layout}")
    dtype_name = _check_dtype(dtype, where)
    shape_chw, stored_layout = _to_chw(axes, shape, where)
    return SceneInfo(
        scene_id=cand.scene_id, url=cand.url, kind="zarr", array_path=array_path,
        shape=shape_chw, layout=stored_layout, dtype=dtype_name,
        fingerprint=_fingerprint("zarr", array_path, shape_chw, dtype_name, axes, stamps),
        georef=_georef_from_attrs(attrs), ground_truth=ground_truth, axes=axes,
        chunks=_chunks_chw(chunks, axes),
    )


def _ome_scene(fs: Any, cand: _Candidate, root: _Node, ms: Mapping[str, Any],
               version: str) -> SceneInfo:
    try:
        path = str(ms["datasets"][0]["path"])
        raw_axes = ms["axes"]
    except (KeyError, IndexError, TypeError):
        raise _Unreadable(
            f"OME-Zarr {version} multiscales metadata lacks datasets[0].path or axes"
        ) from None
    names = [a["name"] if isinstance(a, Mapping) else a for a in raw_axes]
    axes = "".join(str(n).lower() for n in names)
    if any(len(str(n)) != 1 for n in names):
        raise _Unreadable(f"OME-Zarr axes {names!r} are not single-letter t/c/z/y/x names")
    node = _read_node(fs, cand.path, path, None)
    if node is None or not node.is_array:
        raise _Unreadable(f"OME-Zarr level 0 array {path!r} is missing")
    where = f"OME-Zarr level {path!r}"
    shape, dtype, chunks = _array_meta(node, where)
    dtype_name = _check_dtype(dtype, where)
    shape_chw, layout = _to_chw(axes, shape, where)
    stamps = root.stamps + node.stamps
    return SceneInfo(
        scene_id=cand.scene_id, url=cand.url, kind="ome-zarr", array_path=path,
        shape=shape_chw, layout=layout, dtype=dtype_name,
        fingerprint=_fingerprint("ome-zarr", path, shape_chw, dtype_name, axes, stamps),
        georef=_georef_from_attrs(root.attrs), ground_truth=None, axes=axes,
        chunks=_chunks_chw(chunks, axes),
    )


# --------------------------------------------------------------------------- TIFF


def _tiff_axes(axes: str) -> str:
    """tifffile series axes -> our lowercase axes; any one non-YX axis counts as bands."""
    axes = axes.upper()
    if axes == "YX":
        return "yx"
    if len(axes) == 3 and axes[1:] == "YX":
        return "cyx"
    if len(axes) == 3 and axes[:2] == "YX":
        return "yxc"
    raise _Unreadable(
        f"TIFF series axes {axes!r} are not supported; expected YX, one band axis + YX "
        "(planar), or YX + samples (interleaved)"
    )


def _tiff_scene(fs: Any, cand: _Candidate, storage_options: Mapping[str, Any] | None) -> SceneInfo:
    import tifffile

    info = cand.info or fs.info(cand.path)
    size = int(info.get("size") or 0)
    if size < 8:
        raise _Unreadable(f"TIFF is truncated: {size} bytes, not even a header")
    if is_remote(cand.url):
        handle: Any = fs.open(cand.path, "rb", block_size=TIFF_BLOCK_SIZE, cache_type="readahead")
    else:
        handle = open(cand.path, "rb")  # noqa: SIM115 - closed below, TiffFile needs a handle
    try:
        try:
            tif = tifffile.TiffFile(handle)
        except Exception as exc:
            raise _Unreadable(f"not a readable TIFF: {type(exc).__name__}: {exc}") from None
        with tif:
            if not tif.series:
                raise _Unreadable("TIFF has no image series")
            series = tif.series[0]
            axes = _tiff_axes(series.axes)
            shape = tuple(int(s) for s in series.shape)
            dtype_name = _check_dtype(np.dtype(series.dtype), "TIFF series 0")
            shape_chw, layout = _to_chw(axes, shape, "TIFF series 0")
            pages = [p for p in series.pages if p is not None]
            end = max(
                (int(o) + int(n) for p in pages
                 for o, n in zip(p.dataoffsets, p.databytecounts, strict=False) if o),
                default=0,
            )
            if end > size:
                raise _Unreadable(
                    f"TIFF is truncated: image data extends to byte {end} but the file has "
                    f"{size} bytes; re-copy the file"
                )
            page0 = tif.pages.first
            geo = parse_geotiff(page0.tags)
            tile = (page0.tilelength, page0.tilewidth) if page0.is_tiled else None
    finally:
        handle.close()
    georef = Georef(*geo) if geo is not None else None
    chunks = None
    if tile is not None:
        chunks = (shape_chw[0] if axes != "cyx" else 1, int(tile[0]), int(tile[1]))
    return SceneInfo(
        scene_id=cand.scene_id, url=cand.url, kind="tiff", array_path=None,
        shape=shape_chw, layout=layout, dtype=dtype_name,
        fingerprint=_fingerprint("tiff", None, shape_chw, dtype_name, axes,
                                 [(posixpath.basename(cand.path), _stamp(info))]),
        georef=georef, ground_truth=None, axes=axes, chunks=chunks,
    )

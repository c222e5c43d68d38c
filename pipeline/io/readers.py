"""Window readers over catalogued scenes (zarr v2/v3, OME-Zarr, TIFF/COG), local or S3.

A :class:`SceneReader` is a small picklable spec (``SceneInfo`` + storage options): it travels
to Ray workers and Dask tasks, and opens the scene lazily in the process that reads. Opened
handles are cached per process (keyed by PID, so a forked child never reuses its parent's
event loop or file handle), at most :data:`MAX_OPEN_HANDLES` of them.

Only the requested window is read: zarr slicing fetches the chunks it overlaps; TIFFs go
through tifffile's zarr store (``TiffFile.aszarr()``), which decodes only the overlapped
tiles/strips, from an fsspec file on S3. Results are ``(C, h, w)`` in the scene's native
dtype (native byte order), C-contiguous and writable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import SceneReadError, WindowError
from pipeline.storage import StorageOptions, get_fs, is_remote, redact, strip_protocol

if TYPE_CHECKING:
    from pipeline.catalog import SceneInfo

__all__ = ["MAX_OPEN_HANDLES", "SceneReader", "clear_handle_cache", "open_scene"]

MAX_OPEN_HANDLES = 32  # per process; each open TIFF holds a file handle + parsed IFDs
TIFF_BLOCK_SIZE = 1 << 20  # s3 read granularity for tiles; small enough for random windows


@dataclass
class _Handle:
    array: Any  # zarr.Array (possibly over a tifffile store)
    closers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for obj in reversed(self.closers):
            with contextlib.suppress(Exception):  # best effort: the handle is being dropped
                obj.close()


_HANDLES: OrderedDict[tuple, _Handle] = OrderedDict()
_HANDLES_LOCK = threading.Lock()


def clear_handle_cache() -> None:
    """Close every handle this process opened (tests, long-lived workers between runs)."""
    with _HANDLES_LOCK:
        for handle in _HANDLES.values():
            handle.close()
        _HANDLES.clear()


def _options_digest(options: Mapping[str, Any]) -> str:
    # Part of the cache key only; the digest never leaves the process.
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()


def open_scene(info: SceneInfo, storage_options: Mapping[str, Any] | None = None) -> SceneReader:
    """A reader for ``info``; cheap (nothing is opened until the first read)."""
    return SceneReader(info, storage_options)


class SceneReader:
    """Reads windows of one scene as ``(C, h, w)`` arrays. Picklable; opens lazily."""

    def __init__(self, info: SceneInfo, storage_options: Mapping[str, Any] | None = None) -> None:
        self.info = info
        self._options = StorageOptions(storage_options or {})

    # -- pickling: the spec only, never an open handle
    def __getstate__(self) -> dict[str, Any]:
        return {"info": self.info, "options": dict(self._options)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.info = state["info"]
        self._options = StorageOptions(state["options"])

    def __repr__(self) -> str:
        i = self.info
        return f"SceneReader({i.scene_id!r}, url={i.url!r}, shape={i.shape}, dtype={i.dtype})"

    # -- array-like surface (dask.array.from_array uses these)
    @property
    def shape(self) -> tuple[int, int, int]:
        return self.info.shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.info.dtype)

    @property
    def ndim(self) -> int:
        return 3

    def __getitem__(self, key: Any) -> np.ndarray:
        """Basic slicing in (C, H, W) order (slices or ints, steps of 1)."""
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > 3:
            raise WindowError(
                f"scene {self.info.scene_id!r}: {len(key)} indices for a 3-D (C, H, W) scene"
            )
        key = key + (slice(None),) * (3 - len(key))
        bounds, squeeze = [], []
        for axis, (k, n) in enumerate(zip(key, self.shape, strict=True)):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step != 1:
                    raise WindowError(
                        f"scene {self.info.scene_id!r}: slice step {step} is not supported"
                    )
                bounds.append((start, max(start, stop)))
            else:
                i = int(k) + (n if int(k) < 0 else 0)
                bounds.append((i, i + 1))
                squeeze.append(axis)
        (c0, c1), (y0, y1), (x0, x1) = bounds
        if y1 == y0 or x1 == x0 or c1 == c0:
            out = np.empty((c1 - c0, y1 - y0, x1 - x0), dtype=self.dtype)
        else:
            out = self.read(y0, y1, x0, x1, bands=range(c0, c1))
        return out.squeeze(axis=tuple(squeeze)) if squeeze else out

    # -- reading
    def read(self, y0: int, y1: int, x0: int, x1: int,
             bands: Sequence[int] | None = None) -> np.ndarray:
        """Pixels of rows ``y0:y1`` and columns ``x0:x1`` (in bounds), bands in the given order.

        Raises WindowError for an out-of-bounds window or band, SceneReadError (naming scene,
        URL and window) when the bytes cannot be fetched or decoded.
        """
        info = self.info
        c, h, w = info.shape
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise WindowError(
                f"scene {info.scene_id!r}: window y={y0}:{y1}, x={x0}:{x1} is empty or outside "
                f"the scene's {h} x {w} pixels"
            )
        band_list = list(range(c)) if bands is None else [int(b) for b in bands]
        if not band_list or any(not 0 <= b < c for b in band_list):
            raise WindowError(
                f"scene {info.scene_id!r}: bands={band_list} must be non-empty indices "
                f"in 0..{c - 1}"
            )
        lo, hi = min(band_list), max(band_list) + 1
        window = f"window y={y0}:{y1}, x={x0}:{x1}, bands={band_list}"
        array = self._array()
        axes = _axes_of(info, array.ndim)
        index = []
        for axis in axes:
            if axis == "c":
                index.append(slice(lo, hi))
            elif axis == "y":
                index.append(slice(y0, y1))
            elif axis == "x":
                index.append(slice(x0, x1))
            else:
                index.append(0)  # singleton t / z
        try:
            data = np.asarray(array[tuple(index)])
        except Exception as exc:
            raise SceneReadError(
                info.scene_id, info.url,
                f"cannot read {window}: {type(exc).__name__}: {redact(str(exc), self._options)}",
            ) from None
        kept = [a for a in axes if a in "cyx"]
        if "c" not in kept:
            data, kept = data[np.newaxis], ["c", *kept]
        data = data.transpose([kept.index(a) for a in "cyx"])
        if band_list != list(range(lo, hi)):
            data = data[[b - lo for b in band_list]]
        expected = (len(band_list), y1 - y0, x1 - x0)
        if data.shape != expected:
            raise SceneReadError(
                info.scene_id, info.url,
                f"{window} returned shape {data.shape}, expected {expected}: the scene changed "
                "since it was catalogued; re-run the catalog",
            )
        native = self.dtype.newbyteorder("=")
        return np.ascontiguousarray(data, dtype=native)

    def read_ground_truth(self, y0: int = 0, y1: int | None = None, x0: int = 0,
                          x1: int | None = None) -> np.ndarray:
        """Ground-truth labels (H, W) of synthetic-layout scenes, window optional."""
        info = self.info
        if info.ground_truth is None:
            raise SceneReadError(
                info.scene_id, info.url, "the scene has no ground-truth labels array"
            )
        y1 = info.height if y1 is None else y1
        x1 = info.width if x1 is None else x1
        try:
            labels = _open_zarr(info.url, info.ground_truth, self._options)
            return np.ascontiguousarray(labels[y0:y1, x0:x1])
        except Exception as exc:
            raise SceneReadError(
                info.scene_id, info.url,
                f"cannot read ground truth {info.ground_truth!r} y={y0}:{y1}, x={x0}:{x1}: "
                f"{type(exc).__name__}: {redact(str(exc), self._options)}",
            ) from None

    def to_dask(self, chunks: int | tuple[int, ...] | None = None) -> Any:
        """A lazy ``dask.array`` (C, H, W) whose tasks call this reader (pixels stay on workers).

        ``chunks``: int (square spatial chunks, all bands), ``(h, w)``, ``(c, h, w)``, or None
        for the stored chunking (1024 px when unknown).
        """
        import dask.array as da

        c, h, w = self.shape
        if chunks is None:
            chunks = self.info.chunks[1:] if self.info.chunks else (1024, 1024)
        if isinstance(chunks, int):
            spec: tuple[int, ...] = (c, chunks, chunks)
        elif len(chunks) == 2:
            spec = (c, *chunks)
        elif len(chunks) == 3:
            spec = tuple(chunks)
        else:
            raise WindowError(f"chunks={chunks!r}: give an int, (h, w) or (c, h, w)")
        spec = tuple(max(1, min(int(s), n)) for s, n in zip(spec, (c, h, w), strict=True))
        token = hashlib.sha256(
            json.dumps([self.info.url, self.info.array_path, self.info.fingerprint, spec]).encode()
        ).hexdigest()[:16]
        return da.from_array(
            self, chunks=spec, name=f"read-{self.info.scene_id}-{token}", asarray=False,
            fancy=False, lock=False, meta=np.empty((0, 0, 0), dtype=self.dtype),
        )

    def close(self) -> None:
        """Drop this scene's cached handle in this process."""
        with _HANDLES_LOCK:
            handle = _HANDLES.pop(self._key(), None)
        if handle is not None:
            handle.close()

    # -- opening
    def _key(self) -> tuple:
        i = self.info
        digest = _options_digest(self._options)
        return (os.getpid(), i.kind, i.url, i.array_path, i.fingerprint, digest)

    def _array(self) -> Any:
        key = self._key()
        with _HANDLES_LOCK:
            handle = _HANDLES.get(key)
            if handle is not None:
                _HANDLES.move_to_end(key)
                return handle.array
        try:
            handle = self._open()
        except SceneReadError:
            raise
        except Exception as exc:
            raise SceneReadError(
                self.info.scene_id, self.info.url,
                f"cannot open: {type(exc).__name__}: {redact(str(exc), self._options)}",
            ) from None
        evicted: list[_Handle] = []
        with _HANDLES_LOCK:
            existing = _HANDLES.get(key)
            if existing is not None:  # another thread won the race; keep one
                evicted.append(handle)
                handle = existing
            else:
                _HANDLES[key] = handle
            while len(_HANDLES) > MAX_OPEN_HANDLES:
                evicted.append(_HANDLES.popitem(last=False)[1])
        for old in evicted:
            old.close()
        return handle.array

    def _open(self) -> _Handle:
        info = self.info
        if info.kind in ("zarr", "ome-zarr"):
            return _Handle(_open_zarr(info.url, info.array_path or "", self._options))
        if info.kind == "tiff":
            return _open_tiff(info, self._options)
        raise SceneReadError(info.scene_id, info.url, f"unknown scene kind {info.kind!r}")


def _open_zarr(url: str, path: str, options: Mapping[str, Any]) -> Any:
    import zarr

    if is_remote(url):
        return zarr.open_array(store=url, path=path, mode="r", storage_options=dict(options))
    return zarr.open_array(store=url, path=path, mode="r")


def _open_tiff(info: SceneInfo, options: Mapping[str, Any]) -> _Handle:
    import tifffile
    import zarr

    closers: list[Any] = []
    try:
        if is_remote(info.url):
            fs = get_fs(info.url, options)
            fh = fs.open(strip_protocol(info.url), "rb", block_size=TIFF_BLOCK_SIZE,
                         cache_type="readahead")
            closers.append(fh)
            tif = tifffile.TiffFile(fh)
        else:
            tif = tifffile.TiffFile(info.url)
        closers.append(tif)
        store = tif.aszarr(series=0, level=0)
        closers.append(store)
        array = zarr.open_array(store=store, mode="r")
    except Exception:
        _Handle(None, closers).close()
        raise
    if tuple(array.shape) != _stored_shape(info, array.ndim):
        _Handle(None, closers).close()
        raise SceneReadError(
            info.scene_id, info.url,
            f"TIFF series 0 now has shape {tuple(array.shape)}, catalogued as "
            f"{_stored_shape(info, array.ndim)}: re-run the catalog",
        )
    return _Handle(array, closers)


def _axes_of(info: SceneInfo, ndim: int) -> str:
    """Stored axis names; derived from ``layout`` for SceneInfos built without ``axes``."""
    if info.axes:
        return info.axes
    if ndim == 2:
        return "yx"
    return "yxc" if info.layout == "HWC" else "cyx"


def _stored_shape(info: SceneInfo, ndim: int) -> tuple[int, ...]:
    sizes = {"c": info.bands, "y": info.height, "x": info.width}
    return tuple(sizes.get(a, 1) for a in _axes_of(info, ndim))

"""The reader contract: picklable, lazy, windowed reads of one scene as ``(C, h, w)`` arrays.

:class:`SceneReader` is the base every format's reader extends (:mod:`pipeline.io.formats`):
a small picklable spec (``SceneInfo`` + storage options) that travels to Ray workers and Dask
tasks and opens the scene lazily in the process that reads. The base owns what every format
shares: bounds and band checks, errors that name the scene, URL and window, native byte order,
C-contiguous writable results, Dask arrays, and a per-process cache of opened handles (keyed
by PID, so a forked child never reuses its parent's event loop or file handle; handles that
are not thread-safe, such as GDAL datasets, are also keyed by thread), at most
:data:`MAX_OPEN_HANDLES` of them. A format implements ``_open() -> Handle`` only.

:func:`open_scene` picks the reader of ``info.kind``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import SceneReadError, WindowError
from pipeline.scene import SceneInfo
from pipeline.storage import StorageOptions, redact

__all__ = ["MAX_OPEN_HANDLES", "Handle", "SceneReader", "clear_handle_cache", "open_scene"]

MAX_OPEN_HANDLES = 32  # per process; each open file holds a handle + parsed headers


@dataclass
class Handle:
    """An opened scene: ``read(y0, y1, x0, x1, bands)`` returns ``(len(bands), h, w)``."""

    read: Callable[[int, int, int, int, list[int]], np.ndarray]
    closers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for obj in reversed(self.closers):
            with contextlib.suppress(Exception):  # best effort: the handle is being dropped
                obj.close()


_HANDLES: OrderedDict[tuple, Handle] = OrderedDict()
_HANDLES_LOCK = threading.Lock()


def clear_handle_cache() -> None:
    """Close every handle this process opened (tests, long-lived workers between runs)."""
    with _HANDLES_LOCK:
        for handle in _HANDLES.values():
            handle.close()
        _HANDLES.clear()


# Close handles while the interpreter (and fsspec's event loop) still runs: GDAL datasets read
# through a Python opener would otherwise be torn down after it, and GDAL reports I/O errors.
atexit.register(clear_handle_cache)


def _options_digest(options: Mapping[str, Any]) -> str:
    # Part of the cache key only; the digest never leaves the process.
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()


def open_scene(info: SceneInfo, storage_options: Mapping[str, Any] | None = None) -> SceneReader:
    """The reader of ``info`` (by ``info.kind``); cheap: nothing is opened until a read."""
    from pipeline.io.formats import format_for_kind

    return format_for_kind(info.kind, info).open(info, storage_options)


class SceneReader:
    """Reads windows of one scene as ``(C, h, w)`` arrays. Picklable; opens lazily.

    Subclasses implement :meth:`_open`; set ``THREAD_SAFE = False`` when one opened handle
    must not be read from two threads at once (each thread then opens its own).
    """

    THREAD_SAFE = True

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
        return (f"{type(self).__name__}({i.scene_id!r}, url={i.url!r}, shape={i.shape}, "
                f"dtype={i.dtype})")

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
        window = f"window y={y0}:{y1}, x={x0}:{x1}, bands={band_list}"
        handle = self._handle()
        try:
            data = np.asarray(handle.read(y0, y1, x0, x1, band_list))
        except SceneReadError:
            raise
        except Exception as exc:
            raise SceneReadError(
                info.scene_id, info.url,
                f"cannot read {window}: {type(exc).__name__}: {redact(str(exc), self._options)}",
            ) from None
        expected = (len(band_list), y1 - y0, x1 - x0)
        if data.shape != expected:
            raise SceneReadError(
                info.scene_id, info.url,
                f"{window} returned shape {data.shape}, expected {expected}: the scene changed "
                "since it was catalogued; re-run the catalog",
            )
        native = self.dtype.newbyteorder("=")
        out = np.ascontiguousarray(data, dtype=native)
        return out if out.flags.writeable else out.copy()

    def read_ground_truth(self, y0: int = 0, y1: int | None = None, x0: int = 0,
                          x1: int | None = None) -> np.ndarray:
        """Ground-truth labels (H, W) of synthetic-layout scenes, window optional."""
        info = self.info
        raise SceneReadError(info.scene_id, info.url, "the scene has no ground-truth labels array")

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
        """Drop this scene's cached handles in this process (every thread's)."""
        base = self._key()[:-1]
        with _HANDLES_LOCK:
            keys = [k for k in _HANDLES if k[:-1] == base]
            handles = [_HANDLES.pop(k) for k in keys]
        for handle in handles:
            handle.close()

    # -- opening
    def _key(self) -> tuple:
        i = self.info
        digest = _options_digest(self._options)
        thread = None if self.THREAD_SAFE else threading.get_ident()
        return (os.getpid(), i.kind, i.url, i.array_path, i.fingerprint, digest, thread)

    def _handle(self) -> Handle:
        key = self._key()
        with _HANDLES_LOCK:
            handle = _HANDLES.get(key)
            if handle is not None:
                _HANDLES.move_to_end(key)
                return handle
        try:
            handle = self._open()
        except SceneReadError:
            raise
        except Exception as exc:
            raise SceneReadError(
                self.info.scene_id, self.info.url,
                f"cannot open: {type(exc).__name__}: {redact(str(exc), self._options)}",
            ) from None
        evicted: list[Handle] = []
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
        return handle

    def _open(self) -> Handle:
        raise NotImplementedError(f"{type(self).__name__} does not implement _open()")

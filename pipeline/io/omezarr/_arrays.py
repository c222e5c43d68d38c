"""Opening a store's groups and arrays; writable arrays cached per process."""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from pipeline.state.integrity import digest_store
from pipeline.storage import open_kwargs

MAX_OPEN_ARRAYS = 256  # per process; zarr Array objects are small (metadata + store ref)
_ARRAYS: OrderedDict[tuple, Any] = OrderedDict()
_ARRAYS_LOCK = threading.Lock()


def open_array(url: str, path: str, options: Mapping[str, Any], mode: str = "r+") -> Any:
    import zarr

    key = (os.getpid(), url, path, mode, json.dumps(options, sort_keys=True, default=str))
    with _ARRAYS_LOCK:
        if key in _ARRAYS:
            _ARRAYS.move_to_end(key)
            return _ARRAYS[key]
    if mode == "r":
        array = zarr.open_array(store=url, path=path, mode=mode, zarr_format=3,
                                **open_kwargs(url, options))
    else:  # writes go through a store that records each stored chunk's checksum
        array = zarr.open_array(store=digest_store(url, options), path=path, mode=mode,
                                zarr_format=3)
    with _ARRAYS_LOCK:
        array = _ARRAYS.setdefault(key, array)
        while len(_ARRAYS) > MAX_OPEN_ARRAYS:
            _ARRAYS.popitem(last=False)
        return array


def forget_arrays(url: str) -> None:
    with _ARRAYS_LOCK:
        for key in [k for k in _ARRAYS if k[1] == url]:
            del _ARRAYS[key]


def open_group(url: str, options: Mapping[str, Any], mode: str, path: str | None = None) -> Any:
    import zarr

    return zarr.open_group(store=url, path=path, mode=mode, zarr_format=3,
                           **open_kwargs(url, options))


def read_array(url: str, path: str, options: Mapping[str, Any] | None = None) -> Any:
    """Array ``path`` of the store at ``url``, read-only and opened afresh (never cached: a
    store that a run rewrites is read as it is now)."""
    import zarr

    return zarr.open_array(store=url, path=path, mode="r", zarr_format=3,
                           **open_kwargs(url, options))

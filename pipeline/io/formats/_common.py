"""What every format shares: the probe target, fingerprints, dtype and axis checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.scene import SUPPORTED_DTYPES

__all__ = ["BandFile", "Target", "Unusable", "check_dtype", "fingerprint", "stamp", "to_chw"]


class Unusable(Exception):
    """Internal to probes: the scene at hand cannot be used; the message is the reason."""


@dataclass(frozen=True)
class BandFile:
    """One file of a multi-file scene: its band name, fsspec path, URL and listing entry."""

    band: str
    path: str
    url: str
    entry: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """What a probe looks at: one file, one zarr store, or the files of a multi-file scene.

    ``path`` is the fsspec path on ``fs``; ``entry`` the file's own listing entry (size, ETag,
    mtime); ``entries`` a store's root listing (names -> entries); ``files`` the band files of
    a multi-file scene in band order; ``nodata`` the run config's override, when set.
    """

    url: str
    path: str
    scene_id: str
    fs: Any
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    layout: str = "CHW"
    entry: Mapping[str, Any] = field(default_factory=dict)
    entries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    files: tuple[BandFile, ...] = ()
    nodata: float | None = None

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def stamp(info: Mapping[str, Any]) -> str:
    """Change marker of one stored object: its ETag, else size + mtime."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return "etag:" + str(etag).strip('"')
    mtime = info.get("mtime", info.get("LastModified", info.get("created")))
    if hasattr(mtime, "isoformat"):
        mtime = mtime.isoformat()
    return f"size:{info.get('size')},mtime:{mtime}"


def fingerprint(kind: str, array_path: str | None, shape: tuple[int, ...], dtype: str,
                axes: str, stamps: list[tuple[str, str]]) -> str:
    """sha256 over what identifies a scene's content cheaply (metadata, never pixels)."""
    payload = json.dumps([kind, array_path, list(shape), dtype, axes, sorted(stamps)])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def check_dtype(dtype: Any, where: str) -> str:
    """The native-order dtype name, or Unusable for dtypes the model cannot take."""
    dtype = np.dtype(dtype)
    name = dtype.newbyteorder("=").name if dtype.byteorder not in ("=", "|") else dtype.name
    if name not in SUPPORTED_DTYPES:
        raise Unusable(
            f"{where} has dtype {name!r}, which is not supported: scenes must hold real "
            f"numbers ({', '.join(SUPPORTED_DTYPES)}); convert it, e.g. "
            "`gdal_translate -ot Float32` or `arr.astype('float32')`"
        )
    return name


def to_chw(axes: str, shape: tuple[int, ...], where: str) -> tuple[tuple[int, int, int], str]:
    """(C, H, W) and the stored layout for lowercase axes (c, y, x and singleton t / z)."""
    if len(axes) != len(shape):
        raise Unusable(f"{where}: axes {axes!r} do not match its {len(shape)}-D shape {shape}")
    sizes = dict(zip(axes, shape, strict=True))
    if "y" not in sizes or "x" not in sizes or len(set(axes)) != len(axes):
        raise Unusable(f"{where}: axes {axes!r} need exactly one 'y' and one 'x' axis")
    extra = [a for a in axes if a not in "cyx"]
    if any(sizes[a] != 1 for a in extra):
        raise Unusable(
            f"{where}: axes {axes!r} with shape {shape}: only c, y, x may exceed size 1 "
            "(one time point, one z plane); split the scene"
        )
    shape_chw = (sizes.get("c", 1), sizes["y"], sizes["x"])
    if min(shape_chw) < 1:
        raise Unusable(f"{where} is empty: shape {shape}")
    spatial = [a for a in axes if a in "cyx"]
    layout = "HWC" if spatial == ["y", "x", "c"] else "CHW"
    if "c" in sizes and spatial not in (["c", "y", "x"], ["y", "x", "c"]):
        raise Unusable(
            f"{where}: axis order {axes!r} is not supported; store (c, y, x) or (y, x, c)"
        )
    return shape_chw, layout

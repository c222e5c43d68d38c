"""Outputs that prove their integrity: a checksum of every stored chunk, kept in the ledger.

When a chunk is written, the bytes zarr hands to the store (already encoded: exactly what is
stored) are hashed on the way through :class:`DigestStore`, so recording costs no extra
request and checking needs no decode. Each level-0 unit's ledger marker carries
``stored = {key: {"size", "md5", "sha256"} | None}`` for the chunks it wrote (``None``: all
fill value, so zarr stored nothing); the scene's pyramid chunks are recorded under the
marker :data:`PYRAMID_UNIT` when the scene is finalized. ``md5`` equals S3's ETag of a
single-part PUT, so a bucket listing alone can show a changed object.

Two checks over a scene (:func:`check_scene`):

- ``cheap``: one listing of the store; a recorded chunk that is absent, or of another size,
  or (S3) another ETag, or modified after the scene was recorded done, is re-hashed and
  reported if its bytes differ. Used by ``nightly`` and before every ``query stats``.
- ``deep``: every recorded chunk is read and its sha256 compared (``hgn-pipeline verify``).

Keys are relative to the scene's store (``labels/segmentation/0/c/1/2``, ``0/c/1/2``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from zarr.storage import WrapperStore

from pipeline.storage import get_fs, is_remote, join_url, listed_root, strip_protocol

__all__ = [
    "PYRAMID_UNIT",
    "ChunkProblem",
    "DigestStore",
    "SceneIntegrity",
    "block_keys",
    "check_scene",
    "digest",
    "digest_store",
    "listing",
]

PYRAMID_UNIT = "pyramid"  # ledger marker id holding the pyramid chunks' checksums of a scene
HASH_WORKERS = 8  # concurrent chunk reads when re-hashing (S3 latency, not CPU, bounds them)

Record = dict[str, Any] | None  # {"size", "md5", "sha256"} or None: nothing stored (fill value)


def digest(data: bytes) -> dict[str, Any]:
    """Size, md5 (= S3 single-part ETag) and sha256 of stored bytes."""
    return {"size": len(data), "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest()}


class DigestStore(WrapperStore):  # type: ignore[type-arg]
    """A zarr store that remembers the digest of each value written (or that it deleted).

    Writers :meth:`take` the records of the keys they just wrote, so the dict stays small.
    """

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self._records: dict[str, Record] = {}
        self._lock = threading.Lock()

    async def set(self, key: str, value: Any) -> None:
        record = digest(value.to_bytes())
        await super().set(key, value)
        with self._lock:
            self._records[key] = record

    async def delete(self, key: str) -> None:
        await super().delete(key)
        with self._lock:
            self._records[key] = None

    def take(self, keys: Iterable[str]) -> dict[str, Record]:
        """Records of ``keys`` written since they were last taken (missing keys omitted)."""
        out: dict[str, Record] = {}
        with self._lock:
            for key in keys:
                if key in self._records:
                    out[key] = self._records.pop(key)
        return out

    def take_prefix(self, prefixes: tuple[str, ...]) -> dict[str, Record]:
        with self._lock:
            keys = [k for k in self._records if k.startswith(prefixes)]
            return {k: self._records.pop(k) for k in keys}


MAX_STORES = 256  # per process, least recently used dropped (a store is small: a handle)
_STORES: OrderedDict[tuple[int, str, str], DigestStore] = OrderedDict()
_STORES_LOCK = threading.Lock()


def digest_store(url: str, options: Mapping[str, Any]) -> DigestStore:
    """The process's writable :class:`DigestStore` over the zarr store at ``url``."""
    key = (os.getpid(), url, json.dumps(dict(options), sort_keys=True, default=str))
    with _STORES_LOCK:
        if key in _STORES:
            _STORES.move_to_end(key)
            return _STORES[key]
        from zarr.storage import FsspecStore, LocalStore

        inner = (FsspecStore.from_url(url, storage_options=dict(options))
                 if is_remote(url) else LocalStore(url))
        store = _STORES[key] = DigestStore(inner)
        while len(_STORES) > MAX_STORES:
            _STORES.popitem(last=False)
        return store


def chunk_key(array_path: str, cy: int, cx: int) -> str:
    return f"{array_path}/c/{cy}/{cx}"


def block_keys(array_path: str, chunk: tuple[int, int], y0: int, x0: int, h: int,
               w: int) -> list[str]:
    """Store keys of the chunks a chunk-aligned block ``(y0, x0, h, w)`` covers."""
    ch, cw = chunk
    return [chunk_key(array_path, cy, cx)
            for cy in range(y0 // ch, math.ceil((y0 + h) / ch))
            for cx in range(x0 // cw, math.ceil((x0 + w) / cw))]


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class ChunkProblem:
    """One chunk that does not hold what the ledger recorded."""

    key: str
    problem: str  # "missing" | "damaged" | "not computed"
    unit: str | None = None  # the work unit that writes it (None: a pyramid chunk)

    def __str__(self) -> str:
        return f"{self.key} ({self.problem})"


@dataclass
class SceneIntegrity:
    """What a check of one scene found."""

    scene_id: str
    store: str
    recorded: int = 0  # chunks with a recorded checksum
    checked: int = 0  # chunks compared (listing or bytes)
    problems: list[ChunkProblem] = field(default_factory=list)
    note: str | None = None  # e.g. "written before checksums were recorded"
    tracked: bool = True  # False: the ledger has no record of this scene's chunks at all

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def units(self) -> list[str]:
        """Work units to recompute (sorted): those of missing / damaged level-0 chunks."""
        return sorted({p.unit for p in self.problems if p.unit is not None})

    @property
    def pyramid_damaged(self) -> bool:
        return any(p.unit is None for p in self.problems)

    def keys(self, problem: str | None = None) -> list[str]:
        return [p.key for p in self.problems if problem is None or p.problem == problem]

    def describe(self, limit: int = 8) -> str:
        """``3 missing, 1 damaged: labels/segmentation/0/c/1/2 (missing), ...``."""
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.problem] = counts.get(p.problem, 0) + 1
        head = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
        shown = ", ".join(str(p) for p in self.problems[:limit])
        more = f", ... ({len(self.problems) - limit} more)" if len(self.problems) > limit else ""
        return f"{head} chunks: {shown}{more}"


def listing(store_url: str, options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """key -> listing entry (size, ETag / mtime) of every object below the store."""
    fs, root = listed_root(store_url, options)
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    return {path[len(root) + 1:]: info for path, info in found.items()
            if path.startswith(root + "/")}


def _etag(info: Mapping[str, Any]) -> str | None:
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    return etag if len(etag) == 32 and "-" not in etag else None  # single-part PUT = md5


def _mtime(info: Mapping[str, Any]) -> float | None:
    value = info.get("mtime", info.get("LastModified"))
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def _stamp_s(stamp: str | None) -> float | None:
    if not stamp:
        return None
    with contextlib.suppress(ValueError):
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    return None


def _suspect(record: Mapping[str, Any], info: Mapping[str, Any], since: float | None) -> bool:
    """Whether a listed object may differ from its record (then its bytes are hashed)."""
    if int(info.get("size", -1)) != int(record["size"]):
        return True
    etag = _etag(info)
    if etag is not None:
        return etag != record["md5"]
    mtime = _mtime(info)
    # Chunks are written before their scene is recorded done, and filesystems truncate
    # mtimes, so a later mtime means a later write (clock skew only costs a re-hash).
    return since is None or mtime is None or mtime > since


def check_scene(
    scene_id: str,
    store_url: str,
    expected: Mapping[str, tuple[Record, str | None]],
    not_computed: Mapping[str, str] | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    deep: bool = False,
    done_at: str | None = None,
) -> SceneIntegrity:
    """Compare a scene's stored chunks with ``expected`` (key -> (record, unit id or None)).

    ``not_computed``: key -> unit id of chunks no finished unit wrote (an incomplete scene).
    ``deep``: hash every recorded chunk; else only the ones the listing makes suspect.
    ``done_at``: when the scene was recorded done (``now_utc`` stamp), for local mtimes.
    """
    options = options or {}
    result = SceneIntegrity(scene_id, store_url, recorded=len(expected))
    for key, unit in sorted((not_computed or {}).items()):
        result.problems.append(ChunkProblem(key, "not computed", unit))
    listed = listing(store_url, options)
    since = _stamp_s(done_at)
    to_hash: list[tuple[str, dict[str, Any], str | None]] = []
    for key, (record, unit) in sorted(expected.items()):
        info = listed.get(key)
        result.checked += 1
        if record is None:
            if info is not None:  # the ledger says nothing was stored here
                result.problems.append(ChunkProblem(key, "damaged", unit))
            continue
        if info is None:
            result.problems.append(ChunkProblem(key, "missing", unit))
        elif deep or _suspect(record, info, since):
            to_hash.append((key, record, unit))
    fs = get_fs(store_url, options)
    root = strip_protocol(store_url).rstrip("/")

    def differs(item: tuple[str, dict[str, Any], str | None]) -> bool:
        key, record, _ = item
        try:
            data = fs.cat_file(join_url(root, key))
        except FileNotFoundError:
            return True
        return hashlib.sha256(data).hexdigest() != record["sha256"]

    with ThreadPoolExecutor(HASH_WORKERS) as pool:
        for item, bad in zip(to_hash, pool.map(differs, to_hash), strict=True):
            if bad:
                result.problems.append(ChunkProblem(item[0], "damaged", item[2]))
    result.problems.sort(key=lambda p: (p.problem, p.key))
    return result

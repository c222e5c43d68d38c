"""Small objects under ``<output>/_hgn/`` (ledger, run lock, history), local or ``s3://``.

Writes are whole-object (one PUT on S3, temp file + rename locally), so readers never see a
torn object. :meth:`HgnStore.create` is a conditional create: ``os.link`` of a complete temp
file locally, ``If-None-Match: *`` on S3 (AWS S3 and SeaweedFS honour it; a server that
rejects the header falls back to check-then-put, with a one-round-trip race window).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from pipeline.errors import OutputError, s3_error
from pipeline.storage import (
    StorageOptions,
    get_fs,
    is_remote,
    join_url,
    redact,
    resolve_url,
    strip_protocol,
)

__all__ = ["HGN_DIR", "HgnStore", "age_s", "now_utc", "segment"]

log = logging.getLogger(__name__)

HGN_DIR = "_hgn"
_MAX_NAME = 200  # object-name budget per path segment (local filesystems allow 255 bytes)
_STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


def now_utc() -> str:
    """UTC timestamp, ISO 8601 with microseconds (sorts as text)."""
    return datetime.now(UTC).strftime(_STAMP)


def age_s(stamp: str) -> float:
    """Seconds since a :func:`now_utc` stamp."""
    then = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
    return (datetime.now(UTC) - then).total_seconds()


def segment(name: str, what: str) -> str:
    """One safe path segment for an id (``/``, ``#``, ``..`` and spaces escaped)."""
    if not name:
        raise ValueError(f"{what} is empty; ids must be non-empty strings")
    seg = quote(name, safe="-_.~+=,@")
    if seg in (".", ".."):
        seg = seg.replace(".", "%2E")
    if len(seg) > _MAX_NAME:
        if what == "chunk_id":
            raise ValueError(
                f"chunk_id {name[:40]!r}... is {len(seg)} chars once escaped; max {_MAX_NAME}"
            )
        # Scene ids come from archive paths and may be long; records keep the full id inside.
        seg = f"{seg[:150]}~{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return seg


class HgnStore:
    """Small-object access below ``<output>/_hgn`` (picklable; the filesystem opens lazily).

    ``rel`` paths are relative to ``<output>/_hgn``.
    """

    def __init__(self, output_url: str, storage_options: Mapping[str, Any] | None) -> None:
        self.output_url = resolve_url(output_url)
        self.storage_options = StorageOptions(storage_options or {})  # repr masks secrets
        self.root = join_url(strip_protocol(self.output_url), HGN_DIR)
        self.remote = is_remote(self.output_url)
        self._fs: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fs": None}

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs = get_fs(self.output_url, self.storage_options)
        return self._fs

    def path(self, rel: str) -> str:
        return join_url(self.root, rel)

    def url(self, rel: str) -> str:
        path = self.path(rel)
        return f"s3://{path}" if self.remote else path

    def _fail(self, action: str, rel: str, exc: BaseException) -> OutputError:
        return OutputError(
            f"cannot {action} {self.url(rel)}: {type(exc).__name__}: "
            f"{redact(str(exc), self.storage_options)}. Check that the output location exists "
            "and is writable with the configured credentials."
        )

    def read(self, rel: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fail("read", rel, exc) from None

    def read_json(self, rel: str) -> dict[str, Any] | None:
        data = self.read(rel)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None  # a torn local write; callers treat it like an unreadable record

    def write(self, rel: str, data: bytes) -> None:
        path = self.path(rel)
        try:
            if self.remote:
                self.fs.pipe_file(path, data)  # one PUT: readers see old or new, never a mix
                return
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # atomic rename: no torn reads
        except OSError as exc:
            raise self._fail("write", rel, exc) from None

    def create(self, rel: str, data: bytes) -> bool:
        """Write ``rel`` only if absent; True when this call created it."""
        path = self.path(rel)
        try:
            if self.remote:
                return self._create_s3(path, data)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)  # atomic and exclusive, with the content already complete
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise self._fail("create", rel, exc) from None

    def _create_s3(self, path: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(path, data, mode="create")  # PUT with If-None-Match: *
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            code, status = s3_error(exc) or ("", None)
            if code == "PreconditionFailed" or status == 412:
                return False  # 412 from servers that omit the Condition field (SeaweedFS)
            if code != "NotImplemented" and status != 501:
                raise
        # The server rejects conditional writes: check-then-put (race window: one round trip).
        log.warning("S3 server refuses If-None-Match; %s created without it", path)
        if self.fs.exists(path):
            return False
        self.fs.pipe_file(path, data)
        return True

    def delete(self, rels: Iterable[str]) -> None:
        paths = [self.path(r) for r in rels]
        if not paths:
            return
        try:
            if self.remote:
                self.fs.rm(paths)  # batched DeleteObjects
            else:
                for p in paths:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(p)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._fail("delete under", os.path.dirname(paths[0]), exc) from None

    def delete_tree(self, rel: str) -> None:
        path = self.path(rel)
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._fail("delete", rel, exc) from None

    def list(self, rel: str) -> list[str]:
        """Paths (relative to ``rel``) of every object below ``rel``; [] if there is none."""
        path = self.path(rel)
        try:
            self.fs.invalidate_cache(path)  # s3fs caches listings; other writers add objects
            found = self.fs.find(path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._fail("list", rel, exc) from None
        prefix = path.rstrip("/") + "/"
        return [p[len(prefix):] for p in found if p.startswith(prefix) and ".tmp-" not in p]

    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        if not rels:
            return {}
        paths = {self.path(r): r for r in rels}
        try:
            got = self.fs.cat(list(paths), on_error="omit")  # concurrent GETs on S3
        except OSError as exc:
            raise self._fail("read", rels[0], exc) from None
        return {paths[p]: v for p, v in got.items() if isinstance(v, bytes)}

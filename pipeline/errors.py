"""One exception hierarchy for the pipeline, with a transient/permanent kind.

Every class also subclasses the nearest builtin, so callers that only know Python's own
exceptions (``ValueError``, ``OSError``) still catch them. Messages name the scene / field,
its value, and the fix. Nothing here ever formats storage options or credentials.

Kinds: a :data:`TRANSIENT` error may succeed when the same request is simply repeated
(throttling, a dropped connection, a timeout, a 5xx answer); a :data:`PERMANENT` one will not
(a missing object, refused credentials, bytes that do not decode, a scene that changed). Only
transient errors are retried (:mod:`pipeline.retries`); results carry the kind
(:func:`kind_of`) so reports and callers decide on it, never on message text.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

__all__ = [
    "PERMANENT",
    "TRANSIENT",
    "ConfigError",
    "DamagedOutputError",
    "LedgerMismatchError",
    "LockLostError",
    "NameRefusedError",
    "NoAreaError",
    "NonFiniteError",
    "OutputError",
    "OutputNotFoundError",
    "PipelineError",
    "PoolLostError",
    "QueryError",
    "RayConnectError",
    "RunInterrupted",
    "RunLockedError",
    "SceneNotFoundError",
    "SceneReadError",
    "StorageError",
    "WindowError",
    "is_transient",
    "kind_of",
    "s3_error",
]

TRANSIENT = "transient"
PERMANENT = "permanent"


class PipelineError(Exception):
    """Base class of every error raised by ``pipeline``.

    ``kind`` is :data:`PERMANENT` unless the class or the raiser says otherwise; an error
    that wraps another (``raise X(...) from exc``) may pass ``kind=kind_of(exc)``.
    """

    kind: str = PERMANENT

    def __init__(self, *args: object, kind: str | None = None) -> None:
        super().__init__(*args)
        if kind is not None:
            if kind not in (TRANSIENT, PERMANENT):
                raise ValueError(f"kind={kind!r}: use {TRANSIENT!r} or {PERMANENT!r}")
            self.kind = kind


class _Verbatim:
    """``str()`` is the message itself (OSError would render "[Errno x] ..." for 2-3 args)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[object, ...]:
        # Exceptions travel between Ray workers by pickle; keep the message and the kind.
        return (_rebuild, (type(self), self.args, kind_of(self)))  # type: ignore[arg-type]


def _rebuild(cls: type[PipelineError], args: tuple[object, ...], kind: str) -> PipelineError:
    return cls(*args, kind=kind)


class ConfigError(PipelineError, ValueError):
    """A configuration value (or URL, option) is invalid; the message names it and the fix."""


class RayConnectError(ConfigError):
    """No Ray cluster answered at the given address within the connect timeout."""


class StorageError(_Verbatim, PipelineError, OSError):
    """Object storage / filesystem access failed (listing, opening, credentials)."""


class OutputError(_Verbatim, PipelineError, OSError):
    """Writing or opening an output store failed, or its target is refused."""


class NameRefusedError(ConfigError, OutputError):
    """A name that would become a path (run id, scene id, export path) breaks the name rule.

    Both a :class:`ConfigError` (bad input) and an :class:`OutputError` (a refused target).
    """


class OutputNotFoundError(OutputError, FileNotFoundError):
    """The output root (or a scene's store in it) does not exist."""


class DamagedOutputError(OutputError):
    """Chunks of an output are missing or do not match the checksums in the ledger.

    ``chunks`` lists the store keys concerned (``labels/segmentation/0/c/1/2``...).
    """

    def __init__(self, message: str, chunks: tuple[str, ...] = (), *, kind: str | None = None):
        super().__init__(message, kind=kind)
        self.chunks = tuple(chunks)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.args[0], self.chunks))


class NoAreaError(PipelineError, ValueError):
    """The grid has no CRS (or no georeference): areas cannot be given in m2."""


class PoolLostError(PipelineError, RuntimeError):
    """The run had no model actor alive for longer than ``no_actor_timeout_s``.

    What was written is recorded in the ledger: rerunning the same command resumes.
    """


class WindowError(PipelineError, ValueError):
    """A requested window or band selection lies outside the scene."""


class QueryError(PipelineError, ValueError):
    """A query asks for something the scene does not have (level, layer, georeference)."""


class SceneNotFoundError(PipelineError, LookupError):
    """No such scene in the output."""


class RunLockedError(PipelineError, RuntimeError):
    """Another run holds the output's lock."""


class LockLostError(PipelineError, RuntimeError):
    """This run's lock was taken over (its heartbeat stalled longer than the lock's TTL)."""


class LedgerMismatchError(PipelineError, ValueError):
    """The output was written with another run fingerprint (model or output settings)."""


class RunInterrupted(BaseException):
    """The run received SIGTERM/SIGINT; raised in the main thread so every lock unwinds.

    Deliberately outside :class:`PipelineError` and ``Exception`` (like ``KeyboardInterrupt``):
    code that catches ``Exception`` to report one scene's failure must not swallow it.
    ``signum`` is the signal's number; the process should exit with ``128 + signum``.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


class SceneReadError(PipelineError, OSError):
    """A scene (or a window of it) could not be read.

    Attributes ``scene_id``, ``url`` and ``reason`` are kept separately so reports can show
    them in columns; ``str()`` gives one sentence with all three. ``kind`` defaults to the
    kind of the error it was raised from (a throttled read is transient, a corrupt chunk not).
    """

    def __init__(self, scene_id: str, url: str, reason: str, kind: str | None = None) -> None:
        super().__init__(scene_id, url, reason, kind=kind)
        self.scene_id = scene_id
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return f"scene {self.scene_id!r} ({self.url}): {self.reason}"

    def __reduce__(self) -> tuple[type[SceneReadError], tuple[str, str, str, str]]:
        # OSError's default reduce would re-interpret our args as (errno, strerror, filename);
        # the kind is resolved now, while the chain of causes still exists.
        return (type(self), (self.scene_id, self.url, self.reason, kind_of(self)))


class NonFiniteError(PipelineError, ValueError):
    """A data pixel holds NaN or Inf; ``band``, ``y``, ``x`` are in scene coordinates."""

    def __init__(self, scene_id: str, band: int, y: int, x: int) -> None:
        super().__init__(scene_id, band, y, x)
        self.scene_id, self.band, self.y, self.x = scene_id, band, y, x

    def __str__(self) -> str:
        return (f"scene {self.scene_id!r}: NaN/Inf value at band {self.band}, y={self.y}, "
                f"x={self.x} (scene pixel coordinates); fix the pixel or mark it as nodata "
                "(NaN always is; declare other fill values with `nodata:` in the run config)")

    def __reduce__(self) -> tuple[type[NonFiniteError], tuple[str, int, int, int]]:
        return (type(self), (self.scene_id, self.band, self.y, self.x))


class ChangeError(PipelineError, ValueError):
    """A change map cannot be made or read (no earlier labels, another grid, no layer)."""


class NotFoundError(PipelineError, LookupError):
    """A viewer request names what the output does not have (scene, tile, file): HTTP 404."""


# --------------------------------------------------------------------------- classification

# S3 error codes that mean "try again" (throttling, server-side hiccups, clock-free timeouts).
_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
    "TooManyRequestsException", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "OperationAborted", "PriorRequestNotComplete",
})
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_TRANSIENT_ERRNOS = frozenset({
    errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED,
    errno.ECONNREFUSED, errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN,
})
# Builtin classes that never get better by retrying, whatever their errno says.
_PERMANENT_TYPES = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                    FileExistsError)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it was raised from or during (cycle-safe)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)


def _transient_types() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.timeout]
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError, ReadTimeoutError

        found += [BotoConnectionError, HTTPClientError, ReadTimeoutError]
    except ImportError:  # pragma: no cover - botocore comes with s3fs
        pass
    try:
        from aiohttp import ClientConnectionError, ClientPayloadError, ServerTimeoutError

        found += [ClientConnectionError, ClientPayloadError, ServerTimeoutError]
    except ImportError:  # pragma: no cover
        pass
    try:
        from fsspec.exceptions import FSTimeoutError

        found.append(FSTimeoutError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(found)


_TRANSIENT_TYPES: tuple[type[BaseException], ...] | None = None


def _one(e: BaseException) -> str | None:
    """The kind ``e`` alone decides, or None when it says nothing."""
    global _TRANSIENT_TYPES
    if isinstance(e, PipelineError):
        return vars(e).get("kind")  # only a kind given by the raiser decides; else its causes
    response = getattr(e, "response", None)  # botocore ClientError: structured code + status
    if isinstance(response, dict) and "Error" in response:
        code = str((response.get("Error") or {}).get("Code", ""))
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS:
            return TRANSIENT
        return PERMANENT
    if isinstance(e, _PERMANENT_TYPES):
        return PERMANENT
    if _TRANSIENT_TYPES is None:
        _TRANSIENT_TYPES = _transient_types()
    if isinstance(e, _TRANSIENT_TYPES):
        return TRANSIENT
    if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
        return TRANSIENT
    return None


def kind_of(exc: BaseException) -> str:
    """:data:`TRANSIENT` or :data:`PERMANENT` for any exception, from its type and causes.

    Decided by a kind the raiser gave, exception types, S3 error codes / HTTP status and
    errno values along the chain of causes (the first link that says anything wins), never
    by message text. Otherwise a pipeline error's class kind, else permanent: retrying a bug
    or a corrupt chunk only delays its report.
    """
    for e in _chain(exc):
        kind = _one(e)
        if kind is not None:
            return kind
    return exc.kind if isinstance(exc, PipelineError) else PERMANENT


def s3_error(exc: BaseException) -> tuple[str, int | None] | None:
    """(S3 error code, HTTP status) of the first botocore error along ``exc``'s causes."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict) and "Error" in response:
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            return str((response.get("Error") or {}).get("Code", "")), status
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether repeating the request that raised ``exc`` may succeed."""
    return kind_of(exc) == TRANSIENT

"""Retries of transient storage errors, and counts of them for the run manifest.

Two layers retry a failed storage request, and both are counted per process:

- ``storage``: botocore's own retries inside the S3 client, in its ``adaptive`` mode
  (exponential backoff with jitter plus client-side rate limiting after throttling;
  ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` override the mode and the 5 attempts, see
  :func:`s3_client_config`). They are counted from the ``RetryAttempts`` botocore reports
  in every response's metadata, through a botocore event hook (:func:`install`).
- ``io``: the pipeline's own retries of a whole window read, block write or finalize
  (``io_retries`` / ``io_backoff_s`` in the run config; :func:`retry_io`), with tenacity:
  only errors :func:`pipeline.errors.is_transient` calls transient are retried (a missing
  object, a corrupt chunk or a scene that changed fail at once), waits grow exponentially
  with full jitter, and tenacity's ``before_sleep`` hook does the counting.

Counters are per process and cumulative; :func:`take` returns what accumulated since the last
call, so results that each carry a :func:`take` add up to the process total without double
counting, even when several batches run concurrently in one Ray actor.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from pipeline.errors import is_transient

__all__ = [
    "S3_MAX_ATTEMPTS",
    "RetryCounts",
    "install",
    "note_io_retry",
    "note_storage_retries",
    "retry_io",
    "s3_client_config",
    "take",
]

T = TypeVar("T")

S3_MAX_ATTEMPTS = 5  # botocore's attempts per request (first try included), AWS's default
MAX_WAIT_FACTOR = 32  # a pipeline retry waits at most io_backoff_s * 32 (before jitter)

_lock = threading.Lock()
_counts = {"io": 0, "storage": 0}
_taken = {"io": 0, "storage": 0}
_installed = False

RetryCounts = dict[str, int]


def note_io_retry(_state: RetryCallState | None = None) -> None:
    """Count one pipeline-level retry (tenacity's ``before_sleep`` hook)."""
    with _lock:
        _counts["io"] += 1


def note_storage_retries(n: int) -> None:
    """Count ``n`` retries done inside the S3 client."""
    if n > 0:
        with _lock:
            _counts["storage"] += int(n)


def _after_call(parsed: Any = None, **_: Any) -> None:
    """botocore ``after-call`` hook: the response metadata says how often it was retried."""
    if isinstance(parsed, dict):
        meta = parsed.get("ResponseMetadata")
        if isinstance(meta, dict):
            note_storage_retries(int(meta.get("RetryAttempts") or 0))


def install() -> None:
    """Count S3-client retries in this process from now on (idempotent, cheap).

    Registers :func:`_after_call` among botocore's built-in handlers, which every botocore
    and aiobotocore session created afterwards (s3fs makes one per filesystem) attaches to
    its clients. Errors that exhausted their retries pass through ``after-call`` too.
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    from botocore import handlers

    handlers.BUILTIN_HANDLERS.append(("after-call.s3", _after_call))


def s3_client_config() -> dict[str, Any]:
    """botocore ``Config`` arguments for s3fs's ``config_kwargs``: adaptive retries.

    ``AWS_RETRY_MODE`` and ``AWS_MAX_ATTEMPTS``, when set, win (the user's own policy).
    """
    mode = os.environ.get("AWS_RETRY_MODE") or "adaptive"
    try:
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or S3_MAX_ATTEMPTS)
    except ValueError:
        attempts = S3_MAX_ATTEMPTS
    return {"retries": {"mode": mode, "total_max_attempts": max(1, attempts)}}


def take() -> RetryCounts:
    """Retries counted in this process since the previous :func:`take`."""
    with _lock:
        out = {k: _counts[k] - _taken[k] for k in _counts}
        _taken.update(_counts)
    return out


def retry_io(
    fn: Callable[[], T],
    retries: int,
    backoff_s: float,
    *,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Call ``fn``; retry it up to ``retries`` times while it raises a transient error.

    Waits are exponential from ``backoff_s`` (capped at ``backoff_s * MAX_WAIT_FACTOR``) plus
    a random jitter of up to ``backoff_s``, so workers that failed together do not retry in
    lockstep. Permanent errors and the last transient one propagate unchanged.
    """
    kw: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(max(0, int(retries)) + 1),
        wait=wait_exponential_jitter(
            multiplier=backoff_s, max=backoff_s * MAX_WAIT_FACTOR, jitter=backoff_s
        ),
        before_sleep=note_io_retry,
        reraise=True,
        **kw,
    )
    return retrying(fn)

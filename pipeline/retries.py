"""Retry counting: how often storage hiccups were absorbed, for the run manifest.

Two layers retry a failed storage request, and both are counted per process:

- ``io``: the pipeline's own retries of a whole window read, block write or finalize
  (``io_retries`` / ``io_backoff_s`` in the run config; :func:`retry_io`);
- ``storage``: retries inside the S3 client, below the pipeline: botocore's retry handler
  (``AWS_MAX_ATTEMPTS`` / ``AWS_RETRY_MODE``, 5 attempts by default) and s3fs's own retry
  loop (throttling, dropped connections). They are counted from those libraries' debug log
  records, the one place they report a retry; :func:`install` routes those records to a
  counter without letting them reach the user's log handlers at a level the user did not ask
  for.

Counters are per process and cumulative; :func:`take` returns what accumulated since the last
call, so results that each carry a :func:`take` add up to the process total without double
counting, even when several batches run concurrently in one Ray actor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["RetryCounts", "install", "note_io_retry", "retry_io", "take"]

T = TypeVar("T")

# Loggers whose debug records announce a retry, and how to recognise one.
_RETRY_LOGGERS = ("botocore.retryhandler", "botocore.retries.standard", "s3fs")
_THROTTLE_WORDS = ("SlowDown", "reduce your request rate")

_lock = threading.Lock()
_counts = {"io": 0, "storage": 0}
_taken = {"io": 0, "storage": 0}
_installed = False


RetryCounts = dict[str, int]


def _is_retry(record: logging.LogRecord) -> bool:
    msg = record.msg if isinstance(record.msg, str) else ""
    if record.name.startswith("botocore"):
        # "Retry needed, action of: 0.4" (legacy) / "... retrying request after delay" (standard);
        # "Retry needed but retry quota reached" is a give-up, not a retry.
        return msg.startswith("Retry needed") and "quota reached" not in msg
    if msg.startswith("Retryable error"):  # s3fs: timeouts, dropped connections
        return True
    if msg.startswith("Client error (maybe retryable)"):  # s3fs retries only throttling
        text = record.getMessage()
        return any(w in text for w in _THROTTLE_WORDS)
    return False


class _CountRetries(logging.Filter):
    """Logger filter: counts retry records, then lets through only what the user's level would.

    A filter on the logger itself runs before any handler and before propagation, so the
    DEBUG records it needs to see never reach a handler (not even ones that tools such as
    pytest attach to named loggers).
    """

    def __init__(self, user_level: int) -> None:
        super().__init__()
        self.user_level = user_level

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_retry(record):
            with _lock:
                _counts["storage"] += 1
        return record.levelno >= self.user_level


def install() -> None:
    """Start counting S3-client retries in this process (idempotent, cheap).

    The retry loggers are set to DEBUG so their retry records exist; a filter drops every
    record below the level the logger had before (WARNING unless configured), so nothing new
    reaches the user's handlers. Configure those loggers' levels before the first run.
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    for name in _RETRY_LOGGERS:
        logger = logging.getLogger(name)
        logger.addFilter(_CountRetries(logger.getEffectiveLevel()))
        logger.setLevel(logging.DEBUG)


def note_io_retry() -> None:
    with _lock:
        _counts["io"] += 1


def take() -> RetryCounts:
    """Retries counted in this process since the previous :func:`take`."""
    with _lock:
        out = {k: _counts[k] - _taken[k] for k in _counts}
        _taken.update(_counts)
    return out


def retry_io(fn: Callable[[], T], retries: int, backoff_s: float) -> T:
    """Call ``fn``; on OSError (storage hiccups) retry with exponential backoff, counted."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except OSError:
            if attempt == retries:
                raise
            note_io_retry()
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")

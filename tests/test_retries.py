"""Retries: only transient errors, with jitter, counted by hooks (not by log text).

Unit tests drive :func:`pipeline.retries.retry_io` with errors shaped like the ones s3fs,
botocore and zarr raise; the S3 test puts the fault-injecting proxy in front of the real
SeaweedFS server and checks botocore's adaptive mode retries throttling and that the
retries are counted from botocore's response metadata.
"""

from __future__ import annotations

import errno
import logging
import pickle

import pytest
from _faultproxy import FaultProxy, Forced
from botocore.exceptions import ClientError

from pipeline import retries
from pipeline.errors import (
    PERMANENT,
    TRANSIENT,
    OutputError,
    SceneReadError,
    StorageError,
    kind_of,
)


def _boto(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def _as_s3fs(err: ClientError) -> OSError:
    """What s3fs raises for a ClientError: an OSError whose __cause__ is the botocore error."""
    out = OSError(errno.EIO, "server said no")
    out.__cause__ = err
    return out


def _wrapped(cause: BaseException) -> SceneReadError:
    """A reader's error raised ``from None`` while handling ``cause`` (context kept)."""
    try:
        try:
            raise cause
        except BaseException:
            raise SceneReadError("s", "file:///x", "cannot read window") from None
    except SceneReadError as exc:
        return exc


TRANSIENT_CASES = {
    "slowdown": _as_s3fs(_boto("SlowDown", 503)),
    "internal": _as_s3fs(_boto("InternalError", 500)),
    "reset": ConnectionResetError(errno.ECONNRESET, "reset by peer"),
    "timeout": TimeoutError("read timed out"),
    "wrapped-reset": _wrapped(ConnectionResetError(errno.ECONNRESET, "reset")),
}
PERMANENT_CASES = {
    "missing": FileNotFoundError("no such key"),
    "denied": _as_s3fs(_boto("AccessDenied", 403)),
    "codec": _wrapped(RuntimeError("Zstd decompression error: invalid input data")),
    "changed": SceneReadError("s", "u", "window returned shape (3, 4, 4): the scene changed"),
    "bug": ValueError("bad"),
}


@pytest.mark.parametrize("name", sorted(TRANSIENT_CASES))
def test_transient_errors_are_retried_and_counted(name: str) -> None:
    exc = TRANSIENT_CASES[name]
    assert kind_of(exc) == TRANSIENT
    calls, sleeps = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise exc
        return "ok"

    retries.take()
    assert retries.retry_io(flaky, 3, 0.01, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2
    assert retries.take()["io"] == 2  # tenacity's before_sleep hook counted both


@pytest.mark.parametrize("name", sorted(PERMANENT_CASES))
def test_permanent_errors_fail_at_once(name: str) -> None:
    exc = PERMANENT_CASES[name]
    assert kind_of(exc) == PERMANENT
    calls, sleeps = [], []

    def broken() -> None:
        calls.append(1)
        raise exc

    retries.take()
    with pytest.raises(type(exc)):
        retries.retry_io(broken, 3, 0.01, sleep=sleeps.append)
    assert len(calls) == 1 and sleeps == [] and retries.take()["io"] == 0


def test_retries_give_up_after_the_budget_with_jittered_waits() -> None:
    waits: list[list[float]] = []
    for _ in range(3):
        sleeps: list[float] = []
        with pytest.raises(ConnectionResetError):
            retries.retry_io(lambda: (_ for _ in ()).throw(ConnectionResetError()), 4, 0.1,
                             sleep=sleeps.append)
        assert len(sleeps) == 4
        # exponential from 0.1 s plus up to 0.1 s of jitter per wait
        for k, s in enumerate(sleeps):
            assert 0.1 * 2**k <= s <= 0.1 * 2**k + 0.1 + 1e-9, sleeps
        waits.append(sleeps)
    assert waits[0] != waits[1] or waits[1] != waits[2], "waits carry no jitter"


def test_error_kinds_survive_pickling_between_workers() -> None:
    for exc in (_wrapped(ConnectionResetError()), OutputError("x", kind=TRANSIENT),
                StorageError("y")):
        again = pickle.loads(pickle.dumps(exc))
        assert kind_of(again) == kind_of(exc) and str(again) == str(exc)
    assert kind_of(pickle.loads(pickle.dumps(_wrapped(RuntimeError("zstd"))))) == PERMANENT


def test_no_retry_counting_hangs_on_log_records() -> None:
    retries.install()
    for name in ("botocore.retryhandler", "botocore.retries.standard", "s3fs"):
        logger = logging.getLogger(name)
        assert not logger.filters, f"{name}: retries must not be counted from log records"


@pytest.mark.s3
def test_s3_throttling_is_retried_by_botocore_adaptive_mode_and_counted(
        s3_server, s3_bucket) -> None:
    from pipeline.storage import S3Options, get_fs, storage_options_from

    s3_server.filesystem().pipe(f"{s3_bucket.removeprefix('s3://')}/obj", b"payload")
    forced = (Forced("slowdown", "GET", "/obj"), Forced("internal", "GET", "/obj"))
    with FaultProxy(s3_server.endpoint_url, rate=0.0, forced=forced) as proxy:
        so = storage_options_from(S3Options(endpoint_url=proxy.url, key=s3_server.key,
                                            secret=s3_server.secret))
        assert so["config_kwargs"]["retries"]["mode"] == "adaptive"
        fs = get_fs(s3_bucket, {**so, "skip_instance_cache": True})
        retries.take()
        assert fs.cat_file(f"{s3_bucket.removeprefix('s3://')}/obj") == b"payload"
        counted = retries.take()
        stats = dict(proxy.stats)
    assert stats[("GET", "slowdown")] == 1 and stats[("GET", "internal")] == 1
    assert counted["storage"] == 2 and counted["io"] == 0

"""Ray lifecycle: joining a cluster within a deadline, and a private Ray bound to its driver.

- :func:`connect` joins an existing cluster (``--address``). A ``HOST:PORT`` (or
  ``ray://HOST:PORT``) is first probed with a plain TCP connection, so "nothing listens there"
  is an error naming the address at once; then ``ray.init`` runs under
  :func:`pipeline.lifecycle.deadline`: Ray's client retries an unanswering address forever
  inside C++ code that no Python handler can interrupt, so when ``connect_timeout_s``
  (default :data:`DEFAULT_CONNECT_TIMEOUT_S`) expires the process reports the address,
  releases the output lock and exits with code 2.
- :func:`start_private` starts the private local Ray and a watchdog (:mod:`pipeline.execute.reaper`,
  a separate tiny process) that kills every process of that Ray as soon as the driver dies,
  even by SIGKILL: Ray's agents (``DashboardAgent``, ``RuntimeEnvAgent``) otherwise outlive a
  killed driver for minutes. A clean shutdown tells the watchdog to stand down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import RayConnectError, RunInterrupted
from pipeline.lifecycle import deadline, reinstall

__all__ = ["DEFAULT_CONNECT_TIMEOUT_S", "PrivateRay", "connect", "probe", "start_private"]

DEFAULT_CONNECT_TIMEOUT_S = 30.0


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT`` / ``ray://HOST:PORT``; None for ``auto`` and the like."""
    text = address.strip()
    parts = urlsplit(text if "://" in text else f"gcs://{text}")
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None or port is None:
        return None
    return parts.hostname, port


def probe(address: str, timeout_s: float) -> None:
    """RayConnectError unless a TCP connection to ``address`` opens within ``timeout_s``."""
    target = _host_port(address)
    if target is None:
        return  # "auto" & co: Ray resolves them; the deadline still bounds the wait
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise RayConnectError(
            f"--address {address!r}: nothing answers at {host}:{port} ({why} after at most "
            f"{timeout_s:g} s); start the cluster there (`ray start --head "
            "--node-ip-address=127.0.0.1`), fix the address, or omit --address for a private "
            "local Ray"
        ) from None


def connect(address: str, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S, **init: Any) -> None:
    """``ray.init(address=address, **init)``, refused or ended within ``timeout_s``."""
    probe(address, timeout_s)
    import ray

    message = (
        f"--address {address!r}: no Ray cluster answered within {timeout_s:g} s "
        "(connect_timeout_s); check that a Ray head runs there and that this machine can "
        "reach it, or raise connect_timeout_s"
    )
    try:
        with deadline(timeout_s, message), _ray_sigterm_is_ours():
            ray.init(address=address, **init)
    except ConnectionError as exc:
        raise RayConnectError(
            f"--address {address!r}: no Ray cluster answers there ({exc}); start one with "
            "`ray start --head --node-ip-address=127.0.0.1` or omit --address for a local Ray"
        ) from None
    finally:
        reinstall()  # ray.init replaced our SIGTERM handler with its own


@contextlib.contextmanager
def _ray_sigterm_is_ours() -> Iterator[None]:
    """``ray.init`` installs a SIGTERM handler calling ``sys.exit(15)`` as it begins; a signal
    during the call then surfaces as SystemExit: make it our :class:`RunInterrupted`."""
    try:
        yield
    except SystemExit as exc:
        if exc.code == signal.SIGTERM:
            raise RunInterrupted(signal.SIGTERM) from None
        raise


def _children() -> dict[int, float]:
    """pid -> start time of this process's descendants (psutil)."""
    import psutil

    out = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            out[child.pid] = child.create_time()
    return out


class PrivateRay:
    """A started private Ray: its node processes and the watchdog bound to this driver."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.watchdog: subprocess.Popen[bytes] | None = None
        if roots:
            self.watchdog = subprocess.Popen(
                [sys.executable, "-m", "pipeline.execute.reaper", str(os.getpid()),
                 ",".join(map(str, roots))],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,  # a signal to the driver's group must not end it
                close_fds=True,
            )

    def stop(self) -> None:
        """``ray.shutdown()``, then tell the watchdog to stand down."""
        import ray

        try:
            ray.shutdown()
        finally:
            if self.watchdog is not None and self.watchdog.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    self.watchdog.stdin.write(b"stop\n")  # type: ignore[union-attr]
                    self.watchdog.stdin.close()  # type: ignore[union-attr]
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.watchdog.wait(timeout=30)


def start_private(**init: Any) -> PrivateRay:
    """``ray.init(address="local", **init)`` plus the watchdog over the processes it started."""
    import ray

    before = _children()
    try:
        with _ray_sigterm_is_ours():
            ray.init(address="local", **init)
    except BaseException:  # a signal or an error while starting: stop what was started
        with contextlib.suppress(Exception):
            ray.shutdown()
        from pipeline.execute.reaper import reap

        reap({pid: t for pid, t in _children().items() if before.get(pid) != t})
        raise
    finally:
        reinstall()
    started = sorted(pid for pid, t in _children().items() if before.get(pid) != t)
    return PrivateRay(started)

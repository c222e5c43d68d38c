"""Connecting to Ray: a private local Ray on loopback, or an existing cluster."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from pipeline.execute.raylife import DEFAULT_CONNECT_TIMEOUT_S, connect, start_private
from pipeline.parsing import check_num_cpus

__all__ = ["ray_session"]

# Ray's "no multi-node cluster" switch: node address 127.0.0.1, every port bound to loopback.
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> Iterator[bool]:
    """Connect to Ray for the duration of the block; yields True if this call started it.

    ``address=None`` starts a private local Ray on 127.0.0.1 (no dashboard) and stops it at
    the end, unless ``RAY_ADDRESS`` is set (as inside ``ray job submit``): then that cluster is
    joined. "auto", "HOST:PORT" or "ray://HOST:PORT" connect to an existing cluster (left
    running) within ``connect_timeout_s`` (:func:`pipeline.execute.raylife.connect`). The
    private Ray never outlives this process (:func:`pipeline.execute.raylife.start_private`).
    An already-initialised Ray is reused as is.
    """
    check_num_cpus(num_cpus)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None and "ray" not in sys.modules:
        # Ray resolves a 127.0.0.1 node address to the host's reachable IP, then binds GCS,
        # raylet and the dashboard head's metrics endpoint on every interface. Its
        # single-machine switch (meant for macOS/Windows, read when ray is imported) keeps a
        # private local Ray on loopback; a process that imported ray already keeps the default.
        os.environ.setdefault(_LOCAL_ONLY_ENV, "0")
    import ray

    if ray.is_initialized():
        yield False
        return
    private = None
    if address is None:
        private = start_private(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        connect(address, connect_timeout_s, log_to_driver=False, configure_logging=False)
    try:
        yield True
    finally:
        if private is not None:
            private.stop()
        else:
            ray.shutdown()

"""Test-only: a fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 server.

Clients point their S3 endpoint at :attr:`FaultProxy.url`; every request is forwarded to the
upstream server byte for byte (the ``Host`` header included, so SigV4 signatures still
verify), except a seeded random share that gets one of these faults instead:

- ``slowdown``: ``503 SlowDown`` (S3's throttling answer), request not forwarded;
- ``internal``: ``500 InternalError``, request not forwarded;
- ``reset``: the TCP connection is reset (RST); for a PUT, half of the resets happen *after*
  the upstream stored the object (the answer is lost, the write landed), as on a real network;
- ``slow``: the request is forwarded after a delay of ``slow_s`` seconds.

``forced`` faults come first, in order, on the first matching requests, so a test can count
on every kind happening at least once whatever the random draw. :meth:`vanish` makes a bucket
answer ``404 NoSuchBucket`` to everything (as after a delete) until :meth:`restore`.

Bounded and self-stopping: at most ``max_connections`` connections are served at once
(others wait in the listen backlog), idle keep-alive connections close after
``idle_timeout_s``, and the server shuts itself down after ``lifetime_s`` even if a test
forgets to stop it. Everything runs in daemon threads of the test process.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["KINDS", "FaultProxy", "Forced"]

KINDS = ("slowdown", "internal", "reset", "slow")
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


@dataclass(frozen=True)
class Forced:
    """Inject ``kind`` on the next request with ``method`` whose path contains ``contains``."""

    kind: str
    method: str
    contains: str = ""


def _error_xml(code: str, message: str, resource: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>faultproxy</RequestId></Error>"
    ).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.slots = threading.BoundedSemaphore(proxy.max_connections)
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.slots.acquire()  # bounded: a new connection waits for a free slot
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.proxy.idle_timeout_s)
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._upstream is not None:
                self._upstream.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the stats say what happened

    # every S3 verb goes through the same path
    def do_GET(self) -> None:
        self._proxy()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # Keep the chunked framing: forwarded as is, with the header that announces it.
            raw = bytearray()
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers until the blank line
                        trailer = self.rfile.readline()
                        raw += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response_only(status)
        for name, value in headers:
            if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
                self.send_header(name, value)
        if self.command == "HEAD":
            length = dict((k.lower(), v) for k, v in headers).get("content-length", "0")
            self.send_header("Content-Length", length)
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._reply(status, _error_xml(code, message, self.path),
                    [("Content-Type", "application/xml")])

    def _reset(self) -> None:
        # SO_LINGER 0: close() sends RST instead of FIN, the client sees "connection reset".
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _forward(self, body: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
        proxy = self.server.proxy
        for attempt in (0, 1):  # a stale keep-alive upstream connection gets one reconnect
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
            try:
                self._upstream.putrequest(self.command, self.path, skip_host=True,
                                          skip_accept_encoding=True)
                for name, value in self.headers.items():
                    # Expect: 100-continue was answered here already (and is never signed).
                    if name.lower() not in ("connection", "keep-alive", "proxy-connection",
                                            "expect"):
                        self._upstream.putheader(name, value)
                self._upstream.endheaders(body if body else None)
                resp = self._upstream.getresponse()
                data = resp.read()
                return resp.status, data, resp.getheaders()
            except (ConnectionError, http.client.HTTPException):
                self._upstream.close()
                self._upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _proxy(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        bucket = _bucket_of(self.path, self.headers.get("Host", ""))
        if bucket is not None and bucket in proxy.vanished:
            proxy.count(self.command, "vanished")
            self._error(404, "NoSuchBucket", "The specified bucket does not exist")
            return
        kind = proxy.draw(self.command, self.path)
        if kind == "slowdown":
            self._error(503, "SlowDown", "Please reduce your request rate.")
            return
        if kind == "internal":
            self._error(500, "InternalError", "We encountered an internal error. Please try again.")
            return
        if kind == "reset" and (self.command != "PUT" or proxy.coin()):
            self._reset()
            return
        if kind == "slow":
            time.sleep(proxy.slow_delay())
        status, data, headers = self._forward(body)
        if kind == "reset":  # a PUT that landed upstream; its answer is lost
            self._reset()
            return
        self._reply(status, data, headers)


def _bucket_of(path: str, host: str) -> str | None:
    """Bucket of a path-style (``/bucket/key``) or virtual-host (``bucket.host``) request."""
    host = host.split(":", 1)[0]
    if host and not host[0].isdigit() and host != "localhost" and "." in host:
        return host.split(".", 1)[0]
    first = urlsplit(path).path.lstrip("/").split("/", 1)[0]
    return first or None


class FaultProxy:
    """See module docstring. Use as a context manager, or call :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.05,
        kinds: tuple[str, ...] = KINDS,
        methods: tuple[str, ...] = ("GET", "PUT"),
        forced: tuple[Forced, ...] = (),
        slow_s: tuple[float, float] = (0.2, 0.6),
        seed: int = 0,
        max_connections: int = 64,
        idle_timeout_s: float = 5.0,
        lifetime_s: float = 600.0,
    ) -> None:
        unknown = set(kinds) - set(KINDS) | {f.kind for f in forced} - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; use {KINDS}")
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.rate, self.kinds, self.methods = rate, kinds, methods
        self.slow_s = slow_s
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.lifetime_s = lifetime_s
        self.vanished: set[str] = set()
        self.stats: Counter[tuple[str, str]] = Counter()  # (method, kind or "ok") -> n
        self._forced = list(forced)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # --- fault decisions (thread-safe) ----------------------------------------------------
    def draw(self, method: str, path: str) -> str | None:
        with self._lock:
            for i, f in enumerate(self._forced):
                if f.method == method and f.contains in path:
                    del self._forced[i]
                    self.stats[(method, f.kind)] += 1
                    return f.kind
            kind = None
            if self.kinds and method in self.methods and self._rng.random() < self.rate:
                kind = self._rng.choice(self.kinds)
            self.stats[(method, kind or "ok")] += 1
            return kind

    def coin(self) -> bool:
        with self._lock:
            return self._rng.random() < 0.5

    def slow_delay(self) -> float:
        with self._lock:
            return self._rng.uniform(*self.slow_s)

    def count(self, method: str, kind: str) -> None:
        with self._lock:
            self.stats[(method, kind)] += 1

    def faults(self, kind: str | None = None, method: str | None = None) -> int:
        """Injected faults so far (of one kind / method, or all)."""
        with self._lock:
            return sum(n for (m, k), n in self.stats.items() if k not in ("ok", "vanished")
                       and (kind is None or k == kind) and (method is None or m == method))

    def requests(self, method: str | None = None) -> int:
        with self._lock:
            return sum(n for (m, _), n in self.stats.items() if method is None or m == method)

    # --- bucket outage ---------------------------------------------------------------------
    def vanish(self, bucket: str) -> None:
        """Every request to ``bucket`` answers 404 NoSuchBucket from now on."""
        with self._lock:
            self.vanished.add(bucket)

    def restore(self, bucket: str) -> None:
        with self._lock:
            self.vanished.discard(bucket)

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultProxy.url before start()")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="faultproxy", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)  # stops itself
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

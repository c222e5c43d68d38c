"""Run lock of an output store: one writer per output at a time.

``<output>/_hgn/lock.json`` holds the holder (host, pid, run id), the start time and a
heartbeat refreshed by a daemon thread. A second run is refused with a message naming the
holder. A lock whose holder is dead (same host and its pid gone, or no heartbeat for the
lock's TTL) is taken over; an exclusively created takeover marker per stale lock lets
exactly one taker win. Heartbeat ages compare the holder's and the reader's wall clocks, so
the TTL (minutes) must exceed any clock skew between machines.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import LockLostError, RunLockedError
from pipeline.lifecycle import register_emergency, unregister_emergency
from pipeline.state.hgnstore import HgnStore, age_s, now_utc

__all__ = ["LockInfo", "LockLostError", "RunLock", "RunLockedError"]

log = logging.getLogger(__name__)


def _proc_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    current = _proc_start(pid)
    return start is None or current is None or current == start


@dataclass(frozen=True)
class LockInfo:
    """Contents of ``_hgn/lock.json``."""

    host: str
    pid: int
    run_id: str
    nonce: str
    started: str
    heartbeat: str
    ttl_s: float
    pid_start: str | None = None

    def describe(self) -> str:
        return (
            f"run {self.run_id!r} (host {self.host}, pid {self.pid}), started {self.started}, "
            f"last heartbeat {age_s(self.heartbeat):.0f} s ago"
        )

    def stale_reason(self) -> str | None:
        """Why this lock's holder is dead, or None while it may be alive."""
        if self.host == socket.gethostname() and not _pid_alive(self.pid, self.pid_start):
            return f"pid {self.pid} no longer runs on {self.host}"
        age = age_s(self.heartbeat)
        if age > self.ttl_s:
            return f"no heartbeat for {age:.0f} s (TTL {self.ttl_s:.0f} s)"
        return None


class RunLock:
    """One writer per output: ``_hgn/lock.json`` with holder, start time and a heartbeat.

    ``with RunLock(url, run_id):`` acquires (or raises :class:`RunLockedError` naming the
    holder), beats every ``heartbeat_s`` in a daemon thread, and releases on exit. A lock
    whose holder is dead (same host and its pid gone, or no heartbeat for ``ttl_s``) is
    taken over; a takeover marker created exclusively per stale lock lets one taker win.
    """

    REL = "lock.json"
    TAKEOVER = "lock-takeover"

    def __init__(
        self,
        output_url: str,
        run_id: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        ttl_s: float = 300.0,
        heartbeat_s: float = 30.0,
    ) -> None:
        if not 0 < heartbeat_s < ttl_s:
            raise ValueError(f"heartbeat_s={heartbeat_s!r} must be > 0 and < ttl_s={ttl_s!r}")
        self._store = HgnStore(output_url, storage_options)
        self.run_id = run_id
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s
        self.info: LockInfo | None = None
        self.lost: str | None = None
        self.took_over: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._emergency: int | None = None

    @property
    def url(self) -> str:
        return self._store.url(self.REL)

    def holder(self) -> LockInfo | None:
        """The current lock record (anyone's), or None when the output is unlocked."""
        d = self._store.read_json(self.REL)
        try:
            return LockInfo(**d) if d else None
        except TypeError:
            return None

    def _fresh(self) -> LockInfo:
        now = now_utc()
        return LockInfo(
            host=socket.gethostname(), pid=os.getpid(), run_id=self.run_id,
            nonce=uuid.uuid4().hex, started=now, heartbeat=now, ttl_s=self.ttl_s,
            pid_start=_proc_start(os.getpid()),
        )

    def _encode(self, info: LockInfo) -> bytes:
        return json.dumps(asdict(info), indent=1).encode()

    def acquire(self) -> RunLock:
        mine = self._fresh()
        if not self._store.create(self.REL, self._encode(mine)):
            held = self.holder()
            if held is None:
                raise RunLockedError(
                    f"output {self._store.output_url} has an unreadable lock {self.url}; if no "
                    "run is writing this output, delete that file and retry"
                )
            reason = held.stale_reason()
            if reason is None:
                raise RunLockedError(
                    f"output {self._store.output_url} is locked by {held.describe()}. Wait for "
                    f"it to finish; if it is dead, its lock is taken over after "
                    f"{held.ttl_s:.0f} s without heartbeat (or delete {self.url})."
                )
            # Exactly one taker per stale lock: the one that creates its takeover marker.
            if not self._store.create(f"{self.TAKEOVER}/{held.nonce}", self._encode(mine)):
                raise RunLockedError(
                    f"output {self._store.output_url}: another run is taking over the stale "
                    f"lock of {held.describe()}; retry later"
                )
            again = self.holder()
            if again is None or again.nonce != held.nonce:  # changed since we read it
                raise RunLockedError(
                    f"output {self._store.output_url}: the lock changed hands while taking "
                    "it over; retry later"
                )
            self._store.delete([self.REL])
            if not self._store.create(self.REL, self._encode(mine)):
                raise RunLockedError(
                    f"output {self._store.output_url}: lost the race for the lock after "
                    f"{held.describe()} died; retry later"
                )
            self.took_over = f"{held.describe()}: {reason}"
            log.warning("took over the lock of %s", self.took_over)
        # Read back: a server that ignored If-None-Match would show the other taker here.
        back = self.holder()
        if back is None or back.nonce != mine.nonce:
            raise RunLockedError(
                f"output {self._store.output_url}: lock written concurrently by "
                f"{back.describe() if back else 'another run'}; retry later"
            )
        self.info = mine
        self._thread = threading.Thread(target=self._beat, name="hgn-lock-heartbeat", daemon=True)
        self._thread.start()
        # A process ended by a signal or a deadline it cannot unwind from still frees the lock.
        self._emergency = register_emergency(self.release_now)
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                held = self.holder()
                if held is None or held.nonce != self.info.nonce:
                    who = held.describe() if held else "nobody (deleted)"
                    self.lost = f"lock of {self._store.output_url} is now held by {who}"
                    log.error("%s; this run must stop writing", self.lost)
                    return
                self.info = LockInfo(**{**asdict(self.info), "heartbeat": now_utc()})
                self._store.write(self.REL, self._encode(self.info))
            except Exception as exc:  # storage hiccup: try again next beat, TTL has slack
                log.warning("lock heartbeat failed: %s: %s", type(exc).__name__, exc)

    def check(self) -> None:
        """Raise :class:`LockLostError` if the lock was taken over (call between writes)."""
        if self.lost:
            raise LockLostError(self.lost + "; stop and rerun to resume from the ledger")

    def release_now(self) -> None:
        """Delete the lock if it is still ours, without waiting for the heartbeat (any thread)."""
        self._stop.set()
        info = self.info
        if info is not None and not self.lost:
            held = self.holder()
            if held is not None and held.nonce == info.nonce:
                self._store.delete([self.REL])

    def release(self) -> None:
        if self._emergency is not None:
            unregister_emergency(self._emergency)
            self._emergency = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 10)
        if self.info is not None and not self.lost:
            held = self.holder()
            if held is not None and held.nonce == self.info.nonce:
                self._store.delete([self.REL])
        # Takeover markers only matter while their stale lock exists; that lock is gone.
        self._store.delete(f"{self.TAKEOVER}/{n}" for n in self._store.list(self.TAKEOVER))
        self.info = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

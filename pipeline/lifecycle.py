"""Process lifecycle of a run: SIGTERM/SIGINT at any stage, and deadlines on blocking calls.

What is guaranteed (``hgn-pipeline run`` / ``nightly`` enter :func:`handle_signals`):

- SIGTERM or SIGINT raise :class:`~pipeline.errors.RunInterrupted` in the main thread, so
  every ``with`` block unwinds as for an error: the output's run lock is released, the
  ledger keeps what finished, the private Ray is stopped. Exit code ``128 + signal``.
- When the main thread is stuck inside a C call that never returns to Python (a Ray client
  connecting to an address that never answers), the interpreter cannot run that handler.
  A watcher thread learns of the signal through :func:`signal.set_wakeup_fd` (written by the
  C-level handler, whatever the main thread does); if the handler has not run
  :data:`HANDLER_WAIT_S` later it runs the registered emergency cleanups (release the lock)
  and ends the process. A second signal, or an unwinding that takes longer than
  :data:`UNWIND_GRACE_S`, ends it the same way.
- :func:`deadline` bounds such a call: when it expires, the message is printed, the same
  emergency cleanups run and the process exits with code 2.

Emergency cleanups (:func:`on_emergency`) must be quick and safe from any thread: delete the
lock file if it is still ours, nothing else.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator

from pipeline.errors import RunInterrupted

__all__ = [
    "HANDLER_WAIT_S",
    "UNWIND_GRACE_S",
    "deadline",
    "emergency_exit",
    "handle_signals",
    "interrupted",
    "on_emergency",
    "register_emergency",
    "reinstall",
    "unregister_emergency",
]

HANDLER_WAIT_S = 2.0  # a main thread that runs Python handles a signal within milliseconds
UNWIND_GRACE_S = 60.0  # unwinding (lock release, ledger flush, Ray shutdown) takes seconds
_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_cleanups: dict[int, Callable[[], None]] = {}
_cleanups_lock = threading.Lock()
_ids = itertools.count()
_exiting = threading.Lock()
_active = 0  # depth of handle_signals() blocks in the main thread


def register_emergency(cleanup: Callable[[], None]) -> int:
    """Run ``cleanup`` if the process must end without unwinding; returns a key to withdraw."""
    key = next(_ids)
    with _cleanups_lock:
        _cleanups[key] = cleanup
    return key


def unregister_emergency(key: int) -> None:
    with _cleanups_lock:
        _cleanups.pop(key, None)


@contextlib.contextmanager
def on_emergency(cleanup: Callable[[], None]) -> Iterator[None]:
    """:func:`register_emergency` for the duration of a block."""
    key = register_emergency(cleanup)
    try:
        yield
    finally:
        unregister_emergency(key)


def emergency_exit(message: str, code: int) -> None:
    """Print ``message``, run every emergency cleanup, end the process now (any thread)."""
    if not _exiting.acquire(blocking=False):
        return  # another thread is already ending the process
    with contextlib.suppress(Exception):
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
    with _cleanups_lock:
        cleanups = list(_cleanups.values())
    for cleanup in reversed(cleanups):
        with contextlib.suppress(Exception):  # best effort: the process ends either way
            cleanup()
    os._exit(code)


@contextlib.contextmanager
def deadline(seconds: float, message: str) -> Iterator[None]:
    """Bound a blocking call: after ``seconds``, :func:`emergency_exit` (code 2) with message.

    For calls that cannot be interrupted from Python (they never return to the interpreter);
    the block ends normally when the call returns in time.
    """
    timer = threading.Timer(seconds, emergency_exit, args=(message, 2))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


_handled = threading.Event()  # the main thread's handler ran (it is unwinding)


def _raise(signum: int, _frame: object) -> None:
    if _handled.is_set():  # a second signal while unwinding: the user insists
        emergency_exit(f"{signal.Signals(signum).name} again: stopped without waiting for the "
                       "cleanup; the run lock was released", 128 + signum)
    _handled.set()
    raise RunInterrupted(signum)


def _forced(signum: int) -> None:
    name = signal.Signals(signum).name
    emergency_exit(f"{name} received while blocked in a call that cannot be interrupted; the run "
                   "lock was released; rerun the same command to resume", 128 + signum)


def _watch(reader: socket.socket, stop: threading.Event) -> None:
    """Wake on any signal byte; force the exit when the main thread cannot act on it."""
    while not stop.is_set():
        try:
            data = reader.recv(16)
        except (BlockingIOError, InterruptedError, TimeoutError):
            continue
        except OSError:
            return
        if not data or stop.is_set():
            return
        signum = data[-1]
        if signum not in _SIGNALS:
            continue
        if not _handled.wait(HANDLER_WAIT_S):
            _forced(signum)
        elif not stop.wait(UNWIND_GRACE_S):
            emergency_exit(f"cleanup after {signal.Signals(signum).name} took over "
                           f"{UNWIND_GRACE_S:.0f} s; stopped", 128 + signum)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """SIGTERM/SIGINT -> :class:`RunInterrupted` in the main thread, with a forced fallback.

    Only in the main thread (signal handlers live there); elsewhere a no-op. Previous handlers
    and wakeup fd are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    reader.settimeout(1.0)
    writer.setblocking(False)
    global _active
    _handled.clear()
    previous = {s: signal.signal(s, _raise) for s in _SIGNALS}
    _active += 1
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(reader, stop), name="hgn-signals",
                               daemon=True)
    watcher.start()
    try:
        yield
    finally:
        _active -= 1
        stop.set()
        signal.set_wakeup_fd(old_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        watcher.join(timeout=2)
        reader.close()
        writer.close()


def interrupted(exc: RunInterrupted) -> str:
    """The one line a CLI prints after :class:`RunInterrupted` unwound the run."""
    name = signal.Signals(exc.signum).name
    return (f"interrupted by {name}: the run lock was released and finished chunks are in the "
            "ledger; rerun the same command to resume")


def reinstall() -> None:
    """Put our handlers back after a library replaced them (``ray.init`` sets its own)."""
    if _active and threading.current_thread() is threading.main_thread():
        for s in _SIGNALS:
            signal.signal(s, _raise)

"""Watchdog of a private Ray: ``python -m pipeline.execute.reaper DRIVER_PID ROOT_PID,ROOT_PID...``.

Started by :func:`pipeline.execute.raylife.start_private` in its own session, with a pipe on stdin
whose other end only the driver holds. Every :data:`POLL_S` it records the root processes
(the Ray node processes the driver started) and all their descendants (agents, workers),
with start times so a reused pid is never touched. When the driver ends without saying
``stop`` (its pipe closes, or its pid is gone), every recorded process still alive gets
SIGTERM, and SIGKILL :data:`KILL_AFTER_S` later. Imports only the standard library and psutil.
"""

from __future__ import annotations

import contextlib
import select
import sys

import psutil

POLL_S = 0.5  # how often the process tree is recorded (new workers appear all the time)
KILL_AFTER_S = 3.0  # SIGTERM first, so Ray's processes may flush their logs


def _tree(roots: dict[int, float]) -> dict[int, float]:
    """pid -> start time of each live root (same start time) and all its descendants."""
    out: dict[int, float] = {}
    for pid, started in roots.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() != started:
                continue
            out[pid] = started
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    out[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return out


def _alive(pid: int, started: float) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
        if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except psutil.Error:
        pass
    return None


def reap(known: dict[int, float]) -> None:
    """SIGTERM, then SIGKILL, every process of ``known`` (and its new children) still alive."""
    known = {**known, **_tree(known)}
    procs = [p for pid, t in known.items() if (p := _alive(pid, t)) is not None]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, left = psutil.wait_procs(procs, timeout=KILL_AFTER_S)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=KILL_AFTER_S)


def main(argv: list[str]) -> int:
    driver_pid = int(argv[1])
    try:
        driver_start = psutil.Process(driver_pid).create_time()
    except psutil.Error:
        driver_start = None
    roots: dict[int, float] = {}
    for pid in (int(p) for p in argv[2].split(",") if p):
        with contextlib.suppress(psutil.Error):
            roots[pid] = psutil.Process(pid).create_time()
    known = _tree(roots)
    stdin = sys.stdin.buffer
    while True:
        ready, _, _ = select.select([stdin], [], [], POLL_S)
        if ready:
            data = stdin.read1(64) if hasattr(stdin, "read1") else stdin.read(64)
            if b"stop" in data:
                return 0  # clean shutdown: ray.shutdown() already stopped everything
            if not data:
                break  # the driver's end closed without "stop": it died
        if driver_start is None or _alive(driver_pid, driver_start) is None:
            break
        known.update(_tree(roots))
    reap(known)
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a separate process
    sys.exit(main(sys.argv))

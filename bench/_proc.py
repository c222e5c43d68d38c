"""Process memory from /proc (Linux), shared by the benchmark scripts."""

from __future__ import annotations

import os
import threading

SAMPLE_S = 0.2  # PeakRss sampling period: short enough to catch a window's peak, cheap


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory field of /proc/<pid>/status in KiB (0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    """Every live descendant PID of ``root`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class PeakRss:
    """Peak of (driver + Ray worker processes) RSS, sampled in a background thread."""

    def __init__(self, ray_workers: bool) -> None:
        self.ray_workers = ray_workers
        self.peak_kib = 0
        self.per_pid_kib: dict[int, int] = {}
        self._stop = threading.Event()
        self._raylet = None
        if ray_workers:
            import ray

            node = ray._private.worker._global_node
            self._raylet = node.all_processes["raylet"][0].process.pid
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def pids(self) -> list[int]:
        return [os.getpid()] + (descendants(self._raylet) if self._raylet else [])

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = {p: rss_kib(p) for p in self.pids()}
            self.peak_kib = max(self.peak_kib, sum(rss.values()))
            for p, v in rss.items():
                self.per_pid_kib[p] = max(self.per_pid_kib.get(p, 0), v)
            self._stop.wait(SAMPLE_S)

    def breakdown_mib(self, roles: dict[int, str]) -> dict[str, float]:
        """Peak MiB per role ("driver", "actor", others: "worker"), summed over processes."""
        out: dict[str, float] = {}
        for p, v in self.per_pid_kib.items():
            role = "driver" if p == os.getpid() else roles.get(p, "worker")
            out[role] = round(out.get(role, 0.0) + v / 1024, 1)
        return out

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return round(self.peak_kib / 1024, 1)

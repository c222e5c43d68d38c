"""In-process executor: one model in the driver, batches overlapped like in an actor.

The reference the Ray pool is tested against (same :class:`WindowProcessor`, same batches,
same torch thread count -> bit-identical outputs), and the executor of ``run --local``.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from pipeline.execute.overlap import OverlappedProcessor
from pipeline.execute.protocol import (
    ActorStats,
    Batch,
    BatchResult,
    FinalizeResult,
    ModelInfo,
    PoolEvent,
    PoolStatus,
    Predictor,
    SceneJob,
    SegmenterLoader,
    WorkerInfo,
)
from pipeline.execute.worker import WindowProcessor, torch_threads

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Runs every batch in this process.

    Args:
        loader: ``loader(device, threads) -> Predictor``; e.g. :class:`SegmenterLoader`.
        device: passed to the loader ("auto" picks CUDA when present).
        threads: torch threads (None: torch's default, all cores). Ray actors use
            ``threads_per_actor``; the same number here gives the same bytes.
        io_retries, io_backoff_s: storage retry policy.
        overlap: read ahead / write behind on side threads (see ``overlap``).
        max_in_flight: batches submitted ahead of the one being returned.
    """

    def __init__(
        self,
        loader: Callable[..., Predictor] | str,
        *,
        device: str = "auto",
        threads: int | None = None,
        io_retries: int = 3,
        io_backoff_s: float = 0.5,
        overlap: bool = True,
        max_in_flight: int = 2,
    ) -> None:
        self.loader = SegmenterLoader(loader) if isinstance(loader, str) else loader
        self.device = device
        self.threads = threads
        self.io_retries = io_retries
        self.io_backoff_s = io_backoff_s
        self.overlap = overlap
        self.max_in_flight = max(1, max_in_flight)
        self.listener: Callable[[PoolEvent], None] | None = None
        self._proc: WindowProcessor | None = None
        self.workers: list[WorkerInfo] = []
        self._stats: ActorStats | None = None
        self._t_run = 0.0

    @classmethod
    def from_config(cls, cfg: Any, loader: Callable[..., Predictor] | None = None) -> LocalExecutor:
        """From a :class:`~pipeline.config.RunConfig`: the actors' thread count and retries."""
        return cls(
            loader if loader is not None else SegmenterLoader(cfg.checkpoint),
            threads=cfg.threads_per_actor,
            io_retries=cfg.io_retries,
            io_backoff_s=cfg.io_backoff_s,
            overlap=cfg.overlap_io,
            max_in_flight=cfg.max_in_flight_per_actor,
        )

    @property
    def model(self) -> ModelInfo:
        return self.processor.info

    @property
    def processor(self) -> WindowProcessor:
        if self._proc is None:
            raise RuntimeError("LocalExecutor used before start(); use it as a context manager")
        return self._proc

    def start(self) -> list[WorkerInfo]:
        if self._proc is None:
            model = self.loader(self.device, self.threads)
            self._proc = WindowProcessor(
                model, io_retries=self.io_retries, io_backoff_s=self.io_backoff_s
            )
            info = WorkerInfo(
                os.getpid(),
                "local",
                (),
                os.environ.get("CUDA_VISIBLE_DEVICES"),
                self._proc.info,
                threads=torch_threads(),
            )
            self.workers = [info]
        return self.workers

    def map(self, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        proc = self.processor
        w = self.workers[0]
        self._stats = ActorStats("local", "local", [], w.pid, "live", _now())
        self._t_run = time.perf_counter()
        if not self.overlap:
            for batch in batches:
                yield self._count(proc.process(batch))
            return
        runner = OverlappedProcessor(proc)
        pending: deque[Future[BatchResult]] = deque()
        try:
            for batch in batches:
                pending.append(runner.submit(batch))
                if len(pending) >= self.max_in_flight:
                    yield self._count(pending.popleft().result())
            while pending:
                yield self._count(pending.popleft().result())
        finally:
            runner.close()

    def _count(self, res: BatchResult) -> BatchResult:
        s = self._stats
        assert s is not None
        s.units += len(res.done)
        s.batches += 1
        s.busy_s += res.infer_s
        s.alive_s = time.perf_counter() - self._t_run
        return res

    def finalize(self, job: SceneJob, extra_attrs: dict[str, Any]) -> Future[FinalizeResult]:
        fut: Future[FinalizeResult] = Future()
        fut.set_result(self.processor.finalize(job, extra_attrs))
        return fut

    def pool_status(self) -> PoolStatus:
        return PoolStatus(live=1 if self._proc is not None else 0)

    def actor_stats(self) -> list[ActorStats]:
        if self._stats is None:
            return []
        s = self._stats
        s.alive_s = time.perf_counter() - self._t_run
        return [dataclasses.replace(s, stopped=s.stopped or _now())]

    def peak_rss_bytes(self) -> int:
        """Peak RSS of this process (Linux reports ru_maxrss in KiB)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def close(self) -> None:
        if self._stats is not None and self._stats.state == "live":
            self._stats.state, self._stats.stopped = "stopped", _now()
        self._proc = None

    def __enter__(self) -> LocalExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")

"""In-process executor: one model in the driver, batches run one after another.

The reference the Ray pool is tested against (same :class:`WindowProcessor`, same plan ->
bit-identical labels), and the executor for small jobs and tests without a cluster.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from pipeline.execute._core import (
    Batch,
    BatchResult,
    FinalizeResult,
    ModelInfo,
    Predictor,
    SceneJob,
    SegmenterLoader,
    WindowProcessor,
    WorkerInfo,
)

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Runs every batch in this process, in order.

    Args:
        loader: ``loader(device, threads) -> Predictor``; e.g. :class:`SegmenterLoader`.
        device: passed to the loader ("auto" picks CUDA when present).
        threads: torch threads (None: torch's default, all cores).
        io_retries, io_backoff_s: storage retry policy.
    """

    def __init__(
        self,
        loader: Callable[..., Predictor] | str,
        *,
        device: str = "auto",
        threads: int | None = None,
        io_retries: int = 3,
        io_backoff_s: float = 0.5,
    ) -> None:
        self.loader = SegmenterLoader(loader) if isinstance(loader, str) else loader
        self.device = device
        self.threads = threads
        self.io_retries = io_retries
        self.io_backoff_s = io_backoff_s
        self._proc: WindowProcessor | None = None
        self.workers: list[WorkerInfo] = []

    @property
    def model(self) -> ModelInfo:
        if self._proc is None:
            raise RuntimeError(
                "LocalExecutor.model read before start(); use it as a context manager"
            )
        return self._proc.info

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
                os.getpid(), "local", (), os.environ.get("CUDA_VISIBLE_DEVICES"), self._proc.info
            )
            self.workers = [info]
        return self.workers

    def map(self, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        proc = self.processor
        for batch in batches:
            yield proc.process(batch)

    def finalize(self, job: SceneJob, extra_attrs: dict[str, Any]) -> Future[FinalizeResult]:
        fut: Future[FinalizeResult] = Future()
        fut.set_result(self.processor.finalize(job, extra_attrs))
        return fut

    def peak_rss_bytes(self) -> int:
        """Peak RSS of this process (Linux reports ru_maxrss in KiB)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def close(self) -> None:
        self._proc = None

    def __enter__(self) -> LocalExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Keep the model busy: read ahead and write behind on side threads, with bounded queues.

Three threads per model, one per stage of :class:`~pipeline.execute.worker.WindowProcessor`::

    submit() -> [in] -> reader -> [loaded, PREFETCH] -> model -> [inferred, WRITE_BEHIND] -> writer

While the model runs batch *n*, the reader reads batch *n + 1* and the writer writes batch
*n - 1*. Bounded queues keep backpressure: a reader ahead by ``prefetch`` batches waits, and a
writer behind by ``write_behind`` batches stalls the model, so memory stays at a few batches.
A batch's future resolves only after its cores are written, so a result never names a unit
that is not on storage. The model sees exactly the batches it would see in a row: outputs are
bit-identical to :meth:`WindowProcessor.process`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from pipeline.execute.protocol import Batch, BatchResult
from pipeline.execute.worker import InferredBatch, LoadedBatch, WindowProcessor, torch_threads

__all__ = ["PREFETCH", "WRITE_BEHIND", "OverlappedProcessor"]

PREFETCH = 1  # batches read ahead of the model: 1 hides a read shorter than a forward pass
WRITE_BEHIND = 1  # batches waiting for the writer: more only helps if writes are burstier
_STOP = None  # queue sentinel


class OverlappedProcessor:
    """Runs batches through ``proc`` with the stages overlapped (see module docstring).

    ``after_batch`` runs on the writer thread after each batch (e.g. return freed memory to
    the OS). Thread-safe ``submit``; ``close`` stops the threads once queued work is done.
    """

    def __init__(
        self,
        proc: WindowProcessor,
        *,
        prefetch: int = PREFETCH,
        write_behind: int = WRITE_BEHIND,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        self.proc = proc
        self.after_batch = after_batch
        self._in: queue.Queue[tuple[Batch, Future[BatchResult]] | None] = queue.Queue()
        self._loaded: queue.Queue[tuple[LoadedBatch, Future[BatchResult]] | None] = queue.Queue(
            maxsize=prefetch
        )
        self._inferred: queue.Queue[tuple[InferredBatch, Future[BatchResult]] | None] = queue.Queue(
            maxsize=write_behind
        )
        self._threads_of_model = torch_threads()  # where the model was made
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def _start(self) -> None:
        with self._lock:
            if self._threads or self._closed:
                return
            for name, target in (
                ("hgn-read", self._read_loop),
                ("hgn-model", self._model_loop),
                ("hgn-write", self._write_loop),
            ):
                t = threading.Thread(target=target, name=name, daemon=True)
                t.start()
                self._threads.append(t)

    def submit(self, batch: Batch) -> Future[BatchResult]:
        """Queue ``batch``; the future resolves once its cores are written (or it failed)."""
        if self._closed:
            raise RuntimeError("OverlappedProcessor.submit() after close()")
        self._start()
        fut: Future[BatchResult] = Future()
        self._in.put((batch, fut))
        return fut

    def close(self) -> None:
        """Finish what was submitted, then stop the three threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._threads:
            self._in.put(_STOP)
            for t in self._threads:
                t.join()

    # --- the three stages ----------------------------------------------------------------
    def _read_loop(self) -> None:
        while (item := self._in.get()) is not _STOP:
            batch, fut = item
            self._loaded.put((_guard(fut, self.proc.load, batch), fut))
        self._loaded.put(_STOP)

    def _model_loop(self) -> None:
        if self._threads_of_model is not None:  # the model's thread count, in this thread too
            import torch

            torch.set_num_threads(self._threads_of_model)
        while (item := self._loaded.get()) is not _STOP:
            loaded, fut = item
            if loaded is None:  # the read stage itself broke (already reported)
                continue
            self._inferred.put((_guard(fut, self.proc.infer, loaded), fut))
        self._inferred.put(_STOP)

    def _write_loop(self) -> None:
        while (item := self._inferred.get()) is not _STOP:
            inferred, fut = item
            if inferred is None:
                continue
            result = _guard(fut, self.proc.store, inferred)
            if result is not None:
                fut.set_result(result)
            if self.after_batch is not None:
                self.after_batch()


def _guard(fut: Future[BatchResult], stage: Callable[[Any], Any], arg: Any) -> Any:
    """Run one stage; a bug that escapes it fails that batch's future, not the thread."""
    try:
        return stage(arg)
    except BaseException as exc:  # the stages return their errors; this is a safety net
        fut.set_exception(exc)
        return None

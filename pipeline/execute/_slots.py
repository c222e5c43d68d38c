"""Bookkeeping of an elastic pool: a :class:`Slot` per actor, the work queue, finalize retries."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.execute.protocol import ActorStats, Batch, FinalizeResult, SceneJob, WorkerInfo

__all__ = ["FINALIZE_ATTEMPTS", "RetryingFinalize", "Slot", "WorkQueue", "now_iso"]

FINALIZE_ATTEMPTS = 3  # a finalize whose actor died is sent to another live actor


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Slot:
    """One actor of the pool, from creation to loss or close, and what it did in this run."""

    serial: int  # pool-local number, for messages ("actor 3")
    handle: Any
    ready_ref: Any | None  # the outstanding ready() call while the actor starts
    state: str = "pending"  # pending -> live -> lost | stopped
    info: WorkerInfo | None = None
    inflight: dict[Any, Batch] = field(default_factory=dict)  # ObjectRef -> batch
    started: float | None = None  # monotonic, became ready (or the run started, if later)
    started_iso: str | None = None
    stopped: float | None = None
    stopped_iso: str | None = None
    units: int = 0
    batches: int = 0
    busy_s: float = 0.0
    joined: bool = False
    reason: str | None = None

    @property
    def name(self) -> str:
        return f"actor {self.serial}"

    @property
    def node(self) -> str:
        return self.info.node if self.info is not None else "?"

    def became_live(self, info: WorkerInfo, joined: bool) -> None:
        self.state, self.info, self.ready_ref, self.joined = "live", info, None, joined
        self.started, self.started_iso = time.monotonic(), now_iso()

    def end(self, state: str, reason: str | None = None) -> None:
        self.state, self.reason = state, reason
        self.stopped, self.stopped_iso = time.monotonic(), now_iso()

    def new_run(self) -> None:
        """Counters start again for the next run of a reused pool (the actor lives on)."""
        self.units = self.batches = 0
        self.busy_s = 0.0
        self.joined = False
        self.started, self.started_iso = time.monotonic(), now_iso()

    def stats(self) -> ActorStats:
        assert self.info is not None
        end = self.stopped if self.stopped is not None else time.monotonic()
        return ActorStats(
            actor_id=self.info.actor_id,
            node_id=self.info.node,
            gpu_ids=list(self.info.gpu_ids),
            pid=self.info.pid,
            state=self.state,
            started=self.started_iso,
            stopped=self.stopped_iso or now_iso(),  # still live: the end of the run so far
            units=self.units,
            batches=self.batches,
            busy_s=self.busy_s,
            alive_s=max(0.0, end - (self.started or end)),
            joined=self.joined,
            reason=self.reason,
        )


class WorkQueue:
    """Batches to hand out: lost ones first (to run again at once), then the lazy source.

    Pulls the source one batch ahead, so it knows as soon as nothing is left (then the pool
    withdraws its demand for actors).
    """

    def __init__(self, source: Iterable[Batch]) -> None:
        self._source: Iterator[Batch] | None = iter(source)
        self._again: deque[Batch] = deque()
        self._ahead: deque[Batch] = deque()

    def requeue(self, batches: list[Batch]) -> None:
        self._again.extendleft(reversed(batches))

    def has_more(self) -> bool:
        if self._again or self._ahead:
            return True
        if self._source is not None:
            nxt = next(self._source, None)
            if nxt is None:
                self._source = None
            else:
                self._ahead.append(nxt)
        return bool(self._ahead)

    def pop(self) -> Batch | None:
        if self._again:
            return self._again.popleft()
        if self.has_more():
            return self._ahead.popleft()
        return None


class RetryingFinalize:
    """Finalize a scene on a live actor, round robin; if that actor dies, on another one.

    Finalizing is idempotent (it reads level 0 and rewrites the pyramid and metadata).
    """

    def __init__(self, live: Callable[[], list[Slot]]) -> None:
        self.live = live
        self._next = 0

    def __call__(self, job: SceneJob, extra: dict[str, Any]) -> Future[FinalizeResult]:
        out: Future[FinalizeResult] = Future()
        self._on(job, extra, out, tried=frozenset())
        return out

    def _on(
        self,
        job: SceneJob,
        extra: dict[str, Any],
        out: Future[FinalizeResult],
        tried: frozenset[int],
    ) -> None:
        from ray.exceptions import RayActorError

        live = [s for s in self.live() if s.serial not in tried]
        if not live or len(tried) >= FINALIZE_ATTEMPTS:
            out.set_result(FinalizeResult(job.scene_id, 0.0, "no model actor alive to finalize"))
            return
        slot = live[self._next % len(live)]
        self._next += 1

        def done(f: Future[FinalizeResult]) -> None:
            try:
                out.set_result(f.result())
            except RayActorError:  # that actor died: another one does it
                self._on(job, extra, out, tried | {slot.serial})
            except Exception as e:
                out.set_result(
                    FinalizeResult(job.scene_id, 0.0, f"finalize failed: {type(e).__name__}: {e}")
                )

        slot.handle.finalize.remote(job, extra).future().add_done_callback(done)

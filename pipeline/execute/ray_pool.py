"""An elastic pool of Ray actors, one model each, fed by a bounded ``ray.wait`` loop.

- **Shape.** With GPUs each actor requests ``num_gpus=1`` (Ray pins it through
  ``CUDA_VISIBLE_DEVICES``; the model lands on ``cuda:0`` of what it sees); without, CPU
  actors request ``threads_per_actor`` CPUs (:mod:`~pipeline.execute.capacity`).
- **Growth and demand.** The pool keeps ``max_actors`` actors requested (default: as many as
  the nodes hold, re-read every :data:`POLL_S`). Actors the cluster cannot place yet stay
  *pending*, and pending actors are how the pool asks an autoscaler for nodes: Ray reports
  them as resource demand, each one starts the moment a node with room joins (no polling
  race), and killing them withdraws exactly that demand. ``ray.autoscaler.sdk.
  request_resources`` was the alternative; it sets a standing floor that outlives the run
  unless cleared, keeps nodes from scaling down, and still needs actors created to use them.
- **Draining.** Once no batch is left to hand out, pending actors are killed: no demand stays
  behind, so the autoscaler gives the nodes back.
- **Loss.** Actors are created with ``max_restarts=0``: a restart on a lost node would wait
  for capacity that may never return, with the batches queued on it. Instead, when an actor
  dies, every batch it held goes back to the front of the queue and runs on live actors at
  once; replacement actors are requested and join when capacity returns. Writes are
  idempotent (one writer per chunk, same bytes), so a batch run twice is harmless. Only when
  no actor is alive for ``no_actor_timeout_s`` does the run stop (:class:`PoolLostError`).
- **Backpressure.** At most ``max_in_flight_per_actor`` batches per live actor; the batch
  stream is pulled lazily, so driver memory and the object store stay flat for any plan size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Literal

from pipeline.errors import PipelineError, PoolLostError
from pipeline.execute._pool_messages import (
    failed_result,
    loss_reason,
    lost_message,
    no_start_error,
    short,
)
from pipeline.execute._slots import RetryingFinalize, Slot, WorkQueue
from pipeline.execute.actor import ACTOR_ENV, ModelActor
from pipeline.execute.capacity import PoolSpec, alive_nodes, pool_spec
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

__all__ = ["POLL_S", "RayExecutor"]

log = logging.getLogger(__name__)

# How often the pool re-reads the cluster's nodes while it waits: a node that joins gets its
# actor within about this long (pending actors start at once anyway); each poll is ~1 ms of GCS.
POLL_S = 1.0
# Once one actor is ready, start() waits this long (or as long as the first took) for the
# others the nodes hold, so a fixed cluster starts whole; later ones join the running pool.
START_GRACE_S = 10.0
# Actor threads beyond the in-flight batches: a scene's finalize and a ready()/stats call are
# never queued behind a full pipeline of batches.
_SPARE_SLOTS = 2
# RayExecutor argument -> RunConfig field.
_CONFIG_FIELDS = {
    "max_actors": "max_actors", "threads": "threads_per_actor", "use_gpu": "use_gpu",
    "cpus_per_gpu_actor": "cpus_per_gpu_actor", "read_path": "read_path",
    "max_in_flight_per_actor": "max_in_flight_per_actor", "overlap": "overlap_io",
    "actor_max_restarts": "actor_max_restarts", "task_max_retries": "task_max_retries",
    "io_retries": "io_retries", "io_backoff_s": "io_backoff_s",
    "start_timeout_s": "actor_start_timeout_s", "no_actor_timeout_s": "no_actor_timeout_s",
}  # fmt: skip


class RayExecutor:
    """Executor over an elastic pool of model actors on the connected Ray cluster.

    Build with :meth:`from_config` or explicitly; ``loader(device, threads)`` must be
    picklable (the default loads ``Segmenter.from_checkpoint(checkpoint)``).
    """

    def __init__(
        self,
        loader: Callable[..., Predictor] | str,
        *,
        max_actors: int | None = None,
        threads: int = 1,
        use_gpu: Literal["auto"] | bool = "auto",
        cpus_per_gpu_actor: float = 1.0,
        reserve_cpus: float = 0.0,
        max_in_flight_per_actor: int = 2,
        read_path: str = "actor",
        overlap: bool = True,
        actor_max_restarts: int = 2,
        task_max_retries: int = 2,
        io_retries: int = 3,
        io_backoff_s: float = 0.5,
        start_timeout_s: float = 300.0,
        no_actor_timeout_s: float = 600.0,
    ) -> None:
        self.loader = SegmenterLoader(loader) if isinstance(loader, str) else loader
        self.max_actors, self.threads, self.use_gpu = max_actors, threads, use_gpu
        self.cpus_per_gpu_actor, self.reserve_cpus = cpus_per_gpu_actor, reserve_cpus
        self.max_in_flight = max_in_flight_per_actor
        self.read_path, self.overlap = read_path, overlap
        self.actor_max_restarts, self.task_max_retries = actor_max_restarts, task_max_retries
        self.io_retries, self.io_backoff_s = io_retries, io_backoff_s
        self.start_timeout_s, self.no_actor_timeout_s = start_timeout_s, no_actor_timeout_s
        self.listener: Callable[[PoolEvent], None] | None = None
        self.spec: PoolSpec | None = None
        self._actor_cls: Any = None
        self._slots: list[Slot] = []
        self._serial = 0
        self._model: ModelInfo | None = None
        self._nodes: list[dict[str, float]] = []
        self._target = 0
        self._polled = 0.0
        self._reset_run()
        self._finalizer = RetryingFinalize(self._live)

    @classmethod
    def from_config(cls, cfg: Any, loader: Callable[..., Predictor] | None = None) -> RayExecutor:
        """From a :class:`~pipeline.config.RunConfig`."""
        return cls(
            loader if loader is not None else SegmenterLoader(cfg.checkpoint),
            reserve_cpus=cfg.effective_reserve_cpus,
            **{arg: getattr(cfg, name) for arg, name in _CONFIG_FIELDS.items()},
        )

    # --- views ---------------------------------------------------------------------------
    @property
    def model(self) -> ModelInfo:
        if self._model is None:
            raise RuntimeError("RayExecutor.model read before start(); use it as a context manager")
        return self._model

    @property
    def workers(self) -> list[WorkerInfo]:
        """The live actors' :class:`WorkerInfo` (where each model runs)."""
        return [s.info for s in self._live() if s.info is not None]

    def _live(self) -> list[Slot]:
        return [s for s in self._slots if s.state == "live"]

    def _pending(self) -> list[Slot]:
        return [s for s in self._slots if s.state == "pending"]

    def pool_status(self) -> PoolStatus:
        run = self._run_slots()
        return PoolStatus(
            live=len(self._live()),
            pending=len(self._pending()),
            joined=sum(s.joined for s in run),
            lost=sum(s.state == "lost" for s in run),
            units_redone=self._units_redone,
        )

    def actor_stats(self) -> list[ActorStats]:
        return [s.stats() for s in self._run_slots()]

    def redone_batches(self) -> set[str]:
        """Keys (:attr:`Batch.key`) of the batches sent again in this run after a loss."""
        return set(self._losses)

    def _run_slots(self) -> list[Slot]:
        return [s for s in self._slots if s.info is not None]

    # --- start -----------------------------------------------------------------------------
    def start(self) -> list[WorkerInfo]:
        """Request the pool and wait until every actor the nodes hold now has its model.

        At least one actor must start within ``start_timeout_s``; actors beyond what the nodes
        hold stay pending (autoscaler demand) and join the pool when they start.
        """
        import ray

        if self._live() or self._pending():
            return self.workers
        if not ray.is_initialized():
            raise PipelineError(
                "RayExecutor needs a connected Ray: call ray.init() or use "
                "pipeline.execute.ray_session() first"
            )
        self._nodes = alive_nodes()
        spec = pool_spec(
            self._nodes,
            max_actors=self.max_actors,
            threads=self.threads,
            use_gpu=self.use_gpu,
            cpus_per_gpu_actor=self.cpus_per_gpu_actor,
            reserve_cpus=self.reserve_cpus,
            read_path=self.read_path,
        )
        self.spec = spec
        self._actor_cls = ray.remote(ModelActor).options(
            num_cpus=spec.num_cpus,
            num_gpus=spec.num_gpus,
            max_concurrency=self.max_in_flight + _SPARE_SLOTS,
            max_restarts=0,  # the pool replaces lost actors itself (module docstring)
            max_task_retries=0,
            runtime_env={"env_vars": {k: os.environ.get(k, v) for k, v in ACTOR_ENV.items()}},
        )
        self._target, self._polled = spec.target(self._nodes), time.monotonic()
        self._create(self._target)
        wait_for = max(1, min(self._target, spec.fit(self._nodes)))
        t0 = time.monotonic()
        deadline, first = t0 + self.start_timeout_s, None
        while len(self._live()) < wait_for and time.monotonic() < deadline:
            if self._init_error or not self._pending():
                break
            if self._live() and first is None:  # the rest get a grace period, then join later
                first = time.monotonic()
                deadline = min(deadline, first + max(START_GRACE_S, first - t0))
            for _ in self._wait(WorkQueue(()), min(POLL_S, deadline - time.monotonic())):
                pass  # only actors starting: no batch results here
            self._replace_start_failures()
        if not self._live():
            error = self._no_start_error()
            self.close()
            raise error
        return self.workers

    def _create(self, n: int) -> None:
        for _ in range(n):
            self._serial += 1
            handle = self._actor_cls.remote(
                self.loader,
                self.spec.threads,
                self.io_retries,
                self.io_backoff_s,
                self.read_path,
                self.overlap,
            )
            self._slots.append(Slot(self._serial, handle, handle.ready.remote()))

    def _may_create(self) -> bool:
        budget = self.actor_max_restarts * max(1, self._target)
        return self._init_error is None and self._start_failures <= budget

    def _no_start_error(self) -> PipelineError:
        return no_start_error(self.spec, self.use_gpu, self.start_timeout_s, self._target,
                              self._init_error, self._start_failures, self._last_loss)

    def _replace_start_failures(self) -> None:
        missing = self._target - len(self._live()) - len(self._pending())
        if missing > 0 and self._may_create() and self._start_failures:
            self._create(missing)

    # --- the loop --------------------------------------------------------------------------
    def _reset_run(self) -> None:
        self._losses: dict[str, int] = {}
        self._where: dict[Any, Slot] = {}
        self._units_redone = 0
        self._start_failures = 0
        self._init_error: str | None = None
        self._last_loss: str | None = None
        self._no_actor_since: float | None = None
        self._running = False

    def _begin_run(self) -> None:
        self._slots = [s for s in self._slots if s.state in ("live", "pending")]
        self._reset_run()
        for s in self._live():
            s.new_run()
        self._running = True

    def map(self, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        """Hand batches to live actors (at most ``max_in_flight_per_actor`` each); yield results.

        Grows, shrinks and heals the pool while it runs (module docstring).
        """
        if not (self._live() or self._pending()):
            raise RuntimeError("RayExecutor.map() before start(); use it as a context manager")
        self._begin_run()
        work = WorkQueue(batches)
        try:
            while True:
                yield from self._maintain(work)
                self._dispatch(work)
                if not self._where and not work.has_more():
                    return
                yield from self._wait(work, timeout=POLL_S)
        finally:
            self._running = False
            for s in self._pending():  # nothing left to hand out: withdraw the demand
                self._drop(s)

    def _maintain(self, work: WorkQueue) -> list[BatchResult]:
        """Follow the nodes: add or withdraw actors; stop when none has been alive too long.

        Returns the results of batches that failed because their actor was lost once too often.
        """
        now = time.monotonic()
        failed: list[BatchResult] = []
        if now - self._polled >= POLL_S:
            failed = self._poll(work)
        live, pending = self._live(), self._pending()
        wanted = self._target if work.has_more() else 0
        for s in pending[max(0, wanted - len(live)) :]:
            self._drop(s)
        missing = wanted - len(live) - len(self._pending())
        if missing > 0 and self._may_create():
            self._create(missing)
        if live or not work.has_more():
            self._no_actor_since = None
            return failed
        if not self._pending():
            raise self._no_start_error()
        self._no_actor_since = self._no_actor_since or now
        if now - self._no_actor_since > self.no_actor_timeout_s:
            lost = sum(sl.state == "lost" for sl in self._run_slots())
            raise PoolLostError(lost_message(self.spec, self.no_actor_timeout_s, lost,
                                             self._last_loss, len(self._pending()), self._nodes))
        return failed

    def _poll(self, work: WorkQueue) -> list[BatchResult]:
        """Re-read the nodes: the target follows them, and actors of dead nodes are lost now
        (an idle actor would otherwise look live until its next batch fails)."""
        import ray

        nodes = ray.nodes()
        self._nodes = [dict(n["Resources"]) for n in nodes if n.get("Alive")]
        alive = {n["NodeID"] for n in nodes if n.get("Alive")}
        self._target, self._polled = self.spec.target(self._nodes), time.monotonic()
        failed: list[BatchResult] = []
        for s in self._live():
            if s.node not in alive:
                failed += self._lose(s, None, "its node died", work)
        return failed

    def _dispatch(self, work: WorkQueue) -> None:
        while True:
            free = [s for s in self._live() if len(s.inflight) < self.max_in_flight]
            if not free:
                return
            slot = min(free, key=lambda s: len(s.inflight))
            batch = work.pop()
            if batch is None:
                return
            ref = slot.handle.process.remote(batch)
            slot.inflight[ref] = batch
            self._where[ref] = slot

    def _wait(self, work: WorkQueue, timeout: float) -> Iterator[BatchResult]:
        import ray

        starting = {s.ready_ref: s for s in self._pending()}
        refs = [*self._where, *starting]
        if not refs:
            time.sleep(max(timeout, 0.0))
            return
        ready, _ = ray.wait(refs, num_returns=1, timeout=max(timeout, 0.0))
        if ready:  # take everything that is done, not one result per loop
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            if ref in starting:
                self._on_ready(starting[ref])
            elif ref in self._where:
                yield from self._on_result(ref, work)

    def _on_ready(self, slot: Slot) -> None:
        import ray
        from ray.exceptions import RayActorError

        try:
            info = ray.get(slot.ready_ref)
        except RayActorError as e:
            slot.end("lost", short(e))
            self._slots.remove(slot)
            self._last_loss = short(e)
            if e.actor_init_failed:  # the model cannot load here: a new actor would not either
                self._init_error = short(e)
            else:
                self._start_failures += 1
            log.warning("%s died while starting: %s", slot.name, short(e))
            return
        slot.became_live(info, joined=self._running)
        if self._model is None:
            self._model = info.model
        if self._running:
            gpus = f" (GPU {', '.join(info.gpu_ids)})" if info.gpu_ids else ""
            self._emit("joined", slot, f"{slot.name} joined on node {info.node[:12]}{gpus}")

    def _on_result(self, ref: Any, work: WorkQueue) -> Iterator[BatchResult]:
        import ray
        from ray.exceptions import RayActorError

        slot = self._where.pop(ref)
        batch = slot.inflight.pop(ref)
        try:
            res: BatchResult = ray.get(ref)
        except RayActorError as e:
            yield from self._lose(slot, batch, loss_reason(slot, e), work)
            return
        except Exception as e:  # the call itself raised: a bug, reported on the scene
            res = failed_result(batch, f"batch failed on {slot.name}: {short(e)}")
        slot.units += len(res.done)
        slot.batches += 1
        slot.busy_s += res.infer_s
        yield dataclasses.replace(res, actor=slot.info.actor_id if slot.info else "")

    def _lose(
        self, slot: Slot, batch: Batch | None, reason: str, work: WorkQueue
    ) -> list[BatchResult]:
        """``slot`` died: its batches go back to the front of the queue (or fail, if cursed)."""
        batches = ([batch] if batch is not None else []) + list(slot.inflight.values())
        for ref in slot.inflight:
            self._where.pop(ref, None)
        slot.inflight.clear()
        slot.end("lost", reason)
        self._last_loss = f"{slot.name} on node {slot.node[:12]}: {reason}"
        with contextlib.suppress(Exception):
            import ray

            ray.kill(slot.handle, no_restart=True)
        again, failed = [], []
        for b in batches:
            n = self._losses[b.key] = self._losses.get(b.key, 0) + 1
            if n > self.task_max_retries:
                failed.append(
                    failed_result(
                        b,
                        f"batch {b.key} ({len(b.units)} units) was lost with {n} model actors "
                        f"(last: {reason}): it may be what kills them (out of memory?); lower "
                        "batch_size, chunk or unit_chunks, or raise task_max_retries",
                    )
                )
            else:
                again.append(b)
        work.requeue(again)
        units = sum(len(b.units) for b in again)
        self._units_redone += units
        self._emit(
            "lost",
            slot,
            f"{slot.name} on node {slot.node[:12]} lost ({reason}); {len(again)} batch(es), "
            f"{units} unit(s) back in the queue; {len(self._live())} actor(s) live",
        )
        return failed

    def _drop(self, slot: Slot) -> None:
        """Kill an actor that never started (its demand is withdrawn)."""
        import ray

        with contextlib.suppress(Exception):
            ray.kill(slot.handle, no_restart=True)
        if slot in self._slots:
            self._slots.remove(slot)

    def _emit(self, kind: str, slot: Slot, message: str) -> None:
        # The run's listener shows it to the user; without one, a loss is worth a warning.
        level = logging.INFO if kind == "joined" or self.listener else logging.WARNING
        log.log(level, message)
        if self.listener is not None:
            actor_id = slot.info.actor_id if slot.info else ""
            self.listener(PoolEvent(kind, actor_id, message))

    # --- finalize, stats, close -------------------------------------------------------------
    def finalize(self, job: SceneJob, extra_attrs: dict[str, Any]) -> Future[FinalizeResult]:
        """Run the scene's pyramid/metadata step on a live actor (another if that one dies)."""
        return self._finalizer(job, extra_attrs)

    def peak_rss_bytes(self) -> dict[int, int]:
        """Peak RSS per live actor process (pid -> bytes)."""
        import ray

        live = [(s.info.pid, s.handle) for s in self._live() if s.info is not None]
        values = ray.get([h.peak_rss_bytes.remote() for _, h in live])
        return {pid: v for (pid, _), v in zip(live, values, strict=True)}

    def close(self) -> None:
        import ray

        for s in self._slots:
            with contextlib.suppress(Exception):
                ray.kill(s.handle, no_restart=True)
            if s.state == "live":
                s.end("stopped")
        self._slots = [s for s in self._slots if s.info is not None]
        self._where = {}

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

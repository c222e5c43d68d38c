"""A pool of Ray actors, each holding one model, fed by a bounded ``ray.wait`` loop.

- One model per actor, loaded once. With GPUs in the cluster each actor requests
  ``num_gpus=1`` (Ray pins it via ``CUDA_VISIBLE_DEVICES``, the model lands on ``cuda:0`` of
  what it sees); without, CPU actors request ``threads_per_actor`` CPUs and run that many torch
  threads.
- Only references travel: a batch is a :class:`SceneJob` + unit boxes; the actor reads its
  windows, infers, and writes the cores itself, returning counts and timings.
- Backpressure: at most ``max_in_flight_per_actor`` batches per actor are submitted; the batch
  stream is pulled lazily, so driver memory and the object store stay flat for any plan size.
- Actors are threaded (``max_concurrency``): while one call holds the model, the next one
  reads its windows, so decode overlaps compute.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import resource
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.errors import ConfigError, PipelineError
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
from pipeline.parsing import check_num_cpus
from pipeline.raylife import DEFAULT_CONNECT_TIMEOUT_S, connect, start_private

__all__ = ["PoolSpec", "RayExecutor", "pool_spec", "ray_session"]

# Extra actor thread beyond the in-flight batches, so a scene's finalize call is not queued
# behind a full pipeline of batches.
_FINALIZE_SLOTS = 1
# glibc gives every thread of a threaded actor its own malloc arena; the model's large,
# short-lived tensors then fragment them and actor RSS creeps up with the number of windows.
# Two arenas: measured -25 % peak actor RSS (HGN, 1280^2 windows) and no growth from 1x to 4x.
_ACTOR_ENV = {"MALLOC_ARENA_MAX": "2"}
# Ray's "no multi-node cluster" switch: node address 127.0.0.1, every port bound to loopback.
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class PoolSpec:
    """How many model actors, and what each requests from Ray."""

    num_actors: int
    num_cpus: float
    num_gpus: float
    threads: int

    @property
    def uses_gpu(self) -> bool:
        return self.num_gpus > 0


def pool_spec(
    resources: dict[str, float],
    *,
    num_actors: int | None = None,
    threads: int = 1,
    use_gpu: Literal["auto"] | bool = "auto",
    cpus_per_gpu_actor: float = 1.0,
    reserve_cpus: float = 0.0,
    read_path: str = "actor",
) -> PoolSpec:
    """Size the pool from the cluster's resources (``ray.cluster_resources()``) and config.

    GPU actors: one per GPU unless ``num_actors`` says otherwise. CPU actors:
    ``(CPUs - reserve_cpus) // threads`` (at least 1). With ``read_path="dask"`` reads run as
    Ray tasks, which need a CPU the actors do not hold, or dask-on-ray waits forever.
    """
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if use_gpu is True and gpus < 1:
        raise ConfigError(
            f"use_gpu: true but the cluster advertises {gpus:g} GPUs: start Ray with GPUs "
            "or set use_gpu: auto to fall back to CPU actors"
        )
    if use_gpu is not False and gpus >= 1:
        n = num_actors or int(gpus)
        spec = PoolSpec(n, cpus_per_gpu_actor, 1.0, threads)
    else:
        n = num_actors or max(1, int((cpus - reserve_cpus) // threads))
        spec = PoolSpec(n, float(threads), 0.0, threads)
    if read_path == "dask" and cpus - spec.num_actors * spec.num_cpus < 1:
        raise ConfigError(
            f"read_path: dask runs window reads as Ray tasks needing a free CPU, but "
            f"{spec.num_actors} actors x {spec.num_cpus:g} CPUs hold all {cpus:g} cluster CPUs "
            "(dask-on-ray would hang): set reserve_cpus: 1, or lower num_actors / "
            "threads_per_actor"
        )
    return spec


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> Iterator[bool]:
    """Connect to Ray for the duration of the block; yields True if this call started it.

    ``address=None`` starts a private local Ray on 127.0.0.1 (no dashboard) and stops it at
    the end, unless ``RAY_ADDRESS`` is set (as inside ``ray job submit``): then that cluster is
    joined. "auto", "HOST:PORT" or "ray://HOST:PORT" connect to an existing cluster (left
    running) within ``connect_timeout_s`` (:func:`pipeline.raylife.connect`). The private Ray
    never outlives this process (:func:`pipeline.raylife.start_private`). An
    already-initialised Ray is reused as is.
    """
    check_num_cpus(num_cpus)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None and "ray" not in sys.modules:
        # Ray resolves a 127.0.0.1 node address to the host's reachable IP, then binds GCS,
        # raylet and the dashboard head's metrics endpoint on every interface. Its
        # single-machine switch (meant for macOS/Windows, read when ray is imported) keeps a
        # private local Ray on loopback; a process that imported ray already keeps the default.
        os.environ.setdefault(_LOCAL_ONLY_ENV, "0")
    import ray

    if ray.is_initialized():
        yield False
        return
    private = None
    if address is None:
        private = start_private(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        connect(address, connect_timeout_s, log_to_driver=False, configure_logging=False)
    try:
        yield True
    finally:
        if private is not None:
            private.stop()
        else:
            ray.shutdown()


def _load_malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _load_malloc_trim()


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS after a batch (glibc keeps them otherwise).

    A window's activations are hundreds of MB of short-lived tensors; without this an actor's
    RSS ratchets up with every odd-sized window. Costs ~ms per batch.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class _ModelActor:
    """Body of a pool actor (wrapped with ``ray.remote`` by :class:`RayExecutor`)."""

    def __init__(
        self,
        loader: Callable[..., Predictor],
        threads: int,
        io_retries: int,
        io_backoff_s: float,
        read_path: str,
    ) -> None:
        scheduler: Any = "sync"
        if read_path == "dask":
            from ray.util.dask import ray_dask_get

            scheduler = ray_dask_get
        # device "auto": cuda:0 of this actor's CUDA_VISIBLE_DEVICES, else the CPU.
        model = loader("auto", threads)
        # Import the I/O stack now (zarr, codecs, fsspec: ~1-2 s), not on the first window.
        import pipeline.io.omezarr
        import pipeline.io.readers  # noqa: F401
        self.proc = WindowProcessor(
            model, io_retries=io_retries, io_backoff_s=io_backoff_s, dask_scheduler=scheduler
        )

    def ready(self) -> WorkerInfo:
        import ray

        ctx = ray.get_runtime_context()
        gpu_ids = tuple(str(g) for g in ctx.get_accelerator_ids().get("GPU", []))
        return WorkerInfo(
            pid=os.getpid(),
            node=ctx.get_node_id(),
            gpu_ids=gpu_ids,
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            model=self.proc.info,
        )

    def process(self, batch: Batch) -> BatchResult:
        try:
            return self.proc.process(batch)
        finally:
            _release_free_memory()

    def finalize(self, job: SceneJob, extra_attrs: dict[str, Any]) -> FinalizeResult:
        return self.proc.finalize(job, extra_attrs)

    def peak_rss_bytes(self) -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RayExecutor:
    """Executor over a pool of model actors on the connected Ray cluster.

    Build with :meth:`from_config` or explicitly; ``loader(device, threads)`` must be
    picklable (the default loads ``Segmenter.from_checkpoint(checkpoint)``).
    """

    def __init__(
        self,
        loader: Callable[..., Predictor] | str,
        *,
        num_actors: int | None = None,
        threads: int = 1,
        use_gpu: Literal["auto"] | bool = "auto",
        cpus_per_gpu_actor: float = 1.0,
        reserve_cpus: float = 0.0,
        max_in_flight_per_actor: int = 2,
        read_path: str = "actor",
        actor_max_restarts: int = 2,
        task_max_retries: int = 2,
        io_retries: int = 3,
        io_backoff_s: float = 0.5,
        start_timeout_s: float = 300.0,
    ) -> None:
        self.loader = SegmenterLoader(loader) if isinstance(loader, str) else loader
        self.num_actors, self.threads, self.use_gpu = num_actors, threads, use_gpu
        self.cpus_per_gpu_actor, self.reserve_cpus = cpus_per_gpu_actor, reserve_cpus
        self.max_in_flight = max_in_flight_per_actor
        self.read_path = read_path
        self.actor_max_restarts, self.task_max_retries = actor_max_restarts, task_max_retries
        self.io_retries, self.io_backoff_s = io_retries, io_backoff_s
        self.start_timeout_s = start_timeout_s
        self.spec: PoolSpec | None = None
        self.actors: list[Any] = []
        self.workers: list[WorkerInfo] = []
        self._alive: list[bool] = []
        self._next_finalize = 0

    @classmethod
    def from_config(cls, cfg: Any, loader: Callable[..., Predictor] | None = None) -> RayExecutor:
        """From a :class:`~pipeline.config.RunConfig`."""
        return cls(
            loader if loader is not None else SegmenterLoader(cfg.checkpoint),
            num_actors=cfg.num_actors,
            threads=cfg.threads_per_actor,
            use_gpu=cfg.use_gpu,
            cpus_per_gpu_actor=cfg.cpus_per_gpu_actor,
            reserve_cpus=cfg.effective_reserve_cpus,
            max_in_flight_per_actor=cfg.max_in_flight_per_actor,
            read_path=cfg.read_path,
            actor_max_restarts=cfg.actor_max_restarts,
            task_max_retries=cfg.task_max_retries,
            io_retries=cfg.io_retries,
            io_backoff_s=cfg.io_backoff_s,
            start_timeout_s=cfg.actor_start_timeout_s,
        )

    @property
    def model(self) -> ModelInfo:
        if not self.workers:
            raise RuntimeError("RayExecutor.model read before start(); use it as a context manager")
        return self.workers[0].model

    def start(self) -> list[WorkerInfo]:
        """Create the actors and wait until each has loaded its model."""
        import ray

        if self.actors:
            return self.workers
        if not ray.is_initialized():
            raise PipelineError(
                "RayExecutor needs a connected Ray: call ray.init() or use "
                "pipeline.execute.ray_session() first"
            )
        spec = pool_spec(
            ray.cluster_resources(),
            num_actors=self.num_actors,
            threads=self.threads,
            use_gpu=self.use_gpu,
            cpus_per_gpu_actor=self.cpus_per_gpu_actor,
            reserve_cpus=self.reserve_cpus,
            read_path=self.read_path,
        )
        self.spec = spec
        actor_cls = ray.remote(_ModelActor).options(
            num_cpus=spec.num_cpus,
            num_gpus=spec.num_gpus,
            max_concurrency=self.max_in_flight + _FINALIZE_SLOTS,
            max_restarts=self.actor_max_restarts,
            max_task_retries=self.task_max_retries,
            runtime_env={"env_vars": {k: os.environ.get(k, v) for k, v in _ACTOR_ENV.items()}},
        )
        self.actors = [
            actor_cls.remote(
                self.loader, spec.threads, self.io_retries, self.io_backoff_s, self.read_path
            )
            for _ in range(spec.num_actors)
        ]
        self._alive = [True] * spec.num_actors
        refs = [a.ready.remote() for a in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.start_timeout_s)
        if len(ready) < len(refs):
            self.close()
            need = (
                f"num_gpus=1 and {spec.num_cpus:g} CPUs"
                if spec.uses_gpu
                else (f"{spec.num_cpus:g} CPUs")
            )
            raise PipelineError(
                f"{len(ready)}/{len(refs)} model actors started after {self.start_timeout_s:g} s: "
                f"does the cluster have room for {len(refs)} actors with {need} each "
                f"(it advertises {ray.cluster_resources()})? Lower num_actors or "
                "threads_per_actor, or raise actor_start_timeout_s for slow model loads"
            )
        try:
            self.workers = ray.get(refs)
        except Exception as e:
            self.close()
            raise PipelineError(f"a model actor failed to load its model: {e}") from None
        return self.workers

    def _pick(self, load: list[int]) -> int | None:
        best = None
        for i, n in enumerate(load):
            if self._alive[i] and n < self.max_in_flight and (best is None or n < load[best]):
                best = i
        return best

    def map(self, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        """Submit lazily, at most ``max_in_flight_per_actor`` per actor; yield as they finish."""
        import ray
        from ray.exceptions import RayActorError

        if not self.actors:
            raise RuntimeError("RayExecutor.map() before start(); use it as a context manager")
        source = iter(batches)
        load = [0] * len(self.actors)
        inflight: dict[Any, tuple[int, Batch]] = {}
        exhausted = False

        def refill() -> None:
            nonlocal exhausted
            while not exhausted:
                i = self._pick(load)
                if i is None:
                    return
                batch = next(source, None)
                if batch is None:
                    exhausted = True
                    return
                inflight[self.actors[i].process.remote(batch)] = (i, batch)
                load[i] += 1

        refill()
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            i, batch = inflight.pop(ref)
            load[i] -= 1
            try:
                result = ray.get(ref)
            except RayActorError as e:
                # Retries and restarts are exhausted: this actor is gone for good.
                self._alive[i] = False
                result = _failed(batch, f"model actor {i} died: {_short(e)}")
            except Exception as e:
                result = _failed(batch, f"batch failed on actor {i}: {_short(e)}")
            yield result  # the consumer may mark a scene failed before we pull more
            if not any(self._alive):
                for j, b in inflight.values():
                    yield _failed(b, f"model actor {j} died")
                raise PipelineError(
                    "every model actor died (see the scene errors in the manifest): the model "
                    "may not fit in memory; lower batch_size, chunk or unit_chunks"
                )
            refill()

    def finalize(self, job: SceneJob, extra_attrs: dict[str, Any]) -> Future[FinalizeResult]:
        """Run the scene's pyramid/metadata step on an actor (its CPUs, not the driver's)."""
        alive = [i for i, ok in enumerate(self._alive) if ok]
        if not alive:
            fut: Future[FinalizeResult] = Future()
            fut.set_result(FinalizeResult(job.scene_id, 0.0, "no model actor alive to finalize"))
            return fut
        i = alive[self._next_finalize % len(alive)]
        self._next_finalize += 1
        return self.actors[i].finalize.remote(job, extra_attrs).future()

    def peak_rss_bytes(self) -> dict[int, int]:
        """Peak RSS per actor process (pid -> bytes)."""
        import ray

        live = [
            (w.pid, a)
            for w, a, ok in zip(self.workers, self.actors, self._alive, strict=True)
            if ok
        ]
        values = ray.get([a.peak_rss_bytes.remote() for _, a in live])
        return {pid: v for (pid, _), v in zip(live, values, strict=True)}

    def close(self) -> None:
        import ray

        for a in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(a, no_restart=True)
        self.actors, self._alive = [], []

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"[:500]


def _failed(batch: Batch, error: str) -> BatchResult:
    return BatchResult(
        scene_id=batch.job.scene_id,
        done=(),
        failed_units=tuple(u.unit_id for u in batch.units),
        error=error,
    )

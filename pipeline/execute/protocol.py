"""What executors exchange: small, picklable messages and the :class:`Executor` contract.

Only references travel between driver and workers: a :class:`SceneJob` (scene metadata, output
URL, storage options) and :class:`~pipeline.plan.WorkUnit` boxes go out; counts and timings
(:class:`BatchResult`) come back. Pixels are read, inferred and written where the model is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pipeline.plan import WorkUnit

__all__ = [
    "ActorStats",
    "Batch",
    "BatchResult",
    "Executor",
    "FinalizeResult",
    "ModelInfo",
    "PoolEvent",
    "PoolStatus",
    "Predictor",
    "SceneJob",
    "SegmenterLoader",
    "UnitResult",
    "WorkerInfo",
    "model_info",
]


@runtime_checkable
class Predictor(Protocol):
    """The slice of ``hgn_model.Segmenter`` the pipeline uses (contract C1)."""

    config: Any  # CheckpointConfig: arch, num_classes, classes, in_channels, sha256
    num_classes: int
    in_channels: int

    def predict(self, images: np.ndarray, return_confidence: bool = False, **kw: Any) -> Any: ...


@dataclass(frozen=True)
class SegmenterLoader:
    """Loads ``Segmenter.from_checkpoint(checkpoint)`` where it is called (inside a worker)."""

    checkpoint: str

    def __call__(self, device: str = "auto", threads: int | None = None) -> Predictor:
        from hgn_model import Segmenter  # torch is imported by workers only when needed

        return Segmenter.from_checkpoint(self.checkpoint, device=device, threads=threads)


@dataclass(frozen=True)
class ModelInfo:
    """Model facts the driver needs (output metadata, band checks, provenance)."""

    arch: str
    num_classes: int
    in_channels: int
    classes: tuple[tuple[str, tuple[int, int, int, int]], ...]
    sha256: str
    device: str
    input: Any = None  # the checkpoint's InputSpec (contract C1); None for stand-in models


def model_info(model: Predictor) -> ModelInfo:
    cfg = model.config
    return ModelInfo(
        arch=str(cfg.arch),
        num_classes=int(model.num_classes),
        in_channels=int(model.in_channels),
        classes=tuple((str(c.name), tuple(int(v) for v in c.color)) for c in cfg.classes),
        sha256=str(cfg.sha256),
        device=str(getattr(model, "device", "cpu")),
        input=getattr(cfg, "input", None),
    )


@dataclass(frozen=True)
class WorkerInfo:
    """Where a model instance lives (logs, manifest, tests of GPU pinning, RSS accounting)."""

    pid: int
    node: str
    gpu_ids: tuple[str, ...]
    cuda_visible_devices: str | None
    model: ModelInfo
    threads: int | None = None  # torch threads of the model (bit-identity depends on it)
    actor_id: str = "local"


@dataclass(frozen=True)
class SceneJob:
    """Everything a worker needs to read one scene and write its output. Small, picklable."""

    info: Any  # pipeline.catalog.SceneInfo
    output_url: str
    bands: tuple[int, ...] | None = None
    value_max: float | None = None
    confidence: bool = True
    read_path: str = "actor"  # "actor" | "dask"
    read_chunk: int = 2048  # dask chunk side for read_path="dask"
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def scene_id(self) -> str:
        return str(self.info.scene_id)

    @property
    def nodata(self) -> float | None:
        """The scene's effective nodata value (contract C2); None: only NaN marks nodata."""
        return getattr(self.info, "nodata", None)


@dataclass(frozen=True)
class Batch:
    """Units of one scene processed by one worker call (the scheduler keeps one shape)."""

    job: SceneJob
    units: tuple[WorkUnit, ...]

    @property
    def key(self) -> str:
        """Stable name of the batch: its first unit (units belong to one batch only)."""
        return self.units[0].unit_id


@dataclass(frozen=True)
class UnitResult:
    unit_id: str
    row: int
    col: int
    pixels: int  # core pixels written
    class_counts: tuple[int, ...]  # core data pixels per class id (nodata pixels not counted)
    nodata: bool = False  # the core was all nodata: written as zeros, never sent to the model
    stored: dict[str, Any] | None = None  # chunk key -> checksum record (pipeline.state.integrity)


@dataclass(frozen=True)
class BatchResult:
    """Outcome of a batch; ``done`` lists units whose write succeeded (even if others failed)."""

    scene_id: str
    done: tuple[UnitResult, ...]
    failed_units: tuple[str, ...] = ()
    error: str | None = None
    error_kind: str | None = None  # pipeline.errors.TRANSIENT | PERMANENT, with ``error``
    read_s: float = 0.0
    infer_s: float = 0.0  # seconds inside the model (an actor's busy time)
    write_s: float = 0.0
    worker: int = 0  # pid
    # Storage retries absorbed in the worker since its previous result (pipeline.retries):
    io_retries: int = 0  # whole reads/writes retried by the pipeline (io_retries config)
    storage_retries: int = 0  # requests retried inside the S3 client (botocore / s3fs)
    actor: str = ""  # which pool actor ran it (set by the executor)


@dataclass(frozen=True)
class FinalizeResult:
    scene_id: str
    seconds: float
    error: str | None = None
    io_retries: int = 0
    storage_retries: int = 0
    error_kind: str | None = None
    stored: dict[str, Any] | None = None  # pyramid chunk key -> checksum record


@dataclass
class ActorStats:
    """One model actor during one run: the manifest's ``executor.actors[*]``."""

    actor_id: str
    node_id: str
    gpu_ids: list[str]
    pid: int | None
    state: str  # "live" (still in the pool) | "lost" (died) | "stopped" (closed)
    started: str | None  # ISO time it became ready in this run (None: never did)
    stopped: str | None = None  # ISO time it was lost or closed
    units: int = 0  # units it wrote in this run
    batches: int = 0
    busy_s: float = 0.0  # seconds inside the model
    alive_s: float = 0.0  # seconds from started to stopped (or the end of the run)
    joined: bool = False  # became ready after the run had started (a node that joined)
    reason: str | None = None  # why it was lost

    @property
    def busy_fraction(self) -> float:
        return self.busy_s / self.alive_s if self.alive_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["busy_fraction"] = round(self.busy_fraction, 4)
        d["busy_s"], d["alive_s"] = round(self.busy_s, 3), round(self.alive_s, 3)
        return d


@dataclass(frozen=True)
class PoolStatus:
    """Counts for progress lines: actors ready now, starting, joined and lost in this run."""

    live: int
    pending: int = 0
    joined: int = 0
    lost: int = 0
    units_redone: int = 0  # units of lost batches sent again

    def describe(self) -> str:
        parts = [f"{self.live} live"]
        if self.pending:
            parts.append(f"{self.pending} starting")
        if self.joined:
            parts.append(f"{self.joined} joined")
        if self.lost:
            parts.append(f"{self.lost} lost")
        return "actors " + ", ".join(parts)


@dataclass(frozen=True)
class PoolEvent:
    """Something a user wants to see as it happens (an actor joined, was lost, ...)."""

    kind: str  # "joined" | "lost" | "stopped"
    actor_id: str
    message: str


class Executor(Protocol):
    """Runs batches with bounded in-flight work, streaming results back in completion order.

    Use as a context manager (``start`` on enter, ``close`` on exit). ``listener`` (optional)
    is called with each :class:`PoolEvent` while ``map`` runs.
    """

    model: ModelInfo
    workers: list[WorkerInfo]
    listener: Callable[[PoolEvent], None] | None

    def start(self) -> list[WorkerInfo]: ...

    def map(self, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        """Consume ``batches`` lazily (never more than the in-flight bound ahead)."""
        ...

    def finalize(self, job: SceneJob, extra_attrs: dict[str, Any]) -> Future[FinalizeResult]:
        """Build the pyramid + metadata of a finished scene, off the driver where possible."""
        ...

    def pool_status(self) -> PoolStatus: ...

    def actor_stats(self) -> list[ActorStats]:
        """Every actor of the latest ``map`` (the run), live or lost."""
        ...

    def close(self) -> None: ...

"""Executors: run a plan's batches somewhere, with the same results everywhere.

- :class:`RayExecutor` (``ray_pool``): an elastic pool of Ray actors, one model each,
  GPU-pinned when GPUs are used; grows as nodes join, asks an autoscaler for more through
  pending actors, survives losing nodes; bounded in-flight batches.
- :class:`LocalExecutor` (``local``): the same work in this process; the reference for tests
  and the executor of ``run --local``.

Both run :class:`WindowProcessor` (``worker``) on :class:`Batch` es of
:class:`~pipeline.plan.WorkUnit` s, overlapped by :class:`OverlappedProcessor` (``overlap``:
read ahead, write behind), and stream :class:`BatchResult` s back; only references travel.
Messages and the :class:`Executor` contract live in ``protocol``, actor sizing in
``capacity``, Ray connection in ``session`` (``raylife``: joining within a deadline, the
private Ray and its watchdog process ``reaper``).
"""

from pipeline.execute.capacity import PoolSpec, pool_spec
from pipeline.execute.local import LocalExecutor
from pipeline.execute.overlap import OverlappedProcessor
from pipeline.execute.protocol import (
    ActorStats,
    Batch,
    BatchResult,
    Executor,
    FinalizeResult,
    ModelInfo,
    PoolEvent,
    PoolStatus,
    Predictor,
    SceneJob,
    SegmenterLoader,
    UnitResult,
    WorkerInfo,
    model_info,
)
from pipeline.execute.ray_pool import RayExecutor
from pipeline.execute.session import ray_session
from pipeline.execute.worker import WindowProcessor

__all__ = [
    "ActorStats",
    "Batch",
    "BatchResult",
    "Executor",
    "FinalizeResult",
    "LocalExecutor",
    "ModelInfo",
    "OverlappedProcessor",
    "PoolEvent",
    "PoolSpec",
    "PoolStatus",
    "Predictor",
    "RayExecutor",
    "SceneJob",
    "SegmenterLoader",
    "UnitResult",
    "WindowProcessor",
    "WorkerInfo",
    "model_info",
    "pool_spec",
    "ray_session",
]

"""Executors: run a plan's batches somewhere, with the same results everywhere.

- :class:`RayExecutor` (``ray_pool``): a pool of Ray actors, one model each, GPU-pinned when
  the cluster has GPUs; bounded in-flight batches; reads and writes inside the actors.
- :class:`LocalExecutor` (``local``): the same work in this process, one batch at a time;
  the reference for tests and the choice for small jobs.

Both run :class:`WindowProcessor` on :class:`Batch` es of :class:`~pipeline.plan.WorkUnit` s
and stream :class:`BatchResult` s back; only references (scene metadata + boxes) travel.
"""

from pipeline.execute._core import (
    Batch,
    BatchResult,
    Executor,
    FinalizeResult,
    ModelInfo,
    Predictor,
    SceneJob,
    SegmenterLoader,
    UnitResult,
    WindowProcessor,
    WorkerInfo,
    model_info,
)
from pipeline.execute.local import LocalExecutor
from pipeline.execute.ray_pool import PoolSpec, RayExecutor, pool_spec, ray_session

__all__ = [
    "Batch",
    "BatchResult",
    "Executor",
    "FinalizeResult",
    "LocalExecutor",
    "ModelInfo",
    "PoolSpec",
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

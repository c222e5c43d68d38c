"""Running the pipeline: ``run_pipeline(RunRequest(...))``.

- ``request``: :class:`RunRequest` (what to run, stated once) and :class:`RunResult`;
- ``scheduler``: scenes -> planned work -> batches, the ledger asked once per scene;
- ``outputs``: every scene's store created before any batch is sent;
- ``recorder``: results into ledger, manifest, progress and per-actor stats; finalize;
- ``driver``: :func:`run_pipeline`, which puts them together;
- ``report``: the run manifest (``<output>/_hgn/manifest-<run_id>.json``) and the summary;
- ``resume``: :class:`~pipeline.run.resume.ResumableRun`, the run lock, the ledger and
  :func:`run_pipeline` put together (what ``hgn-pipeline run`` and ``nightly`` execute);
- ``dryrun``: what a run would do, from the catalog and plan, with a measured time estimate.

Resume hook: a :class:`ChunkLedger` says which units of a scene are done (in bulk) and is
told after each unit's write succeeded. :class:`MemoryLedger` remembers for the life of the
process; the persistent :class:`pipeline.state.ledger.Ledger` plugs in through the same
methods.
"""

from pipeline.run.driver import default_executor, run_pipeline
from pipeline.run.request import RunRequest, RunResult, new_run_id
from pipeline.run.scheduler import ChunkLedger, MemoryLedger

__all__ = [
    "ChunkLedger",
    "MemoryLedger",
    "RunRequest",
    "RunResult",
    "default_executor",
    "new_run_id",
    "run_pipeline",
]

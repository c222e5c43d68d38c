"""One pipeline run: catalog -> schedule -> prepare outputs -> execute -> record -> manifest.

Scenes are independent: a scene that cannot be read, planned, written or finalized is
reported ``failed`` with its reason and the others finish. The driver only moves references;
batches are produced lazily and the executor bounds what is in flight, so nothing grows with
the archive size.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from rich.console import Console

from pipeline.catalog import Catalog, catalog
from pipeline.config import RunConfig
from pipeline.execute import Executor, LocalExecutor, RayExecutor
from pipeline.names import check_run_id
from pipeline.retries import install as count_storage_retries
from pipeline.retries import take as retries_take
from pipeline.run.outputs import prepare_outputs
from pipeline.run.progress import RunProgress
from pipeline.run.recorder import Recorder
from pipeline.run.report import RunManifest, SceneReport, render_summary, write_manifest
from pipeline.run.request import RunRequest, RunResult, new_run_id
from pipeline.run.scheduler import ChunkLedger, MemoryLedger, batches, plan_work, read_ledger
from pipeline.storage import check_output_location, resolve_url, storage_options_from

__all__ = ["default_executor", "run_pipeline"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _package_version() -> str:
    try:
        return metadata.version("hgn-pipeline")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def default_executor(cfg: RunConfig) -> Executor:
    """A :class:`RayExecutor` when Ray is connected, else in-process at the actors' threads."""
    import ray

    if ray.is_initialized():
        return RayExecutor.from_config(cfg)
    return LocalExecutor.from_config(cfg)


def run_pipeline(
    request: RunRequest | str,
    output_url: str | None = None,
    config: RunConfig | None = None,
    /,
    *,
    ledger: ChunkLedger | None = None,
    catalog_result: Catalog | None = None,
    **options: Any,
) -> RunResult:
    """Segment every scene of the request's input into OME-Zarr label mosaics.

    Takes a :class:`RunRequest`, or ``(input_url, output_url, config, **options)`` with the
    request's fields as options. ``ledger``: what is already done (default: in memory).
    ``catalog_result``: an already listed catalog (e.g. the subset a resume has to redo).
    Returns the manifest (also written to ``<output>/_hgn/manifest-<run_id>.json``).
    """
    req = RunRequest.of(request, output_url, config, **options)
    cfg = req.config
    console = req.console or Console(stderr=True)
    count_storage_retries()  # S3-client retries in the driver go into the manifest
    ledger = ledger if ledger is not None else MemoryLedger()
    so = storage_options_from(cfg.s3)
    input_url, out_url = resolve_url(req.input_url), resolve_url(req.output_url)
    check_output_location(input_url, out_url)
    manifest = RunManifest(
        run_id=check_run_id(req.run_id) if req.run_id is not None else new_run_id(),
        input_url=input_url,
        output_url=out_url,
        started=_now(),
        config=cfg.public_dict(),
        package_version=_package_version(),
    )
    t_start = time.perf_counter()
    t = time.perf_counter()
    cat = (catalog_result if catalog_result is not None
           else catalog(input_url, so, **cfg.catalog_options()))
    manifest.stages["catalog_s"] = time.perf_counter() - t
    reports = _reports(cat)
    manifest.scenes = [reports[k] for k in sorted(reports)]
    manifest.skipped = [f.to_dict() for f in cat.skipped]

    workers: list[Any] = []
    if cat.scenes:
        # An executor we make is ours to close; a caller's stays open for its next run.
        owned = req.executor is None
        executor = default_executor(cfg) if owned else req.executor
        try:
            t = time.perf_counter()
            executor.start()
            manifest.stages["start_s"] = time.perf_counter() - t
            _execute(req, cat, executor, ledger, manifest, reports, so, console)
            workers = list(executor.workers)
        except Exception as e:  # the run broke as a whole: still leave its manifest behind
            manifest.error = f"{type(e).__name__}: {e}"
            manifest.stages["total_s"] = time.perf_counter() - t_start
            manifest.finished = _now()
            write_manifest(manifest, so)
            raise
        finally:
            if owned:
                executor.close()

    manifest.stages["total_s"] = time.perf_counter() - t_start
    manifest.finished = _now()
    manifest.driver_retries = retries_take()
    url = write_manifest(manifest, so)
    if req.summary:
        render_summary(manifest, console)
        console.print(f"manifest: {url}", highlight=False, soft_wrap=True)
    return RunResult(manifest, url, workers)


def _reports(cat: Catalog) -> dict[str, SceneReport]:
    reports: dict[str, SceneReport] = {}
    for f in cat.failures:  # two files with one id: one report, each file named in it
        reports.setdefault(f.scene_id, SceneReport(f.scene_id, f.url)).fail(f"catalog: {f.reason}")
    for s in cat.scenes:
        reports[s.scene_id] = SceneReport(s.scene_id, s.url, shape=s.shape, dtype=s.dtype)
    return reports


def _model_section(cfg: RunConfig, executor: Executor) -> dict[str, Any]:
    model = executor.model
    return {
        "arch": model.arch,
        "checkpoint": cfg.checkpoint,
        "checkpoint_sha256": model.sha256,
        "in_channels": model.in_channels,
        "classes": [name for name, _ in model.classes],
        "device": model.device,
    }


def _execute(
    req: RunRequest,
    cat: Catalog,
    executor: Executor,
    ledger: ChunkLedger,
    manifest: RunManifest,
    reports: dict[str, SceneReport],
    so: dict[str, Any],
    console: Console,
) -> None:
    """Schedule, prepare every output, then stream batches through the executor."""
    cfg = req.config
    manifest.model = _model_section(cfg, executor)
    t = time.perf_counter()
    works, plan = plan_work(cat.scenes, cfg, executor.model, reports, manifest.output_url, so)
    read_ledger(works, ledger)
    manifest.plan = plan.summary().as_dict()
    manifest.stages["plan_s"] = time.perf_counter() - t
    t = time.perf_counter()
    prepare_outputs(works, cfg, executor.model, manifest, so)
    manifest.stages["outputs_s"] = time.perf_counter() - t

    bar = RunProgress(req.progress, console, len(works), len(plan))
    recorder = Recorder(manifest, works, ledger, executor, bar)
    listener = getattr(executor, "listener", None)
    executor.listener = recorder.pool_event
    t = time.perf_counter()
    try:
        recorder.start()
        for res in executor.map(batches(works, cfg.batch_size, recorder.is_open)):
            recorder.record(res)
        manifest.stages["execute_s"] = time.perf_counter() - t
        t = time.perf_counter()
        recorder.drain(wait=True)
        manifest.stages["finalize_s"] = time.perf_counter() - t
    except Exception as e:  # the pool itself broke: every unfinished scene fails with why
        recorder.abort(e)
        raise
    finally:
        bar.stop()
        executor.listener = listener
        recorder.close()

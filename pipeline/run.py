"""One pipeline run: catalog -> plan -> execute -> finalize per scene -> manifest + summary.

Scenes are independent: a scene that cannot be read, planned, written or finalized is reported
``failed`` with its reason and the others finish. Work streams: scene outputs are created when
their first batch is pulled, batches are produced lazily and the executor bounds what is in
flight, so nothing grows with the archive size.

Resume hook: a :class:`ChunkLedger` is asked before each unit is scheduled and told after each
unit's write succeeded. The default :class:`MemoryLedger` remembers for the life of the
process; a persistent ledger (``pipeline.ledger``) plugs in through the same two methods.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.catalog import Catalog, SceneInfo, catalog
from pipeline.config import RunConfig
from pipeline.execute import (
    Batch,
    BatchResult,
    Executor,
    LocalExecutor,
    ModelInfo,
    RayExecutor,
    SceneJob,
)
from pipeline.plan import SceneGrid, plan_archive, plan_scene, plan_token
from pipeline.preflight import scene_bands, scene_problem, value_range_problem
from pipeline.report import RunManifest, SceneReport, render_summary, write_manifest
from pipeline.retries import install as count_storage_retries
from pipeline.retries import take as retries_take
from pipeline.storage import check_output_location, resolve_url, storage_options_from

__all__ = [
    "ChunkLedger",
    "MemoryLedger",
    "RunResult",
    "new_run_id",
    "run_pipeline",
]

@runtime_checkable
class ChunkLedger(Protocol):
    """Which units are already written, under a resume ``token`` (settings fingerprint).

    ``mark_done`` is called only after the unit's write succeeded, with ``info``
    ``{"pixels": n, "class_counts": [...]}`` for reports; ``is_done`` must only answer True
    for the same scene, unit id and token, so a resume never mixes configs.
    """

    def is_done(self, scene_id: str, unit_id: str, token: str) -> bool: ...

    def mark_done(
        self, scene_id: str, unit_id: str, token: str, info: Mapping[str, Any] | None = None
    ) -> None: ...


class MemoryLedger:
    """In-process ledger: resumes within one process (e.g. a retried ``run_pipeline`` call)."""

    def __init__(self) -> None:
        self._done: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def is_done(self, scene_id: str, unit_id: str, token: str) -> bool:
        with self._lock:
            return (scene_id, unit_id, token) in self._done

    def mark_done(
        self, scene_id: str, unit_id: str, token: str, info: Mapping[str, Any] | None = None
    ) -> None:
        with self._lock:
            self._done.add((scene_id, unit_id, token))

    def __len__(self) -> int:
        return len(self._done)


def new_run_id() -> str:
    """Sortable, unique: UTC time + 6 random hex digits."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _package_version() -> str:
    try:
        return metadata.version("hgn-pipeline")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class _SceneState:
    info: SceneInfo
    grid: SceneGrid
    job: SceneJob
    report: SceneReport
    token: str
    all_submitted: bool = False
    finalizing: bool = False


@dataclass
class RunResult:
    manifest: RunManifest
    manifest_url: str | None
    workers: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.manifest.failed

    @property
    def exit_code(self) -> int:
        """0: every scene ok; 1: some scene failed."""
        return 0 if self.ok else 1


def _default_executor(cfg: RunConfig) -> Executor:
    import ray

    if ray.is_initialized():
        return RayExecutor.from_config(cfg)
    return LocalExecutor(
        cfg.checkpoint, threads=None, io_retries=cfg.io_retries, io_backoff_s=cfg.io_backoff_s
    )


def _token(scene: SceneInfo, cfg: RunConfig, model: ModelInfo) -> str:
    data = cfg.model_dump(mode="json")
    optional = {k: data[k] for k in ("nodata", "band_files") if data.get(k) is not None}
    return plan_token(
        {
            "fingerprint": scene.fingerprint,
            "checkpoint": model.sha256,
            **{
                k: getattr(cfg, k)
                for k in (
                    "chunk",
                    "halo",
                    "unit_chunks",
                    "bands",
                    "value_max",
                    "layout",
                    "confidence",
                )
            },
            **optional,  # only when set: tokens of runs without them stay as they were
        }
    )


class _Progress:
    """rich progress (scenes, windows, Mpx/s), or nothing when disabled."""

    def __init__(self, enabled: bool, console: Console, scenes: int, units: int) -> None:
        self.p = None
        self.t0 = time.perf_counter()
        self.pixels = 0
        if enabled:
            self.p = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=console,
            )
            self.scenes = self.p.add_task("scenes", total=scenes, rate="")
            self.windows = self.p.add_task("windows", total=units, rate="")
            self.p.start()

    def advance(self, windows: int = 0, pixels: int = 0, scenes: int = 0) -> None:
        if self.p is None:
            return
        self.pixels += pixels
        rate = self.pixels / 1e6 / max(time.perf_counter() - self.t0, 1e-9)
        self.p.update(self.windows, advance=windows, rate=f"{rate:.2f} Mpx/s")
        if scenes:
            self.p.update(self.scenes, advance=scenes)

    def stop(self) -> None:
        if self.p is not None:
            self.p.stop()


def run_pipeline(
    input_url: str,
    output_url: str,
    cfg: RunConfig,
    *,
    executor: Executor | None = None,
    ledger: ChunkLedger | None = None,
    run_id: str | None = None,
    progress: bool = False,
    console: Console | None = None,
    summary: bool = False,
    catalog_result: Catalog | None = None,
) -> RunResult:
    """Segment every scene under ``input_url`` into OME-Zarr label mosaics under ``output_url``.

    ``executor``: default a :class:`RayExecutor` when Ray is initialised, else in-process;
    one passed in is started if needed and left open (its owner closes it).
    ``catalog_result``: an already listed catalog (e.g. the subset a resume has to redo);
    default: list ``input_url``.
    Returns the manifest (also written to ``<output>/_hgn/manifest-<run_id>.json``).
    """
    console = console or Console(stderr=True)
    count_storage_retries()  # S3-client retries in the driver go into the manifest
    ledger = ledger if ledger is not None else MemoryLedger()
    run_id = run_id or new_run_id()
    so = storage_options_from(cfg.s3)
    input_url, output_url = resolve_url(input_url), resolve_url(output_url)
    check_output_location(input_url, output_url)
    manifest = RunManifest(
        run_id=run_id,
        input_url=input_url,
        output_url=output_url,
        started=_now(),
        config=cfg.public_dict(),
        package_version=_package_version(),
    )
    t_start = time.perf_counter()

    t = time.perf_counter()
    cat = (catalog_result if catalog_result is not None
           else catalog(input_url, so, **cfg.catalog_options()))
    manifest.stages["catalog_s"] = time.perf_counter() - t
    reports: dict[str, SceneReport] = {}
    for f in cat.failures:  # two files with one id: one report, each file named in it
        reports.setdefault(f.scene_id, SceneReport(f.scene_id, f.url)).fail(f"catalog: {f.reason}")
    for s in cat.scenes:
        reports[s.scene_id] = SceneReport(s.scene_id, s.url, shape=s.shape, dtype=s.dtype)
    manifest.scenes = [reports[k] for k in sorted(reports)]
    manifest.skipped = [f.to_dict() for f in cat.skipped]

    workers: list[Any] = []
    if cat.scenes:
        # An executor we make is ours to close; a caller's stays open for its next run.
        owned = executor is None
        executor = _default_executor(cfg) if executor is None else executor
        t = time.perf_counter()
        executor.start()
        workers = list(executor.workers)
        manifest.stages["start_s"] = time.perf_counter() - t
        try:
            _execute(
                cat.scenes,
                cfg,
                executor,
                ledger,
                manifest,
                reports,
                output_url,
                so,
                progress,
                console,
            )
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
    if summary:
        render_summary(manifest, console)
        console.print(f"manifest: {url}", highlight=False, soft_wrap=True)
    return RunResult(manifest, url, workers)


def _execute(
    scenes: list[SceneInfo],
    cfg: RunConfig,
    executor: Executor,
    ledger: ChunkLedger,
    manifest: RunManifest,
    reports: dict[str, SceneReport],
    output_url: str,
    so: dict[str, Any],
    progress: bool,
    console: Console,
) -> None:
    from pipeline.io.omezarr import SceneWriter, scene_store_url

    model = executor.model
    manifest.model = {
        "arch": model.arch,
        "checkpoint": cfg.checkpoint,
        "checkpoint_sha256": model.sha256,
        "in_channels": model.in_channels,
        "classes": [name for name, _ in model.classes],
        "device": model.device,
    }
    manifest.executor = {
        "kind": type(executor).__name__,
        "workers": len(executor.workers),
        "gpu_ids": sorted({g for w in executor.workers for g in w.gpu_ids}),
    }
    class_names = [name for name, _ in model.classes]

    t = time.perf_counter()
    states: dict[str, _SceneState] = {}
    for s in scenes:
        problem = scene_problem(s, cfg, model) or value_range_problem(s, cfg, model, so)
        if problem:
            reports[s.scene_id].fail(problem)
            continue
        grid = plan_scene(
            s.scene_id,
            s.height,
            s.width,
            chunk=cfg.chunk,
            halo=cfg.halo,
            unit_chunks=cfg.unit_chunks,
        )
        job = SceneJob(
            info=s,
            output_url=output_url,
            bands=scene_bands(s, cfg, model),
            value_max=cfg.value_max_for(s.dtype),
            confidence=cfg.confidence,
            read_path=cfg.read_path,
            read_chunk=cfg.chunk,
            storage_options=dict(so),
        )
        reports[s.scene_id].units_total = len(grid)
        reports[s.scene_id].bands = None if job.bands is None else list(job.bands)
        reports[s.scene_id].output = scene_store_url(output_url, s.scene_id)
        states[s.scene_id] = _SceneState(s, grid, job, reports[s.scene_id], _token(s, cfg, model))
    plan = plan_archive(
        [st.info for st in states.values()],
        chunk=cfg.chunk,
        halo=cfg.halo,
        unit_chunks=cfg.unit_chunks,
        bands=cfg.bands,
        confidence=cfg.confidence,
    )
    manifest.plan = plan.summary().as_dict()
    manifest.stages["plan_s"] = time.perf_counter() - t

    bar = _Progress(progress, console, len(states), len(plan))
    finalizing: list[tuple[_SceneState, Any]] = []  # in flight only: drained as they finish

    def record_finalized(st: _SceneState, fut: Any) -> None:
        try:
            fin = fut.result()
            error = fin.error
            st.report.timings["finalize"] = fin.seconds
            st.report.io_retries += fin.io_retries
            st.report.storage_retries += fin.storage_retries
        except Exception as e:  # the actor died while finalizing
            error = f"finalize failed: {type(e).__name__}: {e}"
        if error:
            st.report.fail(error)
        else:
            st.report.status = "ok"
        bar.advance(scenes=1)

    def drain(wait: bool = False) -> None:
        for item in list(finalizing):
            if wait or item[1].done():
                finalizing.remove(item)
                record_finalized(*item)

    def maybe_finalize(st: _SceneState) -> None:
        r = st.report
        if st.finalizing or r.status == "failed" or not st.all_submitted:
            return
        if r.units_done + r.units_resumed < r.units_total:
            return
        st.finalizing = True
        extra = {
            "run_id": manifest.run_id,
            "class_pixels": dict(r.class_pixels),
            "finished": _now(),
        }
        finalizing.append((st, executor.finalize(st.job, extra)))

    def create_output(st: _SceneState, resumed: bool) -> None:
        s = st.info
        if resumed:  # some units are already written under this token: keep them
            SceneWriter.open(output_url, s.scene_id, storage_options=so)
            return
        SceneWriter.create(
            output_url,
            s.scene_id,
            height=s.height,
            width=s.width,
            chunk=cfg.chunk,
            classes=list(model.classes),
            provenance={
                "arch": model.arch,
                "checkpoint_sha256": model.sha256,
                "config": manifest.config,
                "input_url": s.url,
                "input_fingerprint": s.fingerprint,
                "input_scene": s.to_dict(),  # queries reopen the source without a catalog
                "package_version": manifest.package_version,
                "run_id": manifest.run_id,
                "resume_token": st.token,
                "started": _now(),
            },
            georef=s.georef,
            confidence=cfg.confidence,
            levels=cfg.pyramid_levels,
            storage_options=so,
            overwrite=cfg.overwrite,
        )

    def batches() -> Iterator[Batch]:
        for st in states.values():
            r = st.report
            done = [ledger.is_done(st.info.scene_id, u.unit_id, st.token) for u in st.grid]
            try:
                create_output(st, resumed=any(done))
            except Exception as e:
                r.fail(f"cannot create output {r.output}: {type(e).__name__}: {e}")
                bar.advance(scenes=1)
                continue
            pending = []
            for unit, is_done in zip(st.grid, done, strict=True):
                if r.status == "failed":
                    break
                if is_done:
                    r.units_resumed += 1
                    bar.advance(windows=1)
                    continue
                pending.append(unit)
                if len(pending) == cfg.batch_size:
                    yield Batch(st.job, tuple(pending))
                    pending = []
            if pending and r.status != "failed":
                yield Batch(st.job, tuple(pending))
            st.all_submitted = True
            maybe_finalize(st)

    def consume(res: BatchResult) -> None:
        st = states[res.scene_id]
        r = st.report
        r.io_retries += res.io_retries
        r.storage_retries += res.storage_retries
        for u in res.done:
            ledger.mark_done(
                res.scene_id,
                u.unit_id,
                st.token,
                {"pixels": u.pixels, "class_counts": list(u.class_counts)},
            )
            r.units_done += 1
            r.units_nodata += int(u.nodata)
            r.pixels += u.pixels
            for k, n in enumerate(u.class_counts):
                if n:
                    name = class_names[k] if k < len(class_names) else str(k)
                    r.class_pixels[name] = r.class_pixels.get(name, 0) + n
        for stage, v in (("read", res.read_s), ("infer", res.infer_s), ("write", res.write_s)):
            r.timings[stage] += v
        bar.advance(windows=len(res.done), pixels=sum(u.pixels for u in res.done))
        if res.error:
            was_failed = r.status == "failed"
            r.fail(res.error)
            if not was_failed:
                bar.advance(scenes=1)
        maybe_finalize(st)
        drain()

    t = time.perf_counter()
    try:
        for res in executor.map(batches()):
            consume(res)
        manifest.stages["execute_s"] = time.perf_counter() - t
        t = time.perf_counter()
        drain(wait=True)
        manifest.stages["finalize_s"] = time.perf_counter() - t
    except Exception as e:  # the pool itself broke: every unfinished scene fails with why
        for st in states.values():
            if st.report.status == "pending":
                st.report.fail(f"run aborted: {type(e).__name__}: {e}")
        raise
    finally:
        bar.stop()
        for st in states.values():
            if st.report.status == "pending":  # never fully scheduled (e.g. aborted)
                st.report.fail("not all units were processed")

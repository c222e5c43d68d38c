"""``--dry-run``: what a run would do, from the catalog and plan alone, plus a time estimate.

The estimate comes from two measurements on this machine:

- the model's rate: the first planned window of the archive is read and put through the
  model (``threads_per_actor`` torch threads); the plan's model-input pixels are divided by
  that rate times the pool size the cluster would get;
- the fixed cost of a scene, whatever its size: a real run over :data:`OVERHEAD_SCENES`
  tiny probe scenes in a temporary folder (create the store, read, write, finalize, ledger
  records), minus the model's time, plus opening the real first scene. Paid once per scene,
  so ``scenes x per_scene_s`` is added: for archives of many small scenes it dominates. An
  object-store output adds its latency on top (not measured: a dry run writes nothing to
  the output).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console

from pipeline.catalog import SceneInfo, catalog
from pipeline.config import RunConfig
from pipeline.execute import LocalExecutor, SceneJob, pool_spec
from pipeline.plan import PlanSummary, SceneGrid, plan_archive
from pipeline.storage import resolve_url, storage_options_from

__all__ = ["OVERHEAD_SCENES", "DryRun", "dry_run"]

OVERHEAD_SCENES = 4  # probe scenes run end to end to time a scene's fixed cost
RATE_WARMUPS = 3  # untimed passes first: a new process's first passes are slow
RATE_PASSES = 5  # timed passes (median), within RATE_BUDGET_S after the first
RATE_BUDGET_S = 10.0


@dataclass(frozen=True)
class DryRun:
    """What a run would do: the plan's sizes and a time estimate from a measured rate."""

    scenes: int
    failures: list[tuple[str, str]]
    plan: PlanSummary
    rate_mpx_s: float | None  # model input Mpx/s of ONE worker, measured here
    workers: int
    estimated_s: float | None  # inference_s + overhead_s
    note: str | None = None  # why there is no estimate
    per_scene_s: float | None = None  # fixed cost of one scene, measured here
    inference_s: float | None = None
    startup_s: float = 0.0  # loading the model once (each worker does it at start)

    @property
    def overhead_s(self) -> float:
        return self.scenes * (self.per_scene_s or 0.0)

    def render(self, console: Console) -> None:
        p = self.plan
        console.print(
            f"scenes {self.scenes} (+{len(self.failures)} unreadable), windows {p.units}, "
            f"chunks {p.chunks}, output {p.output_pixels / 1e6:.1f} Mpx, model input "
            f"{p.input_pixels / 1e6:.1f} Mpx, read {p.bytes_read / 2**20:.1f} MiB, "
            f"write ~{p.bytes_written / 2**20:.1f} MiB",
            highlight=False,
        )
        for sid, why in self.failures:
            console.print(f"[red]unreadable[/] {sid}: {why}", highlight=False)
        if self.note:
            console.print(f"no time estimate: {self.note}", highlight=False)
        if self.estimated_s is not None:
            console.print(
                f"estimated time: {self.estimated_s:.0f} s = model load {self.startup_s:.0f} s "
                f"+ inference {self.inference_s:.0f} s "
                f"with {self.workers} worker(s) at {self.rate_mpx_s:.2f} Mpx/s each + per-scene "
                f"overhead {self.overhead_s:.0f} s ({self.scenes} scenes x "
                f"{self.per_scene_s or 0:.2f} s: open input, create, finalize, record; measured "
                "on this machine's temporary storage)",
                highlight=False, soft_wrap=True,
            )


def dry_run(
    input_url: str,
    cfg: RunConfig,
    *,
    measure: bool = True,
    loader: Any = None,
    workers: int | None = None,
) -> DryRun:
    """Catalog + plan only (no output written); optionally time one real window.

    The rate is measured on the first planned window, read from the archive, with
    ``threads_per_actor`` torch threads; ``workers`` defaults to the pool size the cluster
    (or this machine, without Ray) would get.
    """
    import ray

    so = storage_options_from(cfg.s3)
    cat = catalog(resolve_url(input_url), so, **cfg.catalog_options())
    plan = plan_archive(cat.scenes, **cfg.plan_options())
    summary = plan.summary()
    if workers is None:
        res = ray.cluster_resources() if ray.is_initialized() else {"CPU": os.cpu_count() or 1}
        spec = pool_spec(
            res,
            max_actors=cfg.max_actors,
            threads=cfg.threads_per_actor,
            use_gpu=cfg.use_gpu if res.get("GPU") else False,
            reserve_cpus=cfg.effective_reserve_cpus,
        )
        workers = min(spec.target([res]), max(1, spec.fit([res])))  # actors that fit now
    rate, note, per_scene, startup = None, None, None, 0.0
    if measure and cat.scenes:
        try:
            rate, per_scene, startup = _measure(cat.scenes[0], plan.grids[0], cfg, loader, so)
        except Exception as e:  # a dry run reports; it does not fail on the first scene
            note = f"could not time scene {cat.scenes[0].scene_id!r}: {type(e).__name__}: {e}"
    inference = summary.estimated_seconds(rate * workers) if rate else None
    est = (startup + inference + len(cat.scenes) * per_scene
           if inference is not None and per_scene else None)
    return DryRun(
        scenes=len(cat.scenes),
        failures=[(f.scene_id, f.reason) for f in cat.failures],
        plan=summary,
        rate_mpx_s=rate,
        workers=workers,
        estimated_s=est,
        note=note,
        per_scene_s=per_scene,
        inference_s=inference,
        startup_s=startup,
    )


def _measure(
    scene: SceneInfo, grid: SceneGrid, cfg: RunConfig, loader: Any, so: dict[str, Any]
) -> tuple[float, float, float]:
    """(model-input Mpx/s of one worker, seconds per scene besides inference, model load s)."""
    t = time.perf_counter()
    with LocalExecutor(loader or cfg.checkpoint, threads=cfg.threads_per_actor) as ex:
        startup = time.perf_counter() - t
        rate = _rate(ex.processor, scene, grid, cfg, so)
        return rate, _scene_overhead(ex, scene, cfg, so), startup


def _rate(proc: Any, scene: SceneInfo, grid: SceneGrid, cfg: RunConfig,
          so: dict[str, Any]) -> float:
    """Model-input Mpx/s on the scene's first window: median of up to RATE_PASSES passes.

    The first passes of a new process are slow (kernel selection, allocator growth) and
    vary a lot on a busy machine, hence warm-ups and a median.
    """
    from pipeline.stitch import model_input

    job = SceneJob(info=scene, output_url="", bands=cfg.bands,
                   value_max=cfg.value_max_for(scene.dtype), confidence=cfg.confidence,
                   storage_options=dict(so))
    unit = grid.unit(0, 0)
    x = model_input(proc.read_window(job, unit), unit)
    for _ in range(RATE_WARMUPS):
        proc.predict([x], job)
    times: list[float] = []
    t0 = time.perf_counter()
    while len(times) < RATE_PASSES and (not times or time.perf_counter() - t0 < RATE_BUDGET_S):
        times.append(proc.predict([x], job)[2])
    return x.shape[-2] * x.shape[-1] / 1e6 / statistics.median(times)


def _scene_overhead(ex: Any, scene: SceneInfo, cfg: RunConfig, so: dict[str, Any]) -> float:
    """Seconds per scene besides inference: a real run over OVERHEAD_SCENES tiny scenes.

    The probe scenes (same bands and dtype, 16 x 16 px) are written to a temporary folder
    and run end to end with this process's model (create, read, write, finalize, ledger,
    lock, manifest); the model's own time is taken out, and the cost of opening the real
    first scene is added (its storage's latency).
    """
    import tempfile

    import zarr

    from pipeline.io.readers import SceneReader
    from pipeline.run.resume import run_resumable

    t = time.perf_counter()
    reader = SceneReader(scene, so)  # a fresh reader: what opening a new input costs
    reader.read(0, 1, 0, 1)
    reader.close()
    open_s = time.perf_counter() - t
    probe = np.ones((scene.bands, 16, 16), dtype=scene.dtype)
    with tempfile.TemporaryDirectory(prefix="hgn-dryrun-") as tmp:
        for i in range(OVERHEAD_SCENES):
            zarr.create_array(f"{tmp}/in/p{i}.zarr", data=probe, zarr_format=3)
        local = cfg.with_overrides(s3=None, overwrite=False)
        t = time.perf_counter()
        res = run_resumable(f"{tmp}/in", f"{tmp}/out", local, executor=ex, run_id="dry-run")
        wall = time.perf_counter() - t
    infer = sum(s.timings.get("infer", 0.0) for s in res.run.manifest.scenes) if res.run else 0.0
    return max(wall - infer, 0.0) / OVERHEAD_SCENES + open_s

"""``--dry-run``: what a run would do, from the catalog and plan alone, plus a time estimate.

The estimate comes from a measured rate: the first planned window of the archive is read and
put through the model on this machine (``threads_per_actor`` torch threads), and the plan's
model-input pixels are divided by that rate times the pool size the cluster would get.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from pipeline.catalog import SceneInfo, catalog
from pipeline.config import RunConfig
from pipeline.execute import LocalExecutor, SceneJob, pool_spec
from pipeline.plan import PlanSummary, SceneGrid, plan_archive
from pipeline.storage import resolve_url, storage_options_from

__all__ = ["DryRun", "dry_run"]


@dataclass(frozen=True)
class DryRun:
    """What a run would do: the plan's sizes and a time estimate from a measured rate."""

    scenes: int
    failures: list[tuple[str, str]]
    plan: PlanSummary
    rate_mpx_s: float | None  # model input Mpx/s of ONE worker, measured here
    workers: int
    estimated_s: float | None
    note: str | None = None  # why there is no estimate

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
                f"estimated inference time: {self.estimated_s:.0f} s with {self.workers} "
                f"worker(s) at {self.rate_mpx_s:.2f} Mpx/s each (measured on this machine)",
                highlight=False,
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
    plan = plan_archive(
        cat.scenes,
        chunk=cfg.chunk,
        halo=cfg.halo,
        unit_chunks=cfg.unit_chunks,
        bands=cfg.bands,
        confidence=cfg.confidence,
    )
    summary = plan.summary()
    if workers is None:
        res = ray.cluster_resources() if ray.is_initialized() else {"CPU": os.cpu_count() or 1}
        workers = pool_spec(
            res,
            num_actors=cfg.num_actors,
            threads=cfg.threads_per_actor,
            use_gpu=cfg.use_gpu if res.get("GPU") else False,
            reserve_cpus=cfg.effective_reserve_cpus,
        ).num_actors
    rate, note = None, None
    if measure and cat.scenes:
        try:
            rate = _measure_rate(cat.scenes[0], plan.grids[0], cfg, loader, so)
        except Exception as e:  # a dry run reports; it does not fail on the first scene
            note = f"could not time scene {cat.scenes[0].scene_id!r}: {type(e).__name__}: {e}"
    est = summary.estimated_seconds(rate * workers) if rate else None
    return DryRun(
        scenes=len(cat.scenes),
        failures=[(f.scene_id, f.reason) for f in cat.failures],
        plan=summary,
        rate_mpx_s=rate,
        workers=workers,
        estimated_s=est,
        note=note,
    )


def _measure_rate(
    scene: SceneInfo, grid: SceneGrid, cfg: RunConfig, loader: Any, so: dict[str, Any]
) -> float:
    """Model-input Mpx/s on the scene's first window (one warm-up, then one timed pass)."""
    from pipeline.stitch import model_input

    with LocalExecutor(loader or cfg.checkpoint, threads=cfg.threads_per_actor) as ex:
        proc = ex.processor
        job = SceneJob(
            info=scene,
            output_url="",
            bands=cfg.bands,
            value_max=cfg.value_max_for(scene.dtype),
            confidence=cfg.confidence,
            storage_options=dict(so),
        )
        unit = grid.unit(0, 0)
        x = model_input(proc.read_window(job, unit), unit)
        proc.predict([x], job)  # warm-up: first call selects kernels
        seconds = proc.predict([x], job)[2]
        return x.shape[-2] * x.shape[-1] / 1e6 / seconds

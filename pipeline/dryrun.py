"""``--dry-run``: what a run would do, from the catalog and plan alone, plus a time estimate.

The estimate comes from two measurements on this machine:

- the model's rate: the first planned window of the archive is read and put through the
  model (``threads_per_actor`` torch threads); the plan's model-input pixels are divided by
  that rate times the pool size the cluster would get;
- the fixed cost of a scene, whatever its size: open its input, create its output store,
  write a chunk, finalize (pyramid + metadata) and record it in a ledger, timed on a probe
  scene in a temporary folder (median of :data:`OVERHEAD_REPEATS`). It is paid once per
  scene, serially in the driver today, so ``scenes x per_scene_s`` is added: for archives of
  many small scenes it dominates. Object stores add their latency on top (not measured:
  a dry run writes nothing to the output).
"""

from __future__ import annotations

import os
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

__all__ = ["OVERHEAD_REPEATS", "DryRun", "dry_run"]

OVERHEAD_REPEATS = 3  # per-scene probes timed; the median resists one slow filesystem call


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
                f"estimated time: {self.estimated_s:.0f} s = inference {self.inference_s:.0f} s "
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
    cat = catalog(resolve_url(input_url), so, layout=cfg.layout)
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
    rate, note, per_scene = None, None, None
    if measure and cat.scenes:
        try:
            rate, classes = _measure_rate(cat.scenes[0], plan.grids[0], cfg, loader, so)
            per_scene = _measure_scene_overhead(cat.scenes[0], cfg, classes, so)
        except Exception as e:  # a dry run reports; it does not fail on the first scene
            note = f"could not time scene {cat.scenes[0].scene_id!r}: {type(e).__name__}: {e}"
    inference = summary.estimated_seconds(rate * workers) if rate else None
    est = inference + len(cat.scenes) * per_scene if inference is not None and per_scene else None
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
    )


def _measure_rate(
    scene: SceneInfo, grid: SceneGrid, cfg: RunConfig, loader: Any, so: dict[str, Any]
) -> tuple[float, list[Any]]:
    """(model-input Mpx/s on the scene's first window, the model's classes).

    One warm-up pass, then one timed pass.
    """
    from pipeline.stitch import model_input

    with LocalExecutor(loader or cfg.checkpoint, threads=cfg.threads_per_actor) as ex:
        proc = ex.processor
        job = SceneJob(
            info=scene,
            output_url="",
            bands=cfg.bands,
            value_max=cfg.value_max,
            confidence=cfg.confidence,
            storage_options=dict(so),
        )
        unit = grid.unit(0, 0)
        x = model_input(proc.read_window(job, unit), unit)
        proc.predict([x], job)  # warm-up: first call selects kernels
        seconds = proc.predict([x], job)[2]
        return x.shape[-2] * x.shape[-1] / 1e6 / seconds, list(proc.info.classes)


def _measure_scene_overhead(
    scene: SceneInfo, cfg: RunConfig, classes: list[Any], so: dict[str, Any]
) -> float:
    """Seconds a scene costs besides inference (median of OVERHEAD_REPEATS probes)."""
    import statistics
    import tempfile

    from pipeline.io.omezarr import SceneWriter
    from pipeline.io.readers import SceneReader
    from pipeline.ledger import Ledger, RunFingerprint

    times = []
    with tempfile.TemporaryDirectory(prefix="hgn-dryrun-") as tmp:
        for i in range(OVERHEAD_REPEATS):
            t = time.perf_counter()
            reader = SceneReader(scene, so)  # a fresh reader: opening the input is part of it
            reader.read(0, 1, 0, 1)
            reader.close()
            h, w = min(scene.height, cfg.chunk), min(scene.width, cfg.chunk)
            root = os.path.join(tmp, str(i))  # a fresh output per probe, as for a new scene
            writer = SceneWriter.create(
                root, "probe", h, w, cfg.chunk, classes, {"dry_run": True},
                confidence=cfg.confidence, levels=cfg.pyramid_levels)
            ones = np.ones((h, w), np.uint8)
            writer.write_block(0, 0, ones, ones if cfg.confidence else None)
            writer.finalize({})
            ledger = Ledger.open(root, RunFingerprint.from_settings({"probe": True}))
            ledger.mark_scene("probe", "running", "fp")
            ledger.mark_done("probe", "r0c0", "t", {"pixels": h * w})
            ledger.mark_scene("probe", "done", "fp")
            times.append(time.perf_counter() - t)
    return statistics.median(times)

"""Scheduling: catalog scenes -> planned work -> batches, with the ledger asked in bulk.

Per scene: check it can run (:func:`~pipeline.plan.preflight.scene_problem`), plan its unit grid,
make the :class:`SceneJob` workers get, and compute its resume token. The ledger is asked once
per scene for every unit it already has (one listing, not a request per unit); the batches
hold only what is missing, same-shape units together so a GPU runs each batch in one call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pipeline.catalog import SceneInfo
from pipeline.config import RunConfig
from pipeline.errors import OutputError
from pipeline.execute import Batch, ModelInfo, SceneJob
from pipeline.plan import Plan, SceneGrid, WorkUnit, plan_archive, plan_token
from pipeline.plan.preflight import scene_bands, scene_problem, value_range_problem
from pipeline.run.report import SceneReport

__all__ = [
    "ChunkLedger",
    "MemoryLedger",
    "SceneWork",
    "batches",
    "plan_work",
    "read_ledger",
    "scene_token",
]


@runtime_checkable
class ChunkLedger(Protocol):
    """Which units are already written, under a resume ``token`` (settings fingerprint).

    ``done_chunks`` answers for a whole scene at once; ``mark_done`` is called only after the
    unit's write succeeded, with ``info`` ``{"pixels": n, "class_counts": [...]}`` for
    reports. Both must only count the same scene, unit id and token, so a resume never mixes
    configs. (:class:`pipeline.state.ledger.Ledger` is the persistent one.)
    """

    def done_chunks(self, scene_id: str, token: str) -> set[str]: ...

    def mark_done(
        self, scene_id: str, unit_id: str, token: str, info: Mapping[str, Any] | None = None
    ) -> None: ...


class MemoryLedger:
    """In-process ledger: resumes within one process (e.g. a retried ``run_pipeline`` call)."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    def done_chunks(self, scene_id: str, token: str) -> set[str]:
        with self._lock:
            return set(self._done.get((scene_id, token), ()))

    def is_done(self, scene_id: str, unit_id: str, token: str) -> bool:
        with self._lock:
            return unit_id in self._done.get((scene_id, token), ())

    def mark_done(
        self, scene_id: str, unit_id: str, token: str, info: Mapping[str, Any] | None = None
    ) -> None:
        with self._lock:
            self._done.setdefault((scene_id, token), set()).add(unit_id)

    def __len__(self) -> int:
        return sum(len(v) for v in self._done.values())


def scene_token(scene: SceneInfo, cfg: RunConfig, model: ModelInfo) -> str:
    """Resume token of one scene: its input, the checkpoint and every output setting."""
    return plan_token(
        {"fingerprint": scene.fingerprint, "checkpoint": model.sha256, **cfg.output_settings()}
    )


@dataclass
class SceneWork:
    """One scene to process: its plan, the job workers get, its report, what is done."""

    info: SceneInfo
    grid: SceneGrid
    job: SceneJob
    report: SceneReport
    token: str
    done: frozenset[str] = field(default_factory=frozenset)  # unit ids the ledger has

    @property
    def scene_id(self) -> str:
        return self.info.scene_id

    @property
    def resumed(self) -> bool:
        return bool(self.done)

    def pending(self) -> list[WorkUnit]:
        return [u for u in self.grid if u.unit_id not in self.done]


def plan_work(
    scenes: Iterable[SceneInfo],
    cfg: RunConfig,
    model: ModelInfo,
    reports: Mapping[str, SceneReport],
    output_url: str,
    storage_options: Mapping[str, Any],
) -> tuple[list[SceneWork], Plan]:
    """Plan every scene that can run (bands, value range checked against the model); the
    others' reports fail with the reason."""
    from pipeline.io.omezarr import scene_store_url

    ready: list[tuple[SceneInfo, SceneJob, SceneReport]] = []  # passed the checks
    for s in scenes:
        report = reports[s.scene_id]
        problem = scene_problem(s, cfg, model) or value_range_problem(
            s, cfg, model, storage_options
        )
        if problem:
            report.fail(problem)
            continue
        try:
            report.output = scene_store_url(output_url, s.scene_id)
        except OutputError as e:  # an id that cannot be a path fails alone
            report.fail(str(e))
            continue
        job = SceneJob(
            info=s,
            output_url=output_url,
            bands=scene_bands(s, cfg, model),
            value_max=cfg.value_max_for(s.dtype),
            confidence=cfg.confidence,
            read_path=cfg.read_path,
            read_chunk=cfg.chunk,
            storage_options=dict(storage_options),
        )
        ready.append((s, job, report))
    plan = plan_archive([s for s, _, _ in ready], **cfg.plan_options())
    works: list[SceneWork] = []
    for (s, job, report), grid in zip(ready, plan.grids, strict=True):
        report.units_total = len(grid)
        report.bands = None if job.bands is None else list(job.bands)
        works.append(SceneWork(s, grid, job, report, scene_token(s, cfg, model)))
    return works, plan


def read_ledger(works: Iterable[SceneWork], ledger: ChunkLedger) -> None:
    """Ask the ledger once per scene which of its units are done (``SceneWork.done``)."""
    for w in works:
        known = {u.unit_id for u in w.grid}
        w.done = frozenset(ledger.done_chunks(w.scene_id, w.token) & known)
        w.report.units_resumed = len(w.done)


def batches(
    works: Iterable[SceneWork], batch_size: int, is_open: Callable[[SceneWork], bool]
) -> Iterator[Batch]:
    """The pending units as batches, scene by scene; lazy.

    Within a scene, units of one input shape go together (the edge units of a scene have
    other shapes), in grid order, at most ``batch_size`` per batch, so the model runs a batch
    in one call. ``is_open(work)`` is asked before each batch: a failed scene gets no more.
    """
    for w in works:
        by_shape: dict[tuple[int, int], list[WorkUnit]] = {}
        for u in w.pending():
            by_shape.setdefault(u.input_shape, []).append(u)
        for units in by_shape.values():
            for i in range(0, len(units), batch_size):
                if not is_open(w):
                    break
                yield Batch(w.job, tuple(units[i : i + batch_size]))

"""The recorder: every result the executor streams back lands in the ledger, the manifest,
the progress bars and the per-actor stats, and a scene whose units are all written is
finalized (pyramid + metadata, on a worker).

A unit is recorded done in the ledger only from a :class:`BatchResult` that lists it as
written; a scene is ``ok`` only once its finalize succeeded. Whatever breaks the run as a
whole, no scene stays ``pending``: it fails with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import kind_of
from pipeline.execute import BatchResult, Executor, FinalizeResult, PoolEvent
from pipeline.run.progress import RunProgress
from pipeline.run.report import RunManifest, SceneReport
from pipeline.run.scheduler import ChunkLedger, SceneWork
from pipeline.state.integrity import PYRAMID_UNIT

__all__ = ["Recorder", "executor_section"]


class Recorder:
    """Records one run's results (see module docstring)."""

    def __init__(
        self,
        manifest: RunManifest,
        works: Iterable[SceneWork],
        ledger: ChunkLedger,
        executor: Executor,
        progress: RunProgress,
    ) -> None:
        self.manifest = manifest
        self.works = {w.scene_id: w for w in works}
        self.ledger = ledger
        self.executor = executor
        self.bar = progress
        self.class_names = [name for name, _ in executor.model.classes]
        self._finalizing: list[tuple[SceneWork, Future[FinalizeResult]]] = []
        self._started: set[str] = set()  # scenes whose finalize was sent

    # --- scenes ---------------------------------------------------------------------------
    def is_open(self, w: SceneWork) -> bool:
        """Should ``w`` get more batches? (Not once it failed.)"""
        return w.report.status != "failed"

    def start(self) -> None:
        """Account for what is known before the first batch: resumed units, failed scenes,
        and scenes the ledger already has complete (finalized right away)."""
        for w in self.works.values():
            self.bar.advance(windows=w.report.units_resumed)
            if w.report.status == "failed":
                self.bar.advance(scenes=1)
            self._maybe_finalize(w)

    def _maybe_finalize(self, w: SceneWork) -> None:
        r = w.report
        if w.scene_id in self._started or r.status == "failed":
            return
        if r.units_done + r.units_resumed < r.units_total:
            return
        self._started.add(w.scene_id)
        extra = {"run_id": self.manifest.run_id, "class_pixels": dict(r.class_pixels),
                 "finished": datetime.now(UTC).isoformat(timespec="seconds")}
        self._finalizing.append((w, self.executor.finalize(w.job, extra)))

    def drain(self, wait: bool = False) -> None:
        """Record finished finalizations (all of them, waiting, with ``wait``)."""
        for item in list(self._finalizing):
            if wait or item[1].done():
                self._finalizing.remove(item)
                self._finalized(*item)

    def _finalized(self, w: SceneWork, fut: Future[FinalizeResult]) -> None:
        r = w.report
        try:
            fin = fut.result()
            error, kind = fin.error, fin.error_kind
            if not error:  # the pyramid's checksums, beside its units' (pipeline.state.integrity)
                self.ledger.mark_done(w.info.scene_id, PYRAMID_UNIT, w.token,
                                      {"stored": fin.stored})
            r.timings["finalize"] = fin.seconds
            r.io_retries += fin.io_retries
            r.storage_retries += fin.storage_retries
        except Exception as e:  # the executor could not even run it
            error, kind = f"finalize failed: {type(e).__name__}: {e}", kind_of(e)
        if error:
            r.fail(error, kind)
        else:
            r.status = "ok"
        self.bar.advance(scenes=1)

    # --- results --------------------------------------------------------------------------
    def record(self, res: BatchResult) -> None:
        """One batch's outcome: ledger first (only written units), then report and progress."""
        w = self.works[res.scene_id]
        r = w.report
        r.io_retries += res.io_retries
        r.storage_retries += res.storage_retries
        for u in res.done:
            self.ledger.mark_done(
                res.scene_id, u.unit_id, w.token,
                {"pixels": u.pixels, "class_counts": list(u.class_counts), "stored": u.stored},
            )
            r.units_done += 1
            r.units_nodata += int(u.nodata)
            r.pixels += u.pixels
            _add_classes(r, u.class_counts, self.class_names)
        for stage, v in (("read", res.read_s), ("infer", res.infer_s), ("write", res.write_s)):
            r.timings[stage] += v
        self.bar.advance(windows=len(res.done), pixels=sum(u.pixels for u in res.done))
        self.bar.pool(self.executor.pool_status().describe())
        if res.error:
            was_failed = r.status == "failed"
            r.fail(res.error, res.error_kind)
            if not was_failed:
                self.bar.advance(scenes=1)
        self._maybe_finalize(w)
        self.drain()

    def pool_event(self, event: PoolEvent) -> None:
        """An actor joined or was lost: say so above the bars."""
        self.bar.say(event.message)
        self.bar.pool(self.executor.pool_status().describe())

    def abort(self, error: BaseException) -> None:
        """The run broke as a whole: every unfinished scene fails with why."""
        for w in self.works.values():
            if w.report.status == "pending":
                w.report.fail(f"run aborted: {type(error).__name__}: {error}")

    def close(self) -> None:
        """No scene stays pending (e.g. a run interrupted before all units came back)."""
        for w in self.works.values():
            if w.report.status == "pending":
                w.report.fail("not all units were processed")
        self.manifest.executor = executor_section(self.executor)


def _add_classes(r: SceneReport, counts: Iterable[int], names: list[str]) -> None:
    for k, n in enumerate(counts):
        if n:
            name = names[k] if k < len(names) else str(k)
            r.class_pixels[name] = r.class_pixels.get(name, 0) + n


def executor_section(executor: Any) -> dict[str, Any]:
    """The manifest's ``executor``: kind, the actors that ran (node, GPUs, units, busy)."""
    actors = executor.actor_stats()
    status = executor.pool_status()
    busy = sum(a.busy_s for a in actors)
    alive = sum(a.alive_s for a in actors)
    return {
        "kind": type(executor).__name__,
        "workers": len(actors),
        "gpu_ids": sorted({g for a in actors for g in a.gpu_ids}),
        "actors": [a.as_dict() for a in actors],
        "joined": status.joined,
        "lost": status.lost,
        "units_redone": status.units_redone,
        "busy_fraction": round(busy / alive, 4) if alive > 0 else 0.0,
    }

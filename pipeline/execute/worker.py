"""The per-window work every executor runs: read -> pad -> infer -> crop -> write.

:class:`WindowProcessor` splits a batch into three stages, :meth:`~WindowProcessor.load`,
:meth:`~WindowProcessor.infer` and :meth:`~WindowProcessor.store`, so that
:class:`~pipeline.execute.overlap.OverlappedProcessor` can run them on their own threads
(the next batch is read while the model runs, the previous one written behind it) and
:meth:`~WindowProcessor.process` can run them in a row. Both give the same bytes: the model
sees the same batches either way.

Nodata (contract C3): a window whose core is all nodata never reaches the model; its core is
written as label 0 / confidence 0 and counted (``UnitResult.nodata``). Other windows pass
``valid_mask=`` to the model and their nodata pixels come out 0 / 0. A NaN/Inf value at a
data pixel fails the unit with its position in scene coordinates.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import NonFiniteError, kind_of
from pipeline.execute.protocol import (
    Batch,
    BatchResult,
    FinalizeResult,
    Predictor,
    SceneJob,
    UnitResult,
    model_info,
)
from pipeline.nodata import valid_mask
from pipeline.plan import WorkUnit
from pipeline.retries import install as count_storage_retries
from pipeline.retries import retry_io
from pipeline.retries import take as retries_take
from pipeline.stitch import crop_core, model_input

__all__ = ["InferredBatch", "LoadedBatch", "WindowProcessor", "torch_threads"]

# Readers/writers kept open per worker. Units arrive scene by scene, so a few suffice; more
# would only hold file handles and zarr metadata of scenes long finished.
MAX_OPEN_SCENES = 4


@dataclass
class LoadedBatch:
    """A batch read and padded: what the model stage needs."""

    batch: Batch
    inputs: list[np.ndarray | None]  # padded model input; None: the core is all nodata
    masks: list[np.ndarray | None]  # valid mask of the padded input; None: all pixels valid
    read_s: float = 0.0
    error: str | None = None
    error_kind: str | None = None  # pipeline.errors kind of ``error``


@dataclass
class InferredBatch:
    """A batch through the model: what the write stage needs."""

    batch: Batch
    labels: list[np.ndarray | None] = field(default_factory=list)  # None: nodata core
    conf: list[np.ndarray | None] = field(default_factory=list)
    masks: list[np.ndarray | None] = field(default_factory=list)
    read_s: float = 0.0
    infer_s: float = 0.0
    error: str | None = None
    error_kind: str | None = None


def torch_threads() -> int | None:
    """torch's intra-op thread count in this thread (None when torch is not in use).

    Outputs depend on it (reduction order), so executors report it and the model thread of
    an overlapped processor sets it to the value of the thread that made the model.
    """
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _retry_fields() -> dict[str, int]:
    """This process's retries since its previous result (BatchResult/FinalizeResult fields)."""
    counts = retries_take()
    return {"io_retries": counts["io"], "storage_retries": counts["storage"]}


class WindowProcessor:
    """Read -> pad -> infer -> crop -> write for batches of units; thread-safe.

    The forward pass is serialised by a lock, so one model never runs two batches at once
    whichever threads call it.
    """

    def __init__(
        self,
        model: Predictor,
        *,
        io_retries: int = 3,
        io_backoff_s: float = 0.5,
        dask_scheduler: Any = "sync",
    ) -> None:
        self.model = model
        self.info = model_info(model)
        self.io_retries = io_retries
        self.io_backoff_s = io_backoff_s
        self.dask_scheduler = dask_scheduler
        count_storage_retries()  # S3-client retries in this worker go into the results
        self._predict_lock = threading.Lock()
        self._takes_mask = _accepts(model.predict, "valid_mask")
        self._cache_lock = threading.Lock()
        self._readers: OrderedDict[str, Any] = OrderedDict()
        self._writers: OrderedDict[str, Any] = OrderedDict()

    def _retry(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn``; storage hiccups are retried with exponential backoff (counted)."""
        return retry_io(fn, self.io_retries, self.io_backoff_s)

    # --- cached handles ----------------------------------------------------------------
    def _cached(self, cache: OrderedDict[str, Any], key: str, make: Callable[[], Any]) -> Any:
        with self._cache_lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        obj = self._retry(make)
        with self._cache_lock:
            cache[key] = obj
            while len(cache) > MAX_OPEN_SCENES:
                cache.popitem(last=False)
        return obj

    def _reader(self, job: SceneJob) -> Any:
        from pipeline.io.readers import open_scene

        def make() -> Any:
            reader = open_scene(job.info, job.storage_options)
            if job.read_path == "dask":
                return reader.to_dask(job.read_chunk)
            return reader

        # Keyed by what the handle reads, not the scene id alone: an actor outlives runs (a
        # reused executor, nightly), and the same id may name another archive or a changed scene.
        key = f"{job.scene_id}\0{job.read_path}\0{job.info.url}\0{job.info.fingerprint}"
        return self._cached(self._readers, key, make)

    def _writer(self, job: SceneJob) -> Any:
        from pipeline.io.omezarr import SceneWriter

        return self._cached(
            self._writers,
            f"{job.scene_id}\0{job.output_url}",  # one run's output must never get another's
            lambda: SceneWriter.open(job.output_url, job.scene_id, job.storage_options),
        )

    def forget(self, scene_id: str) -> None:
        """Drop the cached reader/writer of a scene (after it is finalized)."""
        with self._cache_lock:
            for cache in (self._readers, self._writers):
                for key in [k for k in cache if k.split("\0", 1)[0] == scene_id]:
                    del cache[key]

    # --- stage 1: read -------------------------------------------------------------------
    def read_window(self, job: SceneJob, unit: WorkUnit) -> np.ndarray:
        """The in-bounds window ``(C, h, w)`` of ``unit``, bands selected."""
        src = self._reader(job)
        w = unit.window
        if job.read_path == "dask":
            darr = src if job.bands is None else src[list(job.bands)]
            graph = darr[:, w.y0 : w.y1, w.x0 : w.x1]
            return self._retry(lambda: np.asarray(graph.compute(scheduler=self.dask_scheduler)))
        return self._retry(lambda: src.read(w.y0, w.y1, w.x0, w.x1, bands=job.bands))

    def load(self, batch: Batch) -> LoadedBatch:
        """Read and pad every window of ``batch``; errors are kept, not raised."""
        t = time.perf_counter()
        out = LoadedBatch(batch, [], [])
        current = batch.units[0].unit_id
        try:
            for u in batch.units:
                current = u.unit_id
                x = model_input(self.read_window(batch.job, u), u)
                mask = valid_mask(x, batch.job.nodata)
                c = u.core_in_input
                if mask is not None and not mask[c.y0 : c.y1, c.x0 : c.x1].any():
                    out.inputs.append(None)  # nothing to classify in the core: skip the model
                else:
                    out.inputs.append(x)
                out.masks.append(mask)
        except Exception as exc:  # reported per scene by the driver; the worker lives on
            out.error, out.error_kind = f"read of {current} failed: {_describe(exc)}", kind_of(exc)
        out.read_s = time.perf_counter() - t
        return out

    # --- stage 2: the model --------------------------------------------------------------
    def infer(self, loaded: LoadedBatch) -> InferredBatch:
        """Labels (and confidence) of a loaded batch; the model's time is ``infer_s``."""
        out = InferredBatch(loaded.batch, masks=loaded.masks, read_s=loaded.read_s)
        if loaded.error is not None:
            out.error, out.error_kind = loaded.error, loaded.error_kind
            return out
        job, units = loaded.batch.job, loaded.batch.units
        current = units[0].unit_id
        try:
            for u, x, m in zip(units, loaded.inputs, loaded.masks, strict=True):
                if x is not None and x.dtype.kind == "f":
                    current = u.unit_id
                    _check_finite(job.scene_id, u, x, m)
            current = units[0].unit_id
            out.labels, out.conf, out.infer_s = self.predict(loaded.inputs, job, loaded.masks)
        except Exception as exc:
            out.error = f"inference of {current} failed: {_describe(exc)}"
            out.error_kind = kind_of(exc)
        return out

    def predict(
        self,
        inputs: Sequence[np.ndarray | None],
        job: SceneJob,
        masks: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[list[np.ndarray | None], list[np.ndarray | None], float]:
        """Labels and confidence per input (None stays None), and the seconds in the model.

        ``masks``: valid masks per input (None: all pixels valid). Same-shape inputs share a
        forward pass. Time waiting for the model lock is not counted.
        """
        masks = masks if masks is not None else [None] * len(inputs)
        busy = 0.0
        labels: list[np.ndarray | None] = [None] * len(inputs)
        conf: list[np.ndarray | None] = [None] * len(inputs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):
            if x is not None:
                groups.setdefault(tuple(x.shape), []).append(i)
        for idx in groups.values():
            kw: dict[str, Any] = {"return_confidence": job.confidence}
            if job.value_max is not None:
                kw["value_max"] = job.value_max
            stack = np.stack([inputs[i] for i in idx])
            if any(masks[i] is not None for i in idx):
                valid = np.stack([_full_mask(masks[i], inputs[i]) for i in idx])
                if self._takes_mask:
                    kw["valid_mask"] = valid
                else:  # a predictor without valid_mask: fill values must not reach it either
                    stack = np.where(valid[:, None], stack, np.zeros((), stack.dtype))
            with self._predict_lock:
                t = time.perf_counter()
                pred = self.model.predict(stack, **kw)
                busy += time.perf_counter() - t
            for k, i in enumerate(idx):
                labels[i] = pred.labels[k]
                conf[i] = pred.confidence[k] if job.confidence else None
        return labels, conf, busy

    # --- stage 3: write ------------------------------------------------------------------
    def store(self, inferred: InferredBatch) -> BatchResult:
        """Crop and write every core; returns what was written (errors included, not raised)."""
        batch = inferred.batch
        job, units = batch.job, batch.units
        done: list[UnitResult] = []
        error, error_kind = inferred.error, inferred.error_kind
        t = time.perf_counter()
        if error is None:
            current = units[0].unit_id
            try:
                writer = self._writer(job)
                for u, lab, cf, m in zip(
                    units, inferred.labels, inferred.conf, inferred.masks, strict=True
                ):
                    current = u.unit_id
                    done.append(self._write_unit(writer, job, u, lab, cf, m))
            except Exception as exc:
                error, error_kind = f"write of {current} failed: {_describe(exc)}", kind_of(exc)
        written = {r.unit_id for r in done}
        return BatchResult(
            scene_id=job.scene_id,
            done=tuple(done),
            failed_units=tuple(u.unit_id for u in units if u.unit_id not in written),
            error=error,
            error_kind=error_kind,
            read_s=inferred.read_s,
            infer_s=inferred.infer_s,
            write_s=time.perf_counter() - t,
            worker=os.getpid(),
            **_retry_fields(),
        )

    def _write_unit(
        self,
        writer: Any,
        job: SceneJob,
        u: WorkUnit,
        lab: np.ndarray | None,
        cf: np.ndarray | None,
        mask: np.ndarray | None,
    ) -> UnitResult:
        shape = (u.core.height, u.core.width)
        if lab is None:  # all-nodata core: zeros, never seen by the model
            core, core_conf = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
            core_mask = np.zeros(shape, bool)
        else:
            core = np.array(crop_core(lab, u), dtype=np.uint8, order="C")
            core_conf = None if cf is None else np.array(crop_core(cf, u), np.uint8, order="C")
            core_mask = None if mask is None else crop_core(mask, u)
            if core_mask is not None:  # whatever the predictor did, nodata is 0 / 0
                core[~core_mask] = 0
                if core_conf is not None:
                    core_conf[~core_mask] = 0
        if not job.confidence:
            core_conf = None
        stored = self._retry(lambda: writer.write_block(u.core.y0, u.core.x0, core, core_conf))
        counted = core if core_mask is None else core[core_mask]
        counts = np.bincount(counted.ravel(), minlength=self.info.num_classes)
        return UnitResult(
            u.unit_id, u.row, u.col, core.size, tuple(counts.tolist()), nodata=lab is None,
            stored=stored,
        )

    # --- whole batches -------------------------------------------------------------------
    def process(self, batch: Batch) -> BatchResult:
        """Run one batch through the three stages in a row (errors returned, not raised)."""
        return self.store(self.infer(self.load(batch)))

    def finalize(self, job: SceneJob, extra_attrs: dict[str, Any]) -> FinalizeResult:
        """Pyramid + metadata of a finished scene; errors returned, not raised."""
        t = time.perf_counter()
        try:
            self.forget(job.scene_id)
            from pipeline.io.omezarr import SceneWriter

            # Opening is retried too: it reads the store's metadata (a storage request).
            stored = self._retry(
                lambda: SceneWriter.open(
                    job.output_url, job.scene_id, job.storage_options
                ).finalize(extra_attrs)
            )
            return FinalizeResult(job.scene_id, time.perf_counter() - t, stored=stored,
                                  **_retry_fields())
        except Exception as exc:
            return FinalizeResult(
                job.scene_id,
                time.perf_counter() - t,
                f"finalize failed: {_describe(exc)}",
                error_kind=kind_of(exc),
                **_retry_fields(),
            )


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _full_mask(mask: np.ndarray | None, x: np.ndarray | None) -> np.ndarray:
    assert x is not None
    return np.ones(x.shape[-2:], bool) if mask is None else mask


def _check_finite(scene_id: str, u: WorkUnit, x: np.ndarray, mask: np.ndarray | None) -> None:
    """Raise :class:`NonFiniteError` for NaN/Inf at a data pixel of the in-bounds window.

    Only the in-bounds part is searched: the reflected padding repeats its pixels.
    """
    p, w = u.pad, u.window
    inside = x[:, p.top : p.top + w.height, p.left : p.left + w.width]
    bad = ~np.isfinite(inside)
    if mask is not None:
        bad &= mask[p.top : p.top + w.height, p.left : p.left + w.width]
    if bad.any():
        band, y, xx = (int(v) for v in np.argwhere(bad)[0])
        raise NonFiniteError(scene_id, band, w.y0 + y, w.x0 + xx)

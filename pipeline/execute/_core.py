"""What every executor runs: the messages it passes and the per-window work itself.

Only references travel between driver and workers: a :class:`SceneJob` (scene metadata, output
URL, storage options) and :class:`~pipeline.plan.WorkUnit` boxes. Pixels are read, inferred,
cropped and written inside :class:`WindowProcessor`, which the Ray actors and the in-process
executor both use, so their outputs are identical by construction.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pipeline.errors import NonFiniteError
from pipeline.nodata import valid_mask
from pipeline.plan import WorkUnit
from pipeline.retries import install as count_storage_retries
from pipeline.retries import retry_io
from pipeline.retries import take as retries_take
from pipeline.stitch import crop_core, model_input

__all__ = [
    "Batch",
    "BatchResult",
    "Executor",
    "FinalizeResult",
    "ModelInfo",
    "Predictor",
    "SceneJob",
    "SegmenterLoader",
    "UnitResult",
    "WindowProcessor",
    "WorkerInfo",
    "model_info",
]

# Readers/writers kept open per worker. Units arrive scene by scene, so a few suffice; more
# would only hold file handles and zarr metadata of scenes long finished.
MAX_OPEN_SCENES = 4


@runtime_checkable
class Predictor(Protocol):
    """The slice of ``hgn_model.Segmenter`` the pipeline uses."""

    config: Any  # CheckpointConfig: arch, num_classes, classes, in_channels, sha256
    num_classes: int
    in_channels: int

    def predict(self, images: np.ndarray, return_confidence: bool = False, **kw: Any) -> Any: ...


@dataclass(frozen=True)
class SegmenterLoader:
    """Loads ``Segmenter.from_checkpoint(checkpoint)`` where it is called (inside a worker)."""

    checkpoint: str

    def __call__(self, device: str = "auto", threads: int | None = None) -> Predictor:
        from hgn_model import Segmenter  # torch is imported by workers only when needed

        return Segmenter.from_checkpoint(self.checkpoint, device=device, threads=threads)


@dataclass(frozen=True)
class ModelInfo:
    """Model facts the driver needs (output metadata, band checks, provenance)."""

    arch: str
    num_classes: int
    in_channels: int
    classes: tuple[tuple[str, tuple[int, int, int, int]], ...]
    sha256: str
    device: str
    input: Any = None  # the checkpoint's InputSpec (value ranges); None for stand-in models


def model_info(model: Predictor) -> ModelInfo:
    cfg = model.config
    return ModelInfo(
        arch=str(cfg.arch),
        num_classes=int(model.num_classes),
        in_channels=int(model.in_channels),
        classes=tuple((str(c.name), tuple(int(v) for v in c.color)) for c in cfg.classes),
        sha256=str(cfg.sha256),
        device=str(getattr(model, "device", "cpu")),
        input=getattr(cfg, "input", None),
    )


@dataclass(frozen=True)
class WorkerInfo:
    """Where a model instance lives (for logs, tests of GPU pinning, RSS accounting)."""

    pid: int
    node: str
    gpu_ids: tuple[str, ...]
    cuda_visible_devices: str | None
    model: ModelInfo


@dataclass(frozen=True)
class SceneJob:
    """Everything a worker needs to read one scene and write its output. Small, picklable."""

    info: Any  # pipeline.catalog.SceneInfo
    output_url: str
    bands: tuple[int, ...] | None = None
    value_max: float | None = None
    confidence: bool = True
    read_path: str = "actor"  # "actor" | "dask"
    read_chunk: int = 2048  # dask chunk side for read_path="dask"
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def scene_id(self) -> str:
        return str(self.info.scene_id)


@dataclass(frozen=True)
class Batch:
    """Units of one scene processed by one worker call."""

    job: SceneJob
    units: tuple[WorkUnit, ...]


@dataclass(frozen=True)
class UnitResult:
    unit_id: str
    row: int
    col: int
    pixels: int  # core pixels written
    class_counts: tuple[int, ...]  # core pixels per class id
    nodata: bool = False  # every core pixel was nodata: written as 0 without inference


@dataclass(frozen=True)
class BatchResult:
    """Outcome of a batch; ``done`` lists units whose write succeeded (even if others failed)."""

    scene_id: str
    done: tuple[UnitResult, ...]
    failed_units: tuple[str, ...] = ()
    error: str | None = None
    read_s: float = 0.0
    infer_s: float = 0.0
    write_s: float = 0.0
    worker: int = 0  # pid
    # Storage retries absorbed in the worker since its previous result (pipeline.retries):
    io_retries: int = 0  # whole reads/writes retried by the pipeline (io_retries config)
    storage_retries: int = 0  # requests retried inside the S3 client (botocore / s3fs)


@dataclass(frozen=True)
class FinalizeResult:
    scene_id: str
    seconds: float
    error: str | None = None
    io_retries: int = 0
    storage_retries: int = 0


class Executor(Protocol):
    """Runs batches with bounded in-flight work, streaming results back in completion order.

    Use as a context manager (``start`` on enter, ``close`` on exit).
    """

    model: ModelInfo
    workers: list[WorkerInfo]

    def start(self) -> list[WorkerInfo]: ...

    def map(self, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        """Consume ``batches`` lazily (never more than the in-flight bound ahead)."""
        ...

    def finalize(self, job: SceneJob, extra_attrs: dict[str, Any]) -> Future[FinalizeResult]:
        """Build the pyramid + metadata of a finished scene, off the driver where possible."""
        ...

    def close(self) -> None: ...


def _retry(fn: Callable[[], Any], retries: int, backoff_s: float) -> Any:
    """Call ``fn``; on OSError (storage hiccups) retry with exponential backoff (counted)."""
    return retry_io(fn, retries, backoff_s)


def _retry_fields() -> dict[str, int]:
    """This process's retries since its previous result (BatchResult/FinalizeResult fields)."""
    counts = retries_take()
    return {"io_retries": counts["io"], "storage_retries": counts["storage"]}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class WindowProcessor:
    """Read -> pad -> infer -> crop -> write for batches of units; thread-safe.

    Reads and writes of concurrent calls overlap (a threaded Ray actor runs several); the
    forward pass is serialised by a lock so one model never runs two batches at once.
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
        self._cache_lock = threading.Lock()
        self._readers: OrderedDict[str, Any] = OrderedDict()
        self._writers: OrderedDict[str, Any] = OrderedDict()

    # --- cached handles ----------------------------------------------------------------
    def _cached(self, cache: OrderedDict[str, Any], key: str, make: Callable[[], Any]) -> Any:
        with self._cache_lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        obj = _retry(make, self.io_retries, self.io_backoff_s)
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

    # --- the work ------------------------------------------------------------------------
    def read_window(self, job: SceneJob, unit: WorkUnit) -> np.ndarray:
        """The in-bounds window ``(C, h, w)`` of ``unit``, bands selected."""
        src = self._reader(job)
        w = unit.window
        if job.read_path == "dask":
            darr = src if job.bands is None else src[list(job.bands)]
            graph = darr[:, w.y0 : w.y1, w.x0 : w.x1]
            return _retry(
                lambda: np.asarray(graph.compute(scheduler=self.dask_scheduler)),
                self.io_retries,
                self.io_backoff_s,
            )
        return _retry(
            lambda: src.read(w.y0, w.y1, w.x0, w.x1, bands=job.bands),
            self.io_retries,
            self.io_backoff_s,
        )

    def predict(
        self,
        inputs: Sequence[np.ndarray],
        job: SceneJob,
        masks: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray | None], float]:
        """Labels (and confidence) for padded inputs, and the seconds spent in the model.

        Same-shape inputs share a forward pass. ``masks``: per input, None (all data) or the
        padded ``(H, W)`` valid mask, passed as ``valid_mask=``; nodata pixels come out label
        0 and confidence 0. Time waiting for the model (another call of this threaded worker
        holds it) is not counted.
        """
        masks = list(masks) if masks is not None else [None] * len(inputs)
        busy = 0.0
        labels: list[np.ndarray] = [np.empty(0)] * len(inputs)
        conf: list[np.ndarray | None] = [None] * len(inputs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(tuple(x.shape), []).append(i)
        kw: dict[str, Any] = {"return_confidence": job.confidence}
        if job.value_max is not None:
            kw["value_max"] = job.value_max
        for idx in groups.values():
            stack = np.stack([inputs[i] for i in idx])
            group_kw = dict(kw)
            if any(masks[i] is not None for i in idx):
                ones = np.ones(stack.shape[-2:], bool)
                group_kw["valid_mask"] = np.stack(
                    [m if (m := masks[i]) is not None else ones for i in idx])
            with self._predict_lock:
                t = time.perf_counter()
                out = self.model.predict(stack, **group_kw)
                busy += time.perf_counter() - t
            for k, i in enumerate(idx):
                labels[i] = out.labels[k]
                conf[i] = out.confidence[k] if job.confidence else None
                mask = masks[i]
                if mask is not None:  # the output contract holds for any Predictor
                    labels[i] = np.where(mask, labels[i], 0).astype(np.uint8)
                    if conf[i] is not None:
                        conf[i] = np.where(mask, conf[i], 0).astype(np.uint8)
        return labels, conf, busy

    @staticmethod
    def _non_finite(inputs: Sequence[np.ndarray], masks: Sequence[np.ndarray | None],
                    units: Sequence[WorkUnit], scene_id: str) -> NonFiniteError | None:
        """The first NaN/Inf data pixel of the inputs, in scene coordinates (None if none)."""
        for x, m, u in zip(inputs, masks, units, strict=True):
            if x.dtype.kind != "f":
                continue
            p, w = u.pad, u.window
            own = x[:, p.top : p.top + w.height, p.left : p.left + w.width]  # no reflections
            bad = ~np.isfinite(own)
            if m is not None:
                bad &= m[p.top : p.top + w.height, p.left : p.left + w.width][None]
            if bad.any():
                band, y, col = (int(v) for v in np.argwhere(bad)[0])
                return NonFiniteError(scene_id, band, w.y0 + y, w.x0 + col)
        return None

    def _infer(self, job: SceneJob, units: Sequence[WorkUnit], inputs: list[np.ndarray],
               masks: list[np.ndarray | None]) -> tuple[list[Any], list[Any], list[bool], float]:
        """Predict the units that hold data; all-nodata cores become zeros, never inferred."""
        empty = [m is not None and not crop_core(m, u).any()
                 for u, m in zip(units, masks, strict=True)]
        live = [i for i, e in enumerate(empty) if not e]
        labels: list[Any] = [None] * len(units)
        conf: list[Any] = [None] * len(units)
        busy = 0.0
        if live:
            picked = ([inputs[i] for i in live], [masks[i] for i in live])
            try:
                got, got_conf, busy = self.predict(picked[0], job, picked[1])
            except Exception:
                bad = self._non_finite(*picked, [units[i] for i in live], job.scene_id)
                if bad is not None:  # name the pixel in scene coordinates, not the window's
                    raise bad from None
                raise
            for i, lab, cf in zip(live, got, got_conf, strict=True):
                labels[i], conf[i] = lab, cf
        for i in (i for i, e in enumerate(empty) if e):
            labels[i] = np.zeros(inputs[i].shape[-2:], np.uint8)
            conf[i] = np.zeros_like(labels[i]) if job.confidence else None
        return labels, conf, empty, busy

    def process(self, batch: Batch) -> BatchResult:
        """Run one batch. Errors are returned (with the units already written), not raised.

        Nodata (``job.info.nodata``, and NaN) is masked per window: a unit whose core holds
        no data is written as label 0 / confidence 0 without inference (``UnitResult.nodata``),
        the others get ``valid_mask=`` and their nodata pixels come out 0.
        """
        job, units = batch.job, batch.units
        timings = {"read": 0.0, "infer": 0.0, "write": 0.0}
        done: list[UnitResult] = []
        stage, current = "read", units[0].unit_id
        try:
            t = time.perf_counter()
            inputs: list[np.ndarray] = []
            masks: list[np.ndarray | None] = []
            for u in units:
                current = u.unit_id
                window = self.read_window(job, u)
                mask = valid_mask(window, job.info.nodata)
                inputs.append(model_input(window, u))
                masks.append(None if mask is None else model_input(mask[None], u)[0])
            timings["read"] = time.perf_counter() - t
            stage, current = "inference", units[0].unit_id
            try:
                labels, conf, empty, timings["infer"] = self._infer(job, units, inputs, masks)
            except NonFiniteError as exc:
                current = next((u.unit_id for u in units if u.window.y0 <= exc.y < u.window.y1
                                and u.window.x0 <= exc.x < u.window.x1), current)
                raise
            stage, t = "write", time.perf_counter()
            writer = self._writer(job)
            for u, lab, cf, nodata in zip(units, labels, conf, empty, strict=True):
                current = u.unit_id
                core = np.ascontiguousarray(crop_core(lab, u))
                core_conf = None if cf is None else np.ascontiguousarray(crop_core(cf, u))
                _retry(
                    lambda u=u, core=core, core_conf=core_conf: writer.write_block(
                        u.core.y0, u.core.x0, core, core_conf
                    ),
                    self.io_retries,
                    self.io_backoff_s,
                )
                counts = np.bincount(core.ravel(), minlength=self.info.num_classes)
                done.append(UnitResult(u.unit_id, u.row, u.col, core.size,
                                       tuple(counts.tolist()), nodata))
            timings["write"] = time.perf_counter() - t
            error = None
        except Exception as exc:  # reported per scene by the driver; the worker lives on
            error = f"{stage} of {current} failed: {_describe(exc)}"
        written = {r.unit_id for r in done}
        return BatchResult(
            scene_id=job.scene_id,
            done=tuple(done),
            failed_units=tuple(u.unit_id for u in units if u.unit_id not in written),
            error=error,
            read_s=timings["read"],
            infer_s=timings["infer"],
            write_s=timings["write"],
            worker=os.getpid(),
            **_retry_fields(),
        )

    def finalize(self, job: SceneJob, extra_attrs: dict[str, Any]) -> FinalizeResult:
        """Pyramid + metadata of a finished scene; errors returned, not raised."""
        t = time.perf_counter()
        try:
            self.forget(job.scene_id)
            from pipeline.io.omezarr import SceneWriter

            # Opening is retried too: it reads the store's metadata (a storage request).
            _retry(
                lambda: SceneWriter.open(
                    job.output_url, job.scene_id, job.storage_options
                ).finalize(extra_attrs),
                self.io_retries,
                self.io_backoff_s,
            )
            return FinalizeResult(job.scene_id, time.perf_counter() - t, **_retry_fields())
        except Exception as exc:
            return FinalizeResult(
                job.scene_id,
                time.perf_counter() - t,
                f"finalize failed: {_describe(exc)}",
                **_retry_fields(),
            )

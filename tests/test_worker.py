"""WindowProcessor and OverlappedProcessor: nodata (contract C3), NaN positions, overlap."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from _standin import CLASSES, TinySegmenter, smooth_image, write_zarr_scene

from pipeline.catalog import catalog
from pipeline.execute import Batch, OverlappedProcessor, SceneJob, WindowProcessor
from pipeline.io.omezarr import SceneWriter
from pipeline.plan import plan_scene

CHUNK, HALO = 64, 8


class _Recording(TinySegmenter):
    """The stand-in, remembering what reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[tuple[int, ...], bool]] = []  # (batch shape, valid_mask given)

    def predict(self, images, **kw):
        self.seen.append((images.shape, kw.get("valid_mask") is not None))
        return super().predict(images, **kw)


@dataclass(frozen=True)
class _Declared:
    """A SceneInfo with a declared nodata value (contract C2's ``SceneInfo.nodata``)."""

    base: object
    nodata: float | None

    def __getattr__(self, name: str):
        return getattr(self.base, name)


def _scene(tmp_path: Path, image: np.ndarray, name: str = "s") -> tuple[object, str]:
    root, out = tmp_path / "archive", tmp_path / "out"
    write_zarr_scene(root, name, image, chunks=CHUNK)
    info = catalog(str(root)).get(name)
    _, h, w = image.shape
    SceneWriter.create(str(out), name, h, w, CHUNK, CLASSES, {}, confidence=True)
    return info, str(out)


def _run(proc: WindowProcessor, info: object, out: str, batch_size: int = 2):
    grid = plan_scene(info.scene_id, info.height, info.width, chunk=CHUNK, halo=HALO)
    job = SceneJob(info=info, output_url=out)
    units = list(grid)
    results = [proc.process(Batch(job, tuple(units[i:i + batch_size])))
               for i in range(0, len(units), batch_size)]
    w = SceneWriter.open(out, info.scene_id)
    return results, w.read_level(0), w.read_level(0, "confidence")


def test_nodata_windows_skip_the_model_and_nodata_pixels_come_out_zero(tmp_path):
    img = smooth_image(3, 3, 128, 192)  # 2 x 3 units of 64
    img[:, :64, :64] = 0  # unit r0c0: all nodata (core and halo inside the scene)
    img[:, 100:110, 150:160] = 0  # a hole inside unit r1c2
    img[0, 5, 100] = 0  # one band only at 0: a data pixel
    base, out = _scene(tmp_path, img)
    info = _Declared(base, 0)
    model = _Recording()
    results, labels, conf = _run(WindowProcessor(model), info, out, batch_size=1)
    assert all(r.error is None for r in results), [r.error for r in results]
    done = {u.unit_id: u for r in results for u in r.done}
    assert len(done) == 6
    assert done["s#r0c0"].nodata and not any(u.nodata for k, u in done.items() if k != "s#r0c0")
    assert sum(done["s#r0c0"].class_counts) == 0  # nodata is no class
    assert sum(done["s#r1c2"].class_counts) == 64 * 64 - 100
    # 5 windows reached the model, and only those holding nodata came with a mask (r0c2's
    # window holds none; the others reach the nodata corner or the hole).
    assert sum(shape[0] for shape, _ in model.seen) == 5
    masked = [m for _, m in model.seen]
    assert any(masked) and not all(masked)
    nodata = np.all(img == 0, axis=0)
    assert (labels[nodata] == 0).all() and (conf[nodata] == 0).all()
    assert (conf[~nodata] > 0).all()
    assert not nodata[5, 100] and conf[5, 100] > 0


def test_all_nan_pixels_are_nodata_and_a_stray_nan_is_named_in_scene_coordinates(tmp_path):
    img = smooth_image(4, 3, 128, 128, "float32")
    img[:, 70:90, 70:90] = np.nan  # all bands NaN: nodata (GDAL's convention)
    _, out = _scene(tmp_path, img)
    info = catalog(str(tmp_path / "archive")).get("s")
    results, labels, conf = _run(WindowProcessor(TinySegmenter()), info, out)
    assert all(r.error is None for r in results), [r.error for r in results]
    assert (labels[70:90, 70:90] == 0).all() and (conf[70:90, 70:90] == 0).all()

    bad = img.copy()
    bad[1, 100, 37] = np.inf  # one band: a data pixel with a non-finite value
    _, out2 = _scene(tmp_path / "2", bad)
    info2 = catalog(str(tmp_path / "2" / "archive")).get("s")
    results, _, _ = _run(WindowProcessor(TinySegmenter()), info2, out2, batch_size=1)
    errors = [r.error for r in results if r.error]
    # The unit whose window holds it fails first (its halo reaches row 100 too).
    assert errors and all("band 1, y=100, x=37 (scene pixel coordinates)" in e for e in errors)
    assert errors[0].startswith("inference of s#r1c0 failed: NonFiniteError: scene 's'")
    assert "`nodata:` in the run config" in errors[0]


class _Timed(WindowProcessor):
    """A processor whose stages only sleep and log when they run (no pixels)."""

    def __init__(self, read_s: float, infer_s: float, write_s: float) -> None:
        self.t = (read_s, infer_s, write_s)
        self.log: list[tuple[str, int, float, float]] = []
        self.lock = threading.Lock()

    def _stage(self, name: str, k: int, seconds: float) -> None:
        t = time.perf_counter()
        time.sleep(seconds)
        with self.lock:
            self.log.append((name, k, t, time.perf_counter()))

    def load(self, batch):
        self._stage("read", batch.units, self.t[0])
        return batch

    def infer(self, loaded):
        self._stage("infer", loaded.units, self.t[1])
        return loaded

    def store(self, inferred):
        from pipeline.execute import BatchResult

        self._stage("write", inferred.units, self.t[2])
        return BatchResult(str(inferred.units), (), infer_s=self.t[1])


def test_overlap_reads_ahead_writes_behind_and_keeps_backpressure():
    proc = _Timed(read_s=0.05, infer_s=0.1, write_s=0.05)
    runner = OverlappedProcessor(proc, prefetch=1, write_behind=1)
    futures = [runner.submit(Batch(None, k)) for k in range(8)]  # type: ignore[arg-type]
    results = [f.result(timeout=10) for f in futures]
    runner.close()
    assert [r.scene_id for r in results] == [str(k) for k in range(8)]  # in order
    span = {(name, k): (t0, t1) for name, k, t0, t1 in proc.log}
    for k in range(1, 7):
        infer = span[("infer", k)]
        # While the model runs batch k, batch k+1 is read and batch k-1 written.
        assert span[("read", k + 1)][0] < infer[1], k
        assert span[("write", k - 1)][0] < infer[1], k
        # Backpressure: the reader stays a bounded number of batches ahead (one queued, one
        # in hand, one just unblocked), never as far as the 8 submitted.
        ahead = [j for j in range(8) if span[("read", j)][0] < infer[0]]
        assert len(ahead) <= k + 3, (k, ahead)


def test_overlapped_and_in_a_row_write_the_same_bytes(tmp_path):
    img = smooth_image(5, 3, 150, 200)
    info, out = _scene(tmp_path / "a", img)
    _, labels_a, conf_a = _run(WindowProcessor(TinySegmenter()), info, out)
    info_b, out_b = _scene(tmp_path / "b", img)
    runner = OverlappedProcessor(WindowProcessor(TinySegmenter()))
    grid = plan_scene("s", 150, 200, chunk=CHUNK, halo=HALO)
    job = SceneJob(info=info_b, output_url=out_b)
    futures = [runner.submit(Batch(job, (u,))) for u in grid]
    assert all(f.result(timeout=30).error is None for f in futures)
    runner.close()
    w = SceneWriter.open(out_b, "s")
    np.testing.assert_array_equal(w.read_level(0), labels_a)
    np.testing.assert_array_equal(w.read_level(0, "confidence"), conf_a)


def test_a_bug_in_a_stage_fails_that_batch_not_the_threads():
    class Broken(_Timed):
        def infer(self, loaded):
            if loaded.units == 1:
                raise RuntimeError("boom")
            return super().infer(loaded)

    runner = OverlappedProcessor(Broken(0, 0, 0))
    futures = [runner.submit(Batch(None, k)) for k in range(3)]  # type: ignore[arg-type]
    assert futures[0].result(timeout=5).scene_id == "0"
    with pytest.raises(RuntimeError, match="boom"):
        futures[1].result(timeout=5)
    assert futures[2].result(timeout=5).scene_id == "2"
    runner.close()
    with pytest.raises(RuntimeError, match="after close"):
        runner.submit(Batch(None, 9))  # type: ignore[arg-type]


def test_declared_nodata_reaches_the_worker_through_the_job():
    info = _Declared(object(), -9999.0)
    assert SceneJob(info=info, output_url="x").nodata == -9999.0
    assert SceneJob(info=replace(_Declared(object(), None)), output_url="x").nodata is None

"""Results carry an error kind: permanent errors fail at once, transient ones are retried.

End to end through ``run_pipeline`` with the in-process executor: a corrupt chunk (a codec
error) and a scene that changed since it was catalogued are not retried; a reader that drops
its connection twice is retried and the scene finishes; one that keeps dropping it fails with
kind ``transient``. All pipeline errors live in :mod:`pipeline.errors`.
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
from _standin import TinyLoader, smooth_image, write_zarr_scene

import pipeline.errors as errors_mod
from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.io import readers
from pipeline.run import run_pipeline


def _cfg(**kw):
    base = dict(chunk=128, halo=8, batch_size=1, checkpoint="unused-standin", io_retries=3,
                io_backoff_s=0.01)
    return load_config(overrides={**base, **kw})


def _run(archive: Path, out: Path, **kw):
    cfg = _cfg(**kw)
    with LocalExecutor(TinyLoader(), io_retries=cfg.io_retries,
                       io_backoff_s=cfg.io_backoff_s) as ex:
        return run_pipeline(str(archive), str(out), cfg, executor=ex, run_id="k")


def _scene(res, sid):
    return next(s for s in res.manifest.scenes if s.scene_id == sid)


def test_corrupt_chunk_fails_at_once_as_permanent(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    write_zarr_scene(archive, "bad", smooth_image(1, 3, 200, 200), chunks=100)
    (archive / "bad.zarr/image/c/0/1/1").write_bytes(b"\x00not zstd" * 5)
    rep = _scene(_run(archive, tmp_path / "out"), "bad")
    assert rep.status == "failed" and rep.error_kind == "permanent", rep
    assert rep.io_retries == 0, "a codec error was retried as if storage had hiccuped"


def test_dropped_connections_are_retried_then_the_scene_finishes(tmp_path, monkeypatch) -> None:
    archive = tmp_path / "archive"
    write_zarr_scene(archive, "flaky", smooth_image(2, 3, 100, 120))
    real, failures = readers.SceneReader.read, {"left": 2}

    def read(self, *a, **kw):
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
        return real(self, *a, **kw)

    monkeypatch.setattr(readers.SceneReader, "read", read)
    rep = _scene(_run(archive, tmp_path / "out"), "flaky")
    assert rep.status == "ok" and rep.io_retries == 2, rep


def test_transient_error_that_persists_is_reported_as_transient(tmp_path, monkeypatch) -> None:
    archive = tmp_path / "archive"
    write_zarr_scene(archive, "down", smooth_image(3, 3, 100, 120))

    def read(self, *a, **kw):
        raise TimeoutError("read timed out")

    monkeypatch.setattr(readers.SceneReader, "read", read)
    rep = _scene(_run(archive, tmp_path / "out", io_retries=2), "down")
    assert rep.status == "failed" and rep.error_kind == "transient" and rep.io_retries == 2


def test_every_pipeline_error_lives_in_errors_py() -> None:
    import importlib
    import pkgutil

    import pipeline

    for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if isinstance(obj, type) and issubclass(obj, errors_mod.PipelineError):
                assert obj.__module__ == "pipeline.errors", f"{info.name}.{name}"


def test_readers_and_stitching_raise_pipeline_errors() -> None:
    from pipeline.nodata import valid_mask
    from pipeline.plan import plan_scene
    from pipeline.stitch import model_input

    unit = plan_scene("s", 10, 10, chunk=8, halo=2).unit(0, 0)
    with pytest.raises(errors_mod.WindowError):
        model_input(np.zeros((3, 4, 4)), unit)  # a window of the wrong shape
    with pytest.raises(errors_mod.WindowError):
        valid_mask(np.zeros((4, 4)), 0)

"""Thin strips: windows are padded only as the model needs, never to the full halo beyond
the scene's edge (a 7 x 100000 scene used to cost ~100x its pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _standin import RF, TinyLoader, TinySegmenter, smooth_image, write_zarr_scene

from pipeline.catalog import catalog
from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.io.omezarr import SceneWriter
from pipeline.io.readers import open_scene
from pipeline.plan import plan_scene
from pipeline.run import run_pipeline


def test_a_thin_strip_is_planned_at_about_its_own_size() -> None:
    grid = plan_scene("strip", 7, 100_000, chunk=2048, halo=256)
    assert len(grid) == 49
    for u in grid:
        assert u.input_shape == (u.window.height, u.window.width) == (7, u.window.width)
    # model input = what is read: 7 rows x (2048 + halo on the sides inside the scene)
    assert grid.input_pixels() == grid.read_pixels() <= 7 * 2560 * 49
    assert grid.input_pixels() < 0.02 * (7 + 512) * 2560 * 49  # the old full-halo padding


def test_interior_units_keep_their_full_halo_of_real_context() -> None:
    grid = plan_scene("s", 1000, 700, chunk=256, halo=64)
    inner = grid.unit(1, 1)
    assert inner.input_shape == (256 + 128, 256 + 128)
    assert (inner.core_in_input.y0, inner.core_in_input.x0) == (64, 64)
    corner = grid.unit(0, 0)
    assert corner.input_shape == (256 + 64, 256 + 64)  # no context exists above / left
    assert (corner.core_in_input.y0, corner.core_in_input.x0) == (0, 0)


class _Counting(TinySegmenter):
    pixels = 0

    def predict(self, images, **kw):
        _Counting.pixels += images.shape[-2] * images.shape[-1] * (
            images.shape[0] if images.ndim == 4 else 1)
        return super().predict(images, **kw)


def test_strip_costs_its_pixels_and_equals_whole_scene_inference(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    write_zarr_scene(archive, "strip", smooth_image(5, 3, 7, 3000))
    cfg = load_config(overrides=dict(chunk=256, halo=RF + 5, checkpoint="unused-standin"))
    _Counting.pixels = 0
    with LocalExecutor(lambda device="auto", threads=None: _Counting()) as ex:
        res = run_pipeline(str(archive), str(tmp_path / "out"), cfg, executor=ex)
    assert res.ok
    grid = plan_scene("strip", 7, 3000, chunk=256, halo=RF + 5)
    assert _Counting.pixels == grid.read_pixels() < 1.2 * 7 * 3000
    info = catalog(str(archive)).get("strip")
    whole = TinySegmenter().predict(open_scene(info).read(0, 7, 0, 3000), return_confidence=True)
    w = SceneWriter.open(str(tmp_path / "out"), "strip")
    # halo >= the receptive field and no padding beyond the scene: tiled == whole, edges too
    np.testing.assert_array_equal(w.read_level(0), whole.labels)
    np.testing.assert_array_equal(w.read_level(0, "confidence"), whole.confidence)
    with LocalExecutor(TinyLoader()) as ex:
        assert run_pipeline(str(archive), str(tmp_path / "o2"), cfg, executor=ex).ok

"""A scene stored (H, W, C) but read as CHW gets the advice ``layout: hwc`` (not a band
selection whose "ok" would be a 320 x 3 garbage mosaic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from _standin import TinyLoader, smooth_image

from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.io.omezarr import SceneWriter
from pipeline.run import run_pipeline


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    hwc = smooth_image(0, 3, 240, 320).transpose(1, 2, 0)  # (240, 320, 3)
    zarr.create_array(str(root / "hwc.zarr"), data=np.ascontiguousarray(hwc), zarr_format=3)
    zarr.create_array(str(root / "four.zarr"), data=smooth_image(1, 4, 100, 90), zarr_format=3)
    return root


def _run(archive: Path, out: Path, **kw):
    cfg = load_config(overrides=dict(chunk=128, halo=8, checkpoint="unused-standin", **kw))
    with LocalExecutor(TinyLoader()) as ex:
        res = run_pipeline(str(archive), str(out), cfg, executor=ex)
    return {s.scene_id: s for s in res.manifest.scenes}


def test_hwc_read_as_chw_is_advised_layout_hwc(archive: Path, tmp_path: Path) -> None:
    reps = _run(archive, tmp_path / "out")
    hwc = reps["hwc"]
    assert hwc.status == "failed" and "layout: hwc" in hwc.error, hwc.error
    assert "(240, 320, 3)" in hwc.error and "bands: [0, 1, 2]" not in hwc.error
    assert "set bands: [0, 1, 2]" in reps["four"].error  # a real 4-band CHW scene


def test_following_the_old_band_advice_does_not_give_a_garbage_ok(archive, tmp_path) -> None:
    reps = _run(archive, tmp_path / "out", bands=[0, 1, 2])
    assert reps["hwc"].status == "failed" and "layout: hwc" in reps["hwc"].error
    assert reps["four"].status == "ok"


def test_following_the_layout_advice_gives_the_right_mosaic(archive, tmp_path) -> None:
    reps = _run(archive, tmp_path / "out", layout="hwc")
    assert reps["hwc"].status == "ok", reps["hwc"].error
    assert SceneWriter.open(str(tmp_path / "out"), "hwc").read_level(0).shape == (240, 320)
    explicit = _run(archive, tmp_path / "o2", layout="CHW", bands=[0, 1, 2])
    assert explicit["hwc"].status == "ok"  # said explicitly: the user knows best

"""Nodata through the pipeline (contract C3): label 0 / confidence 0, empty windows skip the
model and are counted, the model gets ``valid_mask=``, NaN/Inf errors name scene pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _standin import RF, TinySegmenter, smooth_image, write_zarr_scene
from conftest import write_geotiff

from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.io.omezarr import SceneWriter
from pipeline.plan import plan_scene
from pipeline.run import run_pipeline
from pipeline.run.report import read_manifest

UTM = ("EPSG:32633", (500000.0, 10.0, 0.0, 4600000.0, 0.0, -10.0))
CHUNK, HALO = 64, 8


class RecordingSegmenter(TinySegmenter):
    """The stand-in, remembering every call's batch size and valid mask."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.masks: list[np.ndarray | None] = []
        self.inputs_at_nodata: list[float] = []

    def predict(self, images, valid_mask=None, **kw):
        self.masks.append(None if valid_mask is None else np.array(valid_mask))
        if valid_mask is not None:
            self.inputs_at_nodata += np.moveaxis(images, 1, -1)[~valid_mask].ravel().tolist()
        return super().predict(images, valid_mask=valid_mask, **kw)


@dataclass(frozen=True)
class RecordingLoader:
    in_channels: int = 3

    def __call__(self, device: str = "auto", threads: int | None = None) -> RecordingSegmenter:
        return RecordingSegmenter(self.in_channels, device, threads)


def _cfg(**kw):
    return load_config(overrides={"chunk": CHUNK, "halo": HALO, "batch_size": 1, **kw})


def _run(root: Path, out: Path, cfg, loader=None):
    ex = LocalExecutor(loader or RecordingLoader())
    res = run_pipeline(str(root), str(out), cfg, executor=ex, run_id="nodata")
    return res, ex


def test_nodata_border_is_label_0_and_empty_windows_never_reach_the_model(tmp_path: Path):
    img = smooth_image(3, 3, 192, 256)
    img[img == 0] = 1  # no accidental nodata inside the data
    img[:, :, :100] = 0  # a 39% nodata border, as real scenes have
    img[:, :70, :] = 0
    root = tmp_path / "a"
    root.mkdir()
    write_geotiff(root / "s.tif", img, *UTM, nodata=0)
    res, ex = _run(root, tmp_path / "o", _cfg())
    assert res.ok, res.manifest.failed
    store = SceneWriter.open(str(tmp_path / "o"), "s")
    labels, conf = store.read_level(0), store.read_level(0, "confidence")
    nodata = (img == 0).all(axis=0)
    assert (labels[nodata] == 0).all() and (conf[nodata] == 0).all()
    assert conf[~nodata].min() >= 255 // 4  # every data pixel got a class with confidence
    # data pixels match whole-scene inference with the same mask (halo >= receptive field)
    ref = TinySegmenter().predict(img, valid_mask=~nodata).labels
    np.testing.assert_array_equal(labels[RF:-RF, RF:-RF], ref[RF:-RF, RF:-RF])
    grid = plan_scene("s", 192, 256, chunk=CHUNK, halo=HALO)
    empty = sum(nodata[u.core.y0:u.core.y1, u.core.x0:u.core.x1].all() for u in grid)
    assert empty >= 3
    (scene,) = res.manifest.scenes
    assert scene.units_nodata == empty and scene.units_done == len(grid)
    model = ex.processor.model
    assert len(model.masks) == len(grid) - empty  # batch_size 1: one call per live unit
    # every live window holding nodata pixels carries a mask (calls come in shape order)
    live = [u for u in grid if not nodata[u.core.y0:u.core.y1, u.core.x0:u.core.x1].all()]
    with_nodata = sum(nodata[u.window.y0:u.window.y1, u.window.x0:u.window.x1].any()
                      for u in live)
    assert sum(m is not None for m in model.masks) == with_nodata >= 1
    doc = read_manifest(res.manifest_url)
    assert doc["scenes"][0]["units_nodata"] == empty and doc["summary"]["units_nodata"] == empty


def test_float_fill_values_never_reach_the_network(tmp_path: Path):
    rng = np.random.default_rng(4)
    img = rng.random((5, 100, 120), dtype=np.float32)
    img[:, 60:, :] = -99999.0
    root = tmp_path / "a"
    root.mkdir()
    write_geotiff(root / "f.tif", img, *UTM, nodata=-99999)
    res, ex = _run(root, tmp_path / "o", _cfg(bands=[0, 1, 2]))
    assert res.ok, res.manifest.failed
    model = ex.processor.model
    assert model.inputs_at_nodata and set(model.inputs_at_nodata) == {-99999.0}
    store = SceneWriter.open(str(tmp_path / "o"), "f")
    conf = store.read_level(0, "confidence")
    assert not store.read_level(0)[60:].any() and not conf[60:].any() and conf[:60].all()


def test_config_nodata_overrides_every_scene(tmp_path: Path):
    img = smooth_image(5, 3, 96, 96)
    img[img == 0] = 1
    img[:, :40] = 0
    write_zarr_scene(tmp_path / "a", "z", img, chunks=32)
    res, _ = _run(tmp_path / "a", tmp_path / "o", _cfg(nodata=0))
    assert res.ok
    conf = SceneWriter.open(str(tmp_path / "o"), "z").read_level(0, "confidence")
    assert not conf[:40].any() and conf[40:].all()
    res, _ = _run(tmp_path / "a", tmp_path / "o2", _cfg())  # no nodata: the zeros are data
    assert SceneWriter.open(str(tmp_path / "o2"), "z").read_level(0, "confidence")[:40].all()


def test_nan_error_names_the_pixel_in_scene_coordinates(tmp_path: Path):
    img = smooth_image(11, 3, 300, 300, "float32")
    img[1, 290, 10] = np.nan  # one band only: a data pixel with a bad value
    img[:, :5, :5] = np.nan  # all bands: nodata, never an error
    write_zarr_scene(tmp_path / "a", "values/nan", img, chunks=128)
    res, _ = _run(tmp_path / "a", tmp_path / "o", _cfg(chunk=128, halo=16))
    (scene,) = res.manifest.scenes
    assert scene.status == "failed"
    for needle in ("inference of values/nan#r2c0 failed", "NaN/Inf", "band 1", "y=290",
                   "x=10", "scene pixel coordinates", "scene 'values/nan'"):
        assert needle in scene.error, scene.error


@pytest.mark.parametrize("nodata", [0, None])
def test_all_nodata_scene_is_written_without_inference(tmp_path: Path, nodata):
    img = np.zeros((3, 80, 70), np.uint8)
    (tmp_path / "a").mkdir()
    write_geotiff(tmp_path / "a/empty.tif", img, *UTM, nodata=nodata)
    res, ex = _run(tmp_path / "a", tmp_path / "o", _cfg())
    assert res.ok
    labels = SceneWriter.open(str(tmp_path / "o"), "empty").read_level(0)
    if nodata is None:  # zeros are data when nothing declares them nodata
        assert ex.processor.model.masks
    else:
        assert not ex.processor.model.masks and not labels.any()
        assert res.manifest.scenes[0].units_nodata == res.manifest.scenes[0].units_total

"""Preflight: static scene checks and the value-range check on a sample of each scene."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _standin import TinySegmenter, smooth_image, write_zarr_scene
from conftest import write_geotiff

from pipeline.catalog import catalog
from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.io.readers import open_scene
from pipeline.plan.preflight import sample_range, scene_problem, value_range_problem
from pipeline.run import run_pipeline

MODEL = SimpleNamespace(in_channels=3, arch="hgn", sha256="ab" * 32, input=None)


class RangeSpec:
    """Stands in for C1's InputSpec: flags samples whose top is far above ``top``."""

    def __init__(self, top: float) -> None:
        self.top = top
        self.calls: list[tuple[str, list[tuple[float, float]], float | None]] = []

    def range_problem(self, dtype, observed, value_max=None):
        self.calls.append((dtype, list(observed), value_max))
        high = max(h for _, h in observed)
        scale = self.top / value_max if value_max else 1.0
        if high * scale > 4 * self.top:
            return (f"observed values up to {high:g}, the checkpoint expects up to "
                    f"{self.top:g}: set `value_max: {high:.0f}`")
        return None


def _scene(tmp_path: Path, data: np.ndarray, **kw):
    write_geotiff(tmp_path / "s.tif", data, **kw)
    return catalog(str(tmp_path)).get("s")


def test_scene_problem_names_bands_and_counts(tmp_path: Path) -> None:
    info = _scene(tmp_path, np.zeros((5, 8, 8), np.uint16))
    cfg = load_config()
    assert "5 bands go to a model that expects 3" in scene_problem(info, cfg, MODEL)
    assert "set bands: [0, 1, 2]" in scene_problem(info, cfg, MODEL)
    assert "select band 7" in scene_problem(info, load_config(overrides={"bands": [7, 1, 0]}),
                                            MODEL)
    assert scene_problem(info, load_config(overrides={"bands": [3, 2, 1]}), MODEL) is None


def test_sample_excludes_nodata_and_covers_the_scene(tmp_path: Path) -> None:
    data = np.full((3, 900, 700), 0, np.uint16)
    data[:, 100:, 50:] = 1000
    data[:, 850:, 650:] = 4000  # the far corner: a sample window must reach it
    info = _scene(tmp_path, data, nodata=0)
    observed = sample_range(open_scene(info), None, info.nodata)
    assert [lo for lo, _ in observed] == [1000.0] * 3
    assert all(hi == 4000.0 for _, hi in observed)


def test_value_range_problem_uses_the_checkpoint_verdict(tmp_path: Path) -> None:
    info = _scene(tmp_path, np.full((3, 64, 64), 3000, np.uint16))
    spec = RangeSpec(255.0)
    model = SimpleNamespace(**{**vars(MODEL), "input": spec})
    problem = value_range_problem(info, load_config(), model)
    assert problem.startswith("values out of the model's range: observed values up to 3000")
    assert spec.calls[0][0] == "uint16" and spec.calls[0][2] is None
    assert value_range_problem(info, load_config(overrides={"value_max": 3000}), model) is None
    assert value_range_problem(info, load_config(), MODEL) is None  # no spec: no verdict


def test_unreadable_sample_windows_are_left_to_the_run(tmp_path: Path) -> None:
    write_zarr_scene(tmp_path, "p", smooth_image(3, 3, 900, 900), chunks=100)
    (tmp_path / "p.zarr/image/c/0/4/4").write_bytes(b"broken")  # the centre window's chunk
    info = catalog(str(tmp_path)).get("p")
    observed = sample_range(open_scene(info), None, None)
    assert observed is not None and len(observed) == 3  # the other 8 windows still count
    with pytest.raises(OSError, match=r"y=400:500, x=400:500"):
        open_scene(info).read(400, 500, 400, 500)  # ...and the run names the bad window


@dataclass(frozen=True)
class SpecLoader:
    top: float

    def __call__(self, device: str = "auto", threads: int | None = None) -> TinySegmenter:
        model = TinySegmenter(3, device, threads)
        model.config.input = RangeSpec(self.top)
        return model


def test_run_fails_only_the_out_of_range_scene(tmp_path: Path) -> None:
    root = tmp_path / "a"
    write_zarr_scene(root, "bytes", smooth_image(1, 3, 96, 96))
    write_zarr_scene(root, "raw_dn", (smooth_image(2, 3, 96, 96).astype(np.uint16) * 40))
    cfg = load_config(overrides={"chunk": 64, "halo": 8})
    res = run_pipeline(str(root), str(tmp_path / "o"), cfg,
                       executor=LocalExecutor(SpecLoader(255.0)))
    status = {s.scene_id: (s.status, s.error) for s in res.manifest.scenes}
    assert status["bytes"] == ("ok", None)
    assert status["raw_dn"][0] == "failed"
    assert "values out of the model's range" in status["raw_dn"][1]
    assert "value_max" in status["raw_dn"][1]


@pytest.mark.parametrize("dtype", ["bool", "complex64"])
def test_unsupported_dtypes_never_reach_preflight(tmp_path: Path, dtype: str) -> None:
    import zarr

    zarr.create_array(str(tmp_path / "x.zarr"), shape=(3, 8, 8), dtype=dtype)
    cat = catalog(str(tmp_path))
    assert not cat.scenes and "not supported" in cat.failures[0].reason

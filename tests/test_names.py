"""One rule for every name that becomes a path (pipeline.names), applied where names enter.

A run id that would escape ``_hgn/`` is refused before anything is written; a scene whose id
cannot be a path (a newline in it) fails alone in the catalog and the other scenes finish.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _standin import TinyLoader, smooth_image, write_zarr_scene
from typer.testing import CliRunner

from pipeline.catalog import catalog
from pipeline.cli import app
from pipeline.config import load_config
from pipeline.errors import NameRefusedError
from pipeline.execute import LocalExecutor
from pipeline.names import check_export_path, check_run_id, check_scene_id, scene_id_problem
from pipeline.run.resume import run_resumable


def _cfg(**kw):
    return load_config(overrides=dict(chunk=128, halo=8, checkpoint="unused-standin", **kw))


@pytest.mark.parametrize("bad", ["../../../../tmp/x", "..", ".", "a/b", "/abs", "", "a\nb",
                                 ".hidden", "x" * 129, "a b", "a\\b"])
def test_run_ids_that_are_not_one_safe_segment_are_refused(bad: str) -> None:
    with pytest.raises(NameRefusedError, match=r"run id .* is refused"):
        check_run_id(bad)


@pytest.mark.parametrize("good", ["20261201T000000Z-ab12cd", "night-1", "e2e", "v1.2_x"])
def test_ordinary_run_ids_pass(good: str) -> None:
    assert check_run_id(good) == good


@pytest.mark.parametrize("bad", ["a\nb", "tab\there", "nul\x00", "..", "a/../b", "/etc/x",
                                 "a//b", "a\\b", "x/" + "y" * 252, ""])
def test_scene_ids_that_cannot_be_paths_are_refused(bad: str) -> None:
    assert scene_id_problem(bad) is not None
    with pytest.raises(NameRefusedError, match=r"scene id .* is refused"):
        check_scene_id(bad)


@pytest.mark.parametrize("bad", ["out/a\nb.tif", "out/x.png", "out/..", "",
                                 "out/s.ome.zarr/labels.tif", "out/_hgn/x.tif", "x.tif\x00"])
def test_export_paths_that_are_refused(bad: str) -> None:
    with pytest.raises(NameRefusedError, match=r"export path .* is refused"):
        check_export_path(bad)


def test_export_paths_that_pass() -> None:
    for good in ("exports/tile-042.tif", "s3://b/exports/a b.TIFF", "/tmp/x.tif"):
        assert check_export_path(good) == good


def test_run_id_escaping_the_output_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    archive, out = tmp_path / "archive", tmp_path / "out"
    write_zarr_scene(archive, "a", smooth_image(0, 3, 64, 64))
    res = CliRunner().invoke(app, ["run", "-i", str(archive), "-o", str(out), "--local",
                                   "--no-progress", "--run-id", "../../../../tmp/x"])
    assert res.exit_code == 2, res.output
    assert "run id '../../../../tmp/x' is refused" in res.output
    assert "Traceback" not in res.output
    assert not out.exists() and not (tmp_path / "tmp").exists()
    with LocalExecutor(TinyLoader()) as ex, pytest.raises(NameRefusedError):
        run_resumable(str(archive), str(out), _cfg(), executor=ex, run_id="../x")
    assert not out.exists()


def test_scene_whose_name_cannot_be_a_path_fails_alone(tmp_path: Path) -> None:
    archive, out = tmp_path / "archive", tmp_path / "out"
    write_zarr_scene(archive, "good", smooth_image(0, 3, 100, 90))
    write_zarr_scene(archive, "bad\nname", smooth_image(1, 3, 60, 60))
    cat = catalog(str(archive))
    assert [s.scene_id for s in cat.scenes] == ["good"]
    (fail,) = cat.failures
    assert fail.scene_id == "bad\nname" and "control characters (U+000A)" in fail.reason
    with LocalExecutor(TinyLoader()) as ex:
        res = run_resumable(str(archive), str(out), _cfg(), executor=ex, run_id="n")
    status = {s.scene_id: s.status for s in res.run.manifest.scenes}
    assert status == {"good": "ok", "bad\nname": "failed"}
    assert res.exit_code == 1 and (out / "good.ome.zarr" / "zarr.json").exists()

"""Nightly runs over an archive that gains, changes and loses scenes (local and S3 outputs)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from _standin import TinyLoader, smooth_image, write_zarr_scene
from _tiny_checkpoint import tiny_checkpoint

from pipeline.catalog import catalog
from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.io.omezarr import SceneWriter
from pipeline.ops.nightly import nightly, read_history
from pipeline.storage import storage_options_from


def _cfg(s3: dict | None):
    return load_config(overrides=dict(chunk=128, halo=8, batch_size=2,
                                      checkpoint="unused-standin", s3=s3))


def _labels(url: str, cfg, scene_id: str) -> np.ndarray:
    return SceneWriter.open(url, scene_id, storage_options_from(cfg.s3)).read_level(0)


def test_nightly_processes_only_what_changed(output: tuple[str, dict], tmp_path: Path) -> None:
    out, s3 = output
    cfg = _cfg(s3)
    archive = tmp_path / "archive"
    write_zarr_scene(archive, "a", smooth_image(0, 3, 150, 200))
    write_zarr_scene(archive, "b", smooth_image(1, 3, 140, 170))

    with LocalExecutor(TinyLoader()) as ex:
        night1 = nightly(str(archive), out, cfg, executor=ex, run_id="n1")
        assert (night1.changes["new"], night1.nothing_to_do) == (["a", "b"], False)
        assert sorted(night1.processed_ok) == ["a", "b"] and night1.exit_code == 0
        b_before = _labels(out, cfg, "b")

        night2 = nightly(str(archive), out, cfg, executor=ex, run_id="n2")
        assert night2.nothing_to_do and night2.manifest is None
        assert night2.changes["unchanged"] == 2 and night2.processed_ok == []
        assert "nothing to do" in night2.line()

        # The archive changes: c arrives, b is re-delivered with new pixels, a is withdrawn.
        fp_b = catalog(str(archive)).get("b").fingerprint
        write_zarr_scene(archive, "b", smooth_image(7, 3, 140, 170))
        assert catalog(str(archive)).get("b").fingerprint != fp_b
        write_zarr_scene(archive, "c", smooth_image(2, 3, 90, 300))
        shutil.rmtree(archive / "a.zarr")
        night3 = nightly(str(archive), out, cfg, executor=ex, run_id="n3")
    ch = night3.changes
    assert (ch["new"], ch["changed"], ch["vanished"], ch["unchanged"]) == (["c"], ["b"], ["a"], 0)
    assert sorted(night3.processed_ok) == ["b", "c"] and night3.units_reused == 0
    assert _labels(out, cfg, "a").shape == (150, 200), "a vanished: its output is kept"

    # b was really reprocessed: same labels as a fresh run over the new b alone.
    fresh_archive, fresh_out = tmp_path / "fresh", tmp_path / "fresh_out"
    write_zarr_scene(fresh_archive, "b", smooth_image(7, 3, 140, 170))
    with LocalExecutor(TinyLoader()) as ex:
        nightly(str(fresh_archive), str(fresh_out), _cfg(None), executor=ex)
    b_after = _labels(out, cfg, "b")
    np.testing.assert_array_equal(b_after, _labels(str(fresh_out), _cfg(None), "b"))
    assert not np.array_equal(b_after, b_before)

    lines, reports = read_history(out, storage_options_from(cfg.s3))
    assert [r["run_id"] for r in reports] == ["n1", "n2", "n3"]
    assert len(lines) == 3 and " nightly n2: nothing to do" in lines[1]
    assert "1 new, 1 changed" in lines[2] and "1 vanished" in lines[2]



def test_nightly_cli_says_nothing_to_do(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    archive, out = tmp_path / "archive", tmp_path / "out"
    write_zarr_scene(archive, "only", smooth_image(5, 3, 100, 140))
    ckpt = tiny_checkpoint(tmp_path / "ckpt" / "tiny")
    args = ["nightly", "--input", str(archive), "--output", str(out), "--local",
            "--no-progress", "--set", f"checkpoint={ckpt}", "--set", "chunk=128"]
    first = CliRunner().invoke(app, [*args, "--run-id", "night-1"])
    assert first.exit_code == 0, first.output
    assert "nightly night-1: 1 new" in first.output
    second = CliRunner().invoke(app, [*args, "--run-id", "night-2"])
    assert second.exit_code == 0, second.output
    assert "nightly night-2: nothing to do" in second.output
    # Another model on the same output: refused (exit 2) with the way out in the message.
    other = tiny_checkpoint(tmp_path / "ckpt" / "other", seed=1)
    third = CliRunner().invoke(app, [*args, "--set", f"checkpoint={other}"])
    assert third.exit_code == 2 and "overwrite" in third.output

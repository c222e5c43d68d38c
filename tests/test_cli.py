"""hgn-pipeline CLI: help texts, config errors, dry run, and end to end on a tiny archive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _standin import make_tiny_checkpoint, smooth_image, write_zarr_scene
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.io.omezarr import SceneWriter
from pipeline.run.report import read_manifest

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    archive = root / "archive"
    write_zarr_scene(archive, "a", smooth_image(0, 3, 300, 200))
    write_zarr_scene(archive, "b/c", smooth_image(1, 3, 90, 410, "uint16"))
    return archive, make_tiny_checkpoint(root)


def test_help_lists_run_and_its_options():
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0 and "run" in top.output
    res = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for opt in ("--input", "--output", "--config", "--address", "--dry-run", "--set"):
        assert opt in res.output, opt


def test_bad_config_is_a_clear_error(tiny, tmp_path):
    archive, _ = tiny
    cfg = tmp_path / "run.yaml"
    cfg.write_text("chunk: 1024\nhalos: 12\n")
    res = runner.invoke(app, ["run", "-i", str(archive), "-o", str(tmp_path / "o"), "-c", str(cfg)])
    assert res.exit_code == 2
    assert "halos = 12: unknown field; did you mean 'halo'?" in res.output


def test_dry_run_prints_the_plan_and_writes_nothing(tiny, tmp_path):
    archive, ckpt = tiny
    out = tmp_path / "o"
    res = runner.invoke(
        app,
        ["run", "-i", str(archive), "-o", str(out), "--dry-run", "--set", f"checkpoint={ckpt}",
         "--set", "chunk=128", "--set", "halo=16"],
        terminal_width=200,
    )
    assert res.exit_code == 0, res.output
    assert "scenes 2 (+0 unreadable), windows 10" in res.output  # 3x2 + 1x4 units
    assert "estimated time:" in res.output and "per-scene overhead" in res.output
    assert not out.exists()


def test_local_mode_end_to_end(tiny, tmp_path):
    archive, ckpt = tiny
    out = tmp_path / "o"
    res = runner.invoke(
        app,
        ["run", "-i", str(archive), "-o", str(out), "--local", "--no-progress", "--run-id", "x",
         "--set", f"checkpoint={ckpt}", "--set", "chunk=128", "--set", "halo=16"],
        terminal_width=200,
    )
    assert res.exit_code == 0, res.output
    assert "scenes ok 2, failed 0" in res.output
    assert read_manifest(str(out / "_hgn" / "manifest-x.json"))["summary"]["scenes_ok"] == 2


@pytest.mark.ray
def test_installed_command_runs_on_a_private_local_ray(tiny, tmp_path):
    """The real entry point in a fresh process: starts Ray on 127.0.0.1, runs, stops it."""
    archive, ckpt = tiny
    out = tmp_path / "o"
    exe = Path(sys.executable).with_name("hgn-pipeline")
    cmd = [str(exe), "run", "--input", str(archive), "--output", str(out), "--num-cpus", "2",
           "--no-progress", "--run-id", "e2e", "--set", f"checkpoint={ckpt}",
           "--set", "chunk=128", "--set", "halo=16", "--set", "use_gpu=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = read_manifest(str(out / "_hgn" / "manifest-e2e.json"))
    assert m["executor"]["kind"] == "RayExecutor" and m["executor"]["workers"] == 2
    assert [s["status"] for s in m["scenes"]] == ["ok", "ok"]
    w = SceneWriter.open(str(out), "b/c")
    assert w.complete and w.read_level(0).shape == (90, 410)

"""Escapes: an output that reaches into its input archive through a symlink or ``..`` is
refused (resolved real paths locally, normalised bucket/key prefixes on S3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _standin import TinyLoader, smooth_image, write_zarr_scene
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.execute import LocalExecutor
from pipeline.run.resume import run_resumable
from pipeline.storage import check_output_location, resolve_url


@pytest.fixture
def arch(tmp_path: Path) -> Path:
    root = tmp_path / "arch"
    write_zarr_scene(root, "a", smooth_image(0, 3, 64, 64))
    return root


def test_output_through_a_symlink_into_the_archive_is_refused(arch: Path, tmp_path) -> None:
    link = tmp_path / "L"
    link.symlink_to(arch)  # ln -s $PWD/arch L
    before = sorted(p.as_posix() for p in arch.rglob("*"))
    with pytest.raises(ConfigError, match="inside the input archive"):
        check_output_location(str(arch), str(link / "labels"))
    res = CliRunner().invoke(app, ["run", "-i", str(arch), "-o", str(link / "labels"),
                                   "--local", "--no-progress"])
    assert res.exit_code == 2 and "inside the input archive" in res.output, res.output
    with LocalExecutor(TinyLoader()) as ex, pytest.raises(ConfigError):
        run_resumable(str(arch), str(link / "labels"),
                      load_config(overrides={"checkpoint": "x"}), executor=ex)
    assert sorted(p.as_posix() for p in arch.rglob("*")) == before  # untouched


def test_input_given_through_a_symlink_is_compared_by_its_real_path(arch, tmp_path) -> None:
    link = tmp_path / "A"
    link.symlink_to(arch)
    with pytest.raises(ConfigError, match="inside the input archive"):
        check_output_location(str(link), str(arch / "labels"))


def test_dotdot_and_symlink_together_are_resolved(arch: Path, tmp_path: Path) -> None:
    (tmp_path / "L").symlink_to(arch)
    for out in (f"{tmp_path}/L/../L/labels", f"{tmp_path}/x/../L/sub/../labels",
                f"file://{tmp_path}/L/labels"):
        with pytest.raises(ConfigError, match="inside the input archive"):
            check_output_location(str(arch), out)
    # Paths are written where they resolve lexically, then physically: through a symlinked
    # folder, "up/.." is the folder holding the link, not the link target's parent.
    (tmp_path / "deep").mkdir()
    os.symlink(arch, tmp_path / "deep" / "up")
    check_output_location(str(arch), f"{tmp_path}/deep/up/../labels")


def test_sibling_outputs_stay_allowed(arch: Path, tmp_path: Path) -> None:
    check_output_location(str(arch), str(tmp_path / "arch2"))
    check_output_location(str(arch), str(tmp_path / "labels"))


def test_s3_prefixes_are_normalised_before_comparing() -> None:
    with pytest.raises(ConfigError, match="inside the input archive"):
        check_output_location("s3://b/arch", "s3://b//arch///labels")
    for dotted in ("s3://b/x/../arch/labels", "s3://b/./arch/labels"):
        with pytest.raises(ConfigError, match=r"'\.' or '\.\.'"):
            resolve_url(dotted)
    check_output_location("s3://b/arch", "s3://b/arch2/labels")
    check_output_location("s3://b/arch", "s3://other/arch/labels")


def test_deleted_ledger_advice_names_the_cli_flag(arch: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    cfg = load_config(overrides={"checkpoint": "x", "chunk": 64, "halo": 8})
    with LocalExecutor(TinyLoader()) as ex:
        assert run_resumable(str(arch), str(out), cfg, executor=ex).run.ok
        shutil.rmtree(out / "_hgn" / "ledger")
        again = run_resumable(str(arch), str(out), cfg, executor=ex)
    (rep,) = again.run.manifest.failed
    assert "--set overwrite=true" in rep.error and "SceneWriter" not in rep.error, rep.error
    assert "ledger" in rep.error

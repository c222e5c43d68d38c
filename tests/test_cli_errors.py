"""Every config / CLI parse error is one ``error:`` line naming the field and the fix.

Covers ``--set`` values that are not YAML, ``--set`` without ``=``, duplicate YAML keys,
non-finite floats, several bad fields at once, bad option values, unknown options, and
``--num-cpus 0`` (refused up front instead of hanging on a Ray without CPUs).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _standin import smooth_image, write_zarr_scene
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_config
from pipeline.errors import ConfigError

runner = CliRunner()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-errors") / "archive"
    write_zarr_scene(root, "a", smooth_image(0, 3, 64, 64))
    return root


def _one_error(args: list[str]) -> str:
    res = runner.invoke(app, args, terminal_width=100)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def _run(archive: Path, tmp: Path, *extra: str) -> list[str]:
    return ["run", "-i", str(archive), "-o", str(tmp / "out"), "--local", "--no-progress",
            *extra]


@pytest.mark.parametrize("item, needles", [
    ("chunk=[256", ("--set chunk=[256", "not valid YAML", "quote")),
    ("chunk", ("--set 'chunk'", "FIELD=VALUE")),
    ("=5", ("--set '=5'", "FIELD=VALUE")),
    ("value_max=inf", ("value_max", "finite")),
    ("io_backoff_s=inf", ("io_backoff_s", "finite")),
    ("value_max=.nan", ("value_max", "finite")),
    ("actor_start_timeout_s=.inf", ("actor_start_timeout_s", "finite")),
])
def test_bad_set_values_are_one_error_line(archive, tmp_path, item, needles) -> None:
    line = _one_error(_run(archive, tmp_path, "--set", item))
    for needle in needles:
        assert needle in line, line
    assert not (tmp_path / "out").exists()


def test_several_bad_fields_still_make_one_line(archive, tmp_path) -> None:
    line = _one_error(_run(archive, tmp_path, "--set", "chunk=-1", "--set", "halos=3"))
    assert "chunk = -1" in line and "halos = 3" in line and "did you mean 'halo'" in line


def test_duplicate_yaml_keys_are_refused(archive, tmp_path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("chunk: 512\nhalo: 16\nchunk: 1024\n")
    line = _one_error(_run(archive, tmp_path, "-c", str(cfg)))
    assert "duplicate key 'chunk'" in line and "line 3" in line and "keep one" in line
    with pytest.raises(ConfigError, match=r"duplicate key 's3\.key'"):
        cfg.write_text("s3:\n  key: a\n  secret: b\n  key: c\n")
        load_config(cfg)


def test_non_finite_floats_are_refused_by_the_config_itself() -> None:
    for field in ("value_max", "io_backoff_s", "cpus_per_gpu_actor", "reserve_cpus"):
        with pytest.raises(ConfigError, match=field):
            load_config(overrides={field: float("inf"), "checkpoint": "x"})


@pytest.mark.parametrize("args, needles", [
    (["--num-cpus", "0"], ("--num-cpus 0", "no CPU", "1 or more")),
    (["--num-cpus", "abc"], ("--num-cpus", "integer", "--help")),
    (["--frobnicate"], ("--frobnicate", "--help")),
])
def test_bad_options_are_one_error_line(archive, tmp_path, args, needles) -> None:
    base = ["run", "-i", str(archive), "-o", str(tmp_path / "out"), "--no-progress"]
    line = _one_error(base + args)
    for needle in needles:
        assert needle in line, line
    assert not (tmp_path / "out").exists()


def test_nightly_refuses_zero_cpus_too(archive, tmp_path) -> None:
    line = _one_error(["nightly", "-i", str(archive), "-o", str(tmp_path / "out"),
                       "--num-cpus", "0"])
    assert "--num-cpus 0" in line


def test_missing_required_option_of_a_subcommand(tmp_path) -> None:
    line = _one_error(["query", "stats", "--output", str(tmp_path)])
    assert "--scene" in line and "--help" in line


def test_evaluate_with_an_empty_seed_range_is_an_error(tmp_path) -> None:
    from _tiny_checkpoint import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "tiny")
    line = _one_error(["evaluate", "--checkpoint", str(ckpt), "--data", "5-2", "--size", "64"])
    assert "--data '5-2'" in line and "empty" in line and "2-5" in line

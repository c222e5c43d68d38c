"""Queries never answer silently wrong: a missing output is an error; an incomplete or
damaged scene is refused (naming its missing / damaged chunks) unless ``--allow-incomplete``,
which then reports the coverage beside every figure."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import OutputNotFoundError
from pipeline.query import OutputStore

runner = CliRunner()


def _lines(res) -> list[str]:
    return [line for line in res.output.splitlines() if line.strip()]


def test_query_scenes_on_a_missing_output_is_an_error(tmp_path: Path) -> None:
    for root in ("/nonexistent", str(tmp_path / "empty")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(OutputNotFoundError, match="check --output"):
            OutputStore(root).list_scenes()
        res = runner.invoke(app, ["query", "scenes", "--output", root])
        assert res.exit_code == 2, res.output
        (line,) = _lines(res)
        assert line.startswith("error: output ") and root in line, line

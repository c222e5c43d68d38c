"""Queries never answer silently wrong: a missing output is an error; an incomplete or
damaged scene is refused (naming its missing / damaged chunks) unless ``--allow-incomplete``,
which then reports the coverage beside every figure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _standin import TinyLoader, TinySegmenter, smooth_image, write_zarr_scene
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_config
from pipeline.errors import DamagedOutputError, OutputNotFoundError, RunInterrupted
from pipeline.execute import LocalExecutor
from pipeline.io.omezarr import SceneWriter
from pipeline.query import OutputStore
from pipeline.run.resume import run_resumable

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


# ----------------------------------------------------------------- incomplete / damaged

H, W, CHUNK = 256, 384, 128  # 2 x 3 units of one chunk each


def _cfg():
    return load_config(overrides=dict(chunk=CHUNK, halo=8, batch_size=1,
                                      checkpoint="unused-standin"))


class _DiesAtThird(TinySegmenter):
    """A run that is killed (SIGTERM) while inferring its third window."""

    def predict(self, images, **kw):
        if self.calls == 2:
            raise RunInterrupted(15)
        return super().predict(images, **kw)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("qi")
    archive = base / "archive"
    write_zarr_scene(archive, "s", smooth_image(3, 3, H, W))
    killed, full = base / "killed", base / "full"
    with LocalExecutor(lambda device="auto", threads=None: _DiesAtThird()) as ex, \
            pytest.raises(RunInterrupted):
        run_resumable(str(archive), str(killed), _cfg(), executor=ex, run_id="killed")
    with LocalExecutor(TinyLoader()) as ex:
        assert run_resumable(str(archive), str(full), _cfg(), executor=ex).run.ok
    return {"killed": killed, "full": full}


def _labels(out: Path) -> np.ndarray:
    return SceneWriter.open(str(out), "s").read_level(0)


def _stats_cli(out: Path, *extra: str):
    return runner.invoke(app, ["query", "stats", "--output", str(out), "--scene", "s", *extra])


def _done(out: Path) -> np.ndarray:
    """Mask of the pixels whose unit the ledger records as finished (the run's own order)."""
    from pipeline.state.checks import current_ledger

    token = SceneWriter.open(str(out), "s").attrs["hgn"]["resume_token"]
    done = np.zeros((H, W), bool)
    for unit in current_ledger(str(out), {}).chunk_infos("s", token):
        if "#r" in unit:
            row, col = (int(v) for v in unit.rsplit("#r", 1)[1].split("c"))
            done[row * CHUNK:(row + 1) * CHUNK, col * CHUNK:(col + 1) * CHUNK] = True
    return done


def test_stats_on_a_scene_a_killed_run_left_incomplete_are_refused(outputs) -> None:
    done = _done(outputs["killed"])
    assert 0 < done.mean() < 1  # killed at its third window
    res = _stats_cli(outputs["killed"])
    assert res.exit_code == 2, res.output
    (line,) = _lines(res)
    missing = 6 - int(done.sum()) // CHUNK**2
    assert f"scene 's' is incomplete: {missing} chunk(s)" in line, line
    for cy in range(2):
        for cx in range(3):
            named = f"labels/segmentation/0/c/{cy}/{cx} (not computed)" in line
            assert named == (not done[cy * CHUNK, cx * CHUNK]), (cy, cx, line)
    assert "--allow-incomplete" in line


def test_allow_incomplete_counts_what_is_there_and_reports_coverage(outputs) -> None:
    res = _stats_cli(outputs["killed"], "--allow-incomplete", "--format", "json")
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    done = _done(outputs["killed"])
    assert st["coverage"] == pytest.approx(done.mean())
    assert all(r["coverage"] == pytest.approx(done.mean()) for r in st["rows"])
    want = np.bincount(_labels(outputs["full"])[done], minlength=4)
    assert [r["pixels"] for r in st["rows"]] == want.tolist()  # class 0 is not inflated
    assert sum(r["fraction"] for r in st["rows"]) == pytest.approx(1.0)
    table = _stats_cli(outputs["killed"], "--allow-incomplete")
    assert table.exit_code == 0 and "coverage" in table.output
    assert f"{100 * done.mean():.2f}" in table.output
    csv_out = _stats_cli(outputs["killed"], "--allow-incomplete", "--format", "csv")
    assert csv_out.output.splitlines()[0].endswith(",coverage")


def test_level_above_zero_of_an_incomplete_scene_is_refused(outputs) -> None:
    res = _stats_cli(outputs["killed"], "--level", "1")
    assert res.exit_code == 2 and "not computed" in res.output


def test_deleted_chunk_is_named_not_counted_as_class_0(outputs, tmp_path) -> None:
    out = tmp_path / "out"
    shutil.copytree(outputs["full"], out)
    key = "labels/segmentation/0/c/1/1"
    (out / "s.ome.zarr" / key).unlink()
    res = _stats_cli(out)
    assert res.exit_code == 2, res.output
    (line,) = _lines(res)
    assert f"{key} (missing)" in line and "verify" in line and "--repair" in line
    st = OutputStore(str(out)).scene("s").class_stats(allow_incomplete=True)
    kept = np.ones((H, W), bool)
    kept[CHUNK:, CHUNK:2 * CHUNK] = False
    assert st.left_out == (key,) and st.coverage == pytest.approx(kept.mean())
    want = np.bincount(_labels(outputs["full"])[kept], minlength=4)
    assert [r.pixels for r in st.rows] == want.tolist()
    with pytest.raises(DamagedOutputError, match="missing"):
        OutputStore(str(out)).scene("s").read(box=(128, 256, 128, 256))


def test_corrupt_chunk_is_named_without_a_traceback(outputs, tmp_path) -> None:
    out = tmp_path / "out"
    shutil.copytree(outputs["full"], out)
    key = "labels/segmentation/0/c/0/0"
    (out / "s.ome.zarr" / key).write_bytes(b"\x28\xb5\x2f\xfd garbage, not zstd")
    res = _stats_cli(out)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    (line,) = _lines(res)
    assert f"{key} (damaged)" in line


def test_chunk_that_does_not_decode_is_named_even_without_checksums(tmp_path) -> None:
    out = str(tmp_path / "out")
    w = SceneWriter.create(out, "x", 64, 64, 32, [("a", (0, 0, 0, 0)), ("b", (1, 1, 1, 1))],
                           {}, confidence=False, levels=1)
    for y in (0, 32):
        for x in (0, 32):
            w.write_block(y, x, np.ones((32, 32), np.uint8))
    w.finalize()
    Path(out, "x.ome.zarr", "labels/segmentation/0/c/1/0").write_bytes(b"\x00not zstd")
    with pytest.raises(DamagedOutputError, match=r"chunk labels/segmentation/0/c/1/0 is damaged"):
        OutputStore(out).scene("x").class_stats()

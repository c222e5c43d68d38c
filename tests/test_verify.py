"""Outputs prove their integrity: every stored chunk's checksum is in the ledger;
``hgn-pipeline verify`` names missing / damaged chunks and ``--repair`` recomputes exactly
those, bit-identical to a clean run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _standin import TinyLoader, TinySegmenter, smooth_image, write_zarr_scene
from _tiny_checkpoint import tiny_checkpoint
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.io.omezarr import SceneWriter
from pipeline.ops.verify import repair, verify
from pipeline.run.resume import run_resumable

runner = CliRunner()
SCENES = ("a", "sub/b")
LOST = "labels/segmentation/0/c/1/1"  # deleted: unit a#r1c1
FLIPPED = "0/c/0/2"  # confidence chunk of unit a#r0c2, same size, other bytes
PYRAMID = "labels/segmentation/1/c/0/0"  # a pyramid chunk, truncated


def _cfg(**kw):
    base = dict(chunk=128, halo=8, batch_size=1, checkpoint="unused-standin")
    return load_config(overrides={**base, **kw})


def _archive(root: Path) -> Path:
    write_zarr_scene(root, "a", smooth_image(0, 3, 300, 380))
    write_zarr_scene(root, "sub/b", smooth_image(1, 3, 200, 200))
    return root


def _levels(out: Path, scene: str) -> list[np.ndarray]:
    w = SceneWriter.open(str(out), scene)
    return [w.read_level(k, layer) for layer in ("segmentation", "confidence")
            for k in range(w.levels)]


def _same(out: Path, clean: Path) -> None:
    for scene in SCENES:
        for got, want in zip(_levels(out, scene), _levels(clean, scene), strict=True):
            np.testing.assert_array_equal(got, want, err_msg=scene)


def _damage(out: Path) -> None:
    store = out / "a.ome.zarr"
    for key in (LOST, FLIPPED, PYRAMID):
        assert (store / key).is_file(), key
    (store / LOST).unlink()
    data = bytearray((store / FLIPPED).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (store / FLIPPED).write_bytes(bytes(data))
    (store / PYRAMID).write_bytes((store / PYRAMID).read_bytes()[:-3])


class _Counting(TinySegmenter):
    calls_total = 0

    def predict(self, images, **kw):
        _Counting.calls_total += len(images)
        return super().predict(images, **kw)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("verify")
    archive = _archive(base / "archive")
    with LocalExecutor(TinyLoader()) as ex:
        assert run_resumable(str(archive), str(base / "clean"), _cfg(), executor=ex).run.ok
    return archive, base / "clean"


def test_checksums_of_every_chunk_are_in_the_ledger(clean) -> None:
    _, out = clean
    report = verify(str(out))
    assert [s.scene_id for s in report.scenes] == list(SCENES)
    assert report.exit_code == 0 and all(s.ok and s.note is None for s in report.scenes)
    a = report.scenes[0]
    # 3 x 3 units, labels + confidence each, plus both pyramids (3 levels: 1 and 2)
    stored = {p.relative_to(out / "a.ome.zarr").as_posix()
              for p in (out / "a.ome.zarr").rglob("c/*/*")}
    assert a.recorded >= len(stored) and a.checked == a.recorded
    assert any(k.startswith("labels/segmentation/2/") for k in stored)


def test_verify_names_missing_and_damaged_chunks_and_repair_redoes_exactly_them(
        clean, tmp_path) -> None:
    _, good = clean
    out = tmp_path / "out"
    shutil.copytree(good, out)
    _damage(out)
    report = verify(str(out))
    a, b = report.scenes
    assert b.ok and report.exit_code == 1
    assert {(p.key, p.problem) for p in a.problems} == {
        (LOST, "missing"), (FLIPPED, "damaged"), (PYRAMID, "damaged")}
    assert a.units == ["a#r0c2", "a#r1c1"] and a.pyramid_damaged

    _Counting.calls_total = 0
    with LocalExecutor(lambda device="auto", threads=None: _Counting()) as ex:
        fixed = repair(str(out), report.damaged, executor=ex)
    assert fixed.repaired == ["a"] and fixed.units == 2 and not fixed.not_repaired
    assert _Counting.calls_total == 2, "only the two damaged units may be recomputed"
    assert verify(str(out)).exit_code == 0
    _same(out, good)


def test_verify_cli_reports_and_repairs_bit_identical(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "archive")
    ckpt = tiny_checkpoint(tmp_path / "tiny")
    sets = ["--set", f"checkpoint={ckpt}", "--set", "chunk=128", "--set", "halo=8"]
    for name in ("out", "clean"):
        res = runner.invoke(app, ["run", "-i", str(archive), "-o", str(tmp_path / name),
                                  "--local", "--no-progress", *sets])
        assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    _damage(out)

    res = runner.invoke(app, ["verify", "--output", str(out)])
    assert res.exit_code == 1, res.output
    for key in (LOST, FLIPPED, PYRAMID):
        assert key in res.output
    assert "sub/b: ok" in res.output and "--repair" in res.output
    only_b = runner.invoke(app, ["verify", "--output", str(out), "--scene", "sub/b"])
    assert only_b.exit_code == 0 and "a:" not in only_b.output, only_b.output

    fixed = runner.invoke(app, ["verify", "--output", str(out), "--repair", "--local"])
    assert fixed.exit_code == 0, fixed.output
    assert "a: repaired" in fixed.output and "0 with missing or damaged" in fixed.output
    _same(out, tmp_path / "clean")

    missing = runner.invoke(app, ["verify", "--output", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_nightly_redoes_missing_and_damaged_chunks_of_unchanged_scenes(clean, tmp_path) -> None:
    from pipeline.ops.nightly import nightly

    archive, good = clean
    out = tmp_path / "out"
    shutil.copytree(good, out)
    with LocalExecutor(TinyLoader()) as ex:
        assert nightly(str(archive), str(out), _cfg(), executor=ex).nothing_to_do
    _damage(out)  # a deleted, a same-size corrupted and a truncated pyramid chunk, in "a"
    (out / "sub" / "b.ome.zarr" / "labels/segmentation/0/c/0/1").unlink()
    _Counting.calls_total = 0
    with LocalExecutor(lambda device="auto", threads=None: _Counting()) as ex:
        night = nightly(str(archive), str(out), _cfg(), executor=ex, run_id="n-damaged")
        assert not night.nothing_to_do and night.exit_code == 0
        assert sorted(night.changes["damaged"]) == ["a", "sub/b"]
        assert set(night.changes["damaged"]["a"]) == {LOST, FLIPPED, PYRAMID}
        assert "2 with missing or damaged chunks (redone)" in night.summary
        assert sorted(night.processed_ok) == ["a", "sub/b"] and night.units_done == 3
        assert _Counting.calls_total == 3  # a#r0c2, a#r1c1, sub/b#r0c1: nothing else
        again = nightly(str(archive), str(out), _cfg(), executor=ex)
    assert again.nothing_to_do, again.summary
    _same(out, good)
    assert verify(str(out)).exit_code == 0


@pytest.mark.s3
def test_on_s3_the_listing_etags_reveal_a_rewritten_chunk_and_repair_works(
        clean, s3_server, s3_bucket) -> None:
    from pipeline.state.checks import inspect_scene
    from pipeline.state.integrity import _etag, listing

    archive, good = clean
    so = s3_server.storage_options
    out = f"{s3_bucket}/out"
    cfg = _cfg(s3={"endpoint_url": s3_server.endpoint_url, "key": s3_server.key,
                   "secret": s3_server.secret})
    with LocalExecutor(TinyLoader()) as ex:
        assert run_resumable(str(archive), out, cfg, executor=ex).run.ok
    store = f"{out}/a.ome.zarr"
    listed = listing(store, so)
    assert _etag(listed[FLIPPED]) is not None, "single-part PUTs: the ETag is the md5"
    fs = s3_server.filesystem()
    key = f"{store.removeprefix('s3://')}/{FLIPPED}"
    data = bytearray(fs.cat_file(key))
    data[0] ^= 0xFF
    fs.pipe_file(key, bytes(data))
    cheap = inspect_scene(out, "a", so)  # listing only: the ETag differs, then re-hashed
    assert [(p.key, p.problem) for p in cheap.problems] == [(FLIPPED, "damaged")]
    with LocalExecutor(TinyLoader()) as ex:
        fixed = repair(out, verify(out, so).damaged, so, executor=ex,
                       overrides={"s3": cfg.s3.model_dump(mode="python")})
    assert fixed.repaired == ["a"] and verify(out, so).exit_code == 0
    for got, want in zip([SceneWriter.open(out, "a", so).read_level(k, layer)
                          for layer in ("segmentation", "confidence") for k in range(3)],
                         _levels(good, "a"), strict=True):
        np.testing.assert_array_equal(got, want)

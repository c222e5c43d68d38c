"""The run driver's parts: RunRequest, scheduling, output preparation, output identity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from _standin import TinyLoader, smooth_image, write_zarr_scene

from pipeline.catalog import catalog
from pipeline.config import OUTPUT_SETTINGS, RunConfig, load_config
from pipeline.execute import LocalExecutor, model_info
from pipeline.io.omezarr import scene_store_url
from pipeline.run import MemoryLedger, RunRequest, run_pipeline
from pipeline.run.report import SceneReport
from pipeline.run.scheduler import batches, plan_work, read_ledger, scene_token
from pipeline.state.ledger import RunFingerprint


def _cfg(**kw) -> RunConfig:
    base = dict(chunk=64, halo=8, checkpoint="unused-standin", batch_size=3)
    return load_config(overrides={**base, **kw})


@pytest.fixture()
def archive(tmp_path) -> Path:
    root = tmp_path / "archive"
    write_zarr_scene(root, "a", smooth_image(0, 3, 150, 200))  # 3 x 4 units, edges partial
    write_zarr_scene(root, "b", smooth_image(1, 3, 64, 64))  # 1 unit
    return root


def _works(archive: Path, cfg: RunConfig, out: str = "/tmp/unused-out"):
    cat = catalog(str(archive))
    model = model_info(TinyLoader()())
    reports = {s.scene_id: SceneReport(s.scene_id, s.url) for s in cat.scenes}
    return plan_work(cat.scenes, cfg, model, reports, out, {})


# --------------------------------------------------------------------------- RunRequest


def test_run_request_is_stated_once_and_immutable():
    cfg = _cfg()
    req = RunRequest("in", "out", cfg, run_id="r1")
    assert RunRequest.of(req) is req
    assert RunRequest.of(req, progress=True).progress and not req.progress  # a new one
    assert RunRequest.of("in", "out", cfg, run_id="r1") == req
    with pytest.raises(TypeError):
        RunRequest.of(req, "out", cfg)
    with pytest.raises(TypeError):
        RunRequest.of("in", "out")
    with pytest.raises(AttributeError):
        req.run_id = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------- scheduling


def test_batches_hold_one_shape_in_grid_order_and_stop_for_a_failed_scene(archive):
    works, plan = _works(archive, _cfg())
    assert [w.scene_id for w in works] == ["a", "b"] and len(plan) == 13
    got = list(batches(works, 3, lambda w: True))
    for b in got:
        assert len({u.input_shape for u in b.units}) == 1, [u.unit_id for u in b.units]
        assert len(b.units) <= 3
    a = [u.unit_id for b in got if b.job.scene_id == "a" for u in b.units]
    assert sorted(a) == sorted(u.unit_id for u in works[0].grid)  # every unit exactly once
    # Windows are clipped to the scene, so the corner, the top edge and the interior have
    # their own shapes; each shape's units go in grid order: r0c0 | r0c1 r0c2 | ...
    assert [u.unit_id for u in got[0].units] == ["a#r0c0"]
    assert [u.unit_id for u in got[1].units] == ["a#r0c1", "a#r0c2"]
    interior = next(b for b in got if b.units[0].unit_id == "a#r1c1")
    assert [u.unit_id for u in interior.units] == ["a#r1c1", "a#r1c2"]
    # A scene that fails gets no more batches; the next scene still does.
    seen = []
    for b in batches(works, 3, lambda w: w.scene_id != "a" or not seen):
        seen.append(b.job.scene_id)
    assert seen == ["a", "b"]


def test_the_ledger_is_asked_once_per_scene_and_done_units_are_not_scheduled(archive):
    cfg = _cfg()
    works, _ = _works(archive, cfg)

    class Counting(MemoryLedger):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        def done_chunks(self, scene_id, token):
            self.calls.append(scene_id)
            return super().done_chunks(scene_id, token)

        def is_done(self, *a):  # the driver never asks unit by unit
            raise AssertionError("is_done called")

    ledger = Counting()
    a = works[0]
    for uid in ("a#r0c0", "a#r2c3"):
        ledger.mark_done("a", uid, a.token)
    ledger.mark_done("a", "a#r0c1", "another-token")  # other settings: not done here
    read_ledger(works, ledger)
    assert ledger.calls == ["a", "b"]
    assert a.done == {"a#r0c0", "a#r2c3"} and a.report.units_resumed == 2
    scheduled = {u.unit_id for b in batches(works, 3, lambda w: True) for u in b.units}
    assert "a#r0c1" in scheduled and not scheduled & {"a#r0c0", "a#r2c3"}


def test_output_identity_settings_are_stated_once():
    """The ledger's run fingerprint and every scene token change with exactly these fields."""
    assert "pyramid_levels" in OUTPUT_SETTINGS
    base = _cfg()
    info = type("S", (), {"fingerprint": "f0"})()
    model = model_info(TinyLoader()())
    fp, tok = RunFingerprint.from_config(base, "sha").token, scene_token(info, base, model)
    changes = {"pyramid_levels": 5, "halo": 16, "confidence": False, "value_max": 4095.0}
    assert set(changes) <= set(OUTPUT_SETTINGS)
    for field, value in changes.items():
        other = base.with_overrides(**{field: value})
        assert RunFingerprint.from_config(other, "sha").token != fp, field
        assert scene_token(info, other, model) != tok, field
    for field, value in {"batch_size": 7, "max_actors": 3, "io_retries": 0}.items():
        other = base.with_overrides(**{field: value})
        assert RunFingerprint.from_config(other, "sha").token == fp, field
        assert scene_token(info, other, model) == tok, field


# --------------------------------------------------------------------------- outputs


def test_every_store_exists_before_the_first_batch_is_sent(archive, tmp_path):
    out = tmp_path / "out"
    seen: dict[str, bool] = {}

    class Watching(LocalExecutor):
        def map(self, batches):
            for b in batches:
                if not seen:  # the first batch: look at every scene's store
                    for sid in ("a", "b"):
                        url = scene_store_url(str(out), sid)
                        seen[sid] = (Path(url) / "zarr.json").exists()
                yield from super().map([b])

    res = run_pipeline(str(archive), str(out), _cfg(), executor=Watching(TinyLoader()))
    assert res.ok, [s.error for s in res.manifest.failed]
    assert seen == {"a": True, "b": True}
    assert {"plan_s", "outputs_s", "execute_s"} <= set(res.manifest.stages)


def test_a_scene_id_that_cannot_be_a_path_fails_alone(archive, tmp_path):
    cat = catalog(str(archive))
    bad = dataclasses.replace(cat.get("a"), scene_id="../escape")
    model = model_info(TinyLoader()())
    reports = {"../escape": SceneReport("../escape", bad.url), "b": SceneReport("b", "u")}
    works, _ = plan_work([bad, cat.get("b")], _cfg(), model, reports, str(tmp_path), {})
    assert [w.scene_id for w in works] == ["b"]
    assert reports["../escape"].status == "failed" and "refused" in reports["../escape"].error

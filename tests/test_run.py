"""run_pipeline: manifest, per-scene failures, overwrite, resume via the ledger, dry run, seams."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from _standin import TinyLoader, TinySegmenter, smooth_image, write_zarr_scene

from pipeline.catalog import catalog
from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.io.omezarr import SceneWriter
from pipeline.run import MemoryLedger, run_pipeline
from pipeline.run.dryrun import dry_run
from pipeline.run.report import read_manifest


def _cfg(**kw):
    base = dict(chunk=128, halo=16, checkpoint="unused-standin", io_retries=0)
    return load_config(overrides={**base, **kw})


@pytest.fixture()
def archive(tmp_path) -> Path:
    root = tmp_path / "archive"
    write_zarr_scene(root, "good", smooth_image(0, 3, 200, 300))
    write_zarr_scene(root, "nested/u16", smooth_image(1, 3, 130, 129, "uint16"))
    return root


def test_manifest_records_every_scene_and_failures_do_not_stop_others(archive, tmp_path):
    # A scene whose pixels cannot be decoded (a corrupt chunk) ...
    write_zarr_scene(archive, "corrupt", smooth_image(2, 3, 200, 200), chunks=128)
    (archive / "corrupt.zarr" / "image" / "c" / "0" / "1" / "1").write_bytes(b"garbage")
    # ... one the catalog cannot read, and one with the wrong band count.
    (archive / "broken.zarr").mkdir()
    (archive / "broken.zarr" / "zarr.json").write_text("{not json")
    write_zarr_scene(archive, "fourband", smooth_image(3, 4, 64, 64))
    out = tmp_path / "out"
    res = run_pipeline(
        str(archive),
        str(out),
        _cfg(batch_size=1),
        run_id="r1",
        executor=LocalExecutor(TinyLoader()),
    )
    status = {s.scene_id: s.status for s in res.manifest.scenes}
    assert status == {
        "good": "ok",
        "nested/u16": "ok",
        "corrupt": "failed",
        "broken": "failed",
        "fourband": "failed",
    }
    errors = {s.scene_id: s.error for s in res.manifest.failed}
    # The first window overlapping the bad chunk fails the scene, with scene, unit and cause.
    assert re.match(
        r"read of corrupt#r0c0 failed: SceneReadError: scene 'corrupt'", errors["corrupt"]
    ), errors["corrupt"]
    assert errors["broken"].startswith("catalog:")
    assert "4 bands go to a model that expects 3" in errors["fourband"]
    assert "set bands: [0, 1, 2]" in errors["fourband"]
    assert res.exit_code == 1
    # The manifest on disk says the same, with timings per stage.
    assert res.manifest_url == str(out / "_hgn" / "manifest-r1.json")
    m = read_manifest(res.manifest_url)
    assert m["summary"]["scenes_ok"] == 2 and m["summary"]["scenes_failed"] == 3
    good = next(s for s in m["scenes"] if s["scene_id"] == "good")
    assert good["units_done"] == good["units_total"] == 2 * 3
    assert good["pixels"] == 200 * 300 == sum(good["class_pixels"].values())
    assert set(good["timings"]) == {"read", "infer", "write", "finalize"}
    assert {"catalog_s", "plan_s", "execute_s", "total_s"} <= set(m["stages"])
    assert m["model"]["arch"] == "tiny-standin"
    # Finished scenes are complete OME-Zarr stores carrying the run's provenance.
    w = SceneWriter.open(str(out), "nested/u16")
    assert w.complete and w.attrs["hgn"]["run_id"] == "r1"
    fingerprint = catalog(str(archive)).get("nested/u16").fingerprint
    assert w.attrs["hgn"]["input_fingerprint"] == fingerprint


def test_uint16_value_max_and_band_order_reach_the_model(tmp_path):
    root = tmp_path / "a"
    img = smooth_image(5, 4, 96, 100, "uint16") // 16  # 12-bit data
    write_zarr_scene(root, "s", img)
    cfg = _cfg(bands=[2, 0, 1], value_max=4095, halo=8, chunk=64)
    res = run_pipeline(str(root), str(tmp_path / "o"), cfg, executor=LocalExecutor(TinyLoader()))
    assert res.ok, res.manifest.failed
    got = SceneWriter.open(str(tmp_path / "o"), "s").read_level(0)
    ref = TinySegmenter().predict(img[[2, 0, 1]], value_max=4095).labels
    m = 3  # edges: reflect padding vs the net's zero padding
    np.testing.assert_array_equal(got[m:-m, m:-m], ref[m:-m, m:-m])


def test_existing_output_needs_overwrite(archive, tmp_path):
    out = str(tmp_path / "out")
    assert run_pipeline(str(archive), out, _cfg(), executor=LocalExecutor(TinyLoader())).ok
    again = run_pipeline(str(archive), out, _cfg(), executor=LocalExecutor(TinyLoader()))
    assert not again.ok
    assert all("already exists" in s.error for s in again.manifest.failed)
    assert run_pipeline(
        str(archive), out, _cfg(overwrite=True), executor=LocalExecutor(TinyLoader())
    ).ok


class _Counting(TinyLoader):
    def __call__(self, device="auto", threads=None):
        model = super().__call__(device, threads)
        _Counting.models.append(model)
        return model


def test_ledger_resume_skips_done_units_only_under_the_same_token(archive, tmp_path):
    out, ledger = str(tmp_path / "out"), MemoryLedger()
    first = run_pipeline(
        str(archive), out, _cfg(), ledger=ledger, executor=LocalExecutor(TinyLoader())
    )
    total = sum(s.units_total for s in first.manifest.scenes)
    # one marker per unit, plus one per finished scene for its pyramid's checksums
    assert first.ok and len(ledger) == total + len(first.manifest.ok)
    before = SceneWriter.open(out, "good").read_level(0)

    _Counting.models = []
    resumed = run_pipeline(
        str(archive), out, _cfg(), ledger=ledger, executor=LocalExecutor(_Counting())
    )
    assert resumed.ok
    assert sum(s.units_resumed for s in resumed.manifest.scenes) == total
    assert _Counting.models[0].calls == 0  # nothing was inferred again
    np.testing.assert_array_equal(SceneWriter.open(out, "good").read_level(0), before)

    # Another halo is another token: nothing may be reused (and the output is rewritten).
    changed = run_pipeline(
        str(archive),
        out,
        _cfg(halo=8, overwrite=True),
        ledger=ledger,
        executor=LocalExecutor(_Counting()),
    )
    assert changed.ok and sum(s.units_resumed for s in changed.manifest.scenes) == 0


def test_dry_run_plans_and_measures_without_writing(archive, tmp_path):
    d = dry_run(str(archive), _cfg(), loader=TinyLoader(), workers=2)
    assert d.scenes == 2 and d.plan.units == 2 * 3 + 2 * 2
    assert d.plan.output_pixels == 200 * 300 + 130 * 129
    assert d.rate_mpx_s and d.rate_mpx_s > 0
    assert d.inference_s == pytest.approx(d.plan.input_pixels / 1e6 / (d.rate_mpx_s * 2))
    # Each scene's fixed cost (open, create, finalize, record) is measured and added.
    assert d.per_scene_s and d.per_scene_s > 0
    assert d.estimated_s == pytest.approx(d.startup_s + d.inference_s + 2 * d.per_scene_s)
    assert not (tmp_path / "out").exists()


def _shipped_or_skip() -> Path:
    from hgn_model.checkpoint import SHIPPED_DIR

    path = SHIPPED_DIR / "hgn.safetensors"
    if not path.exists():  # the lead ships it; until then this is the only skip
        pytest.skip("the trained checkpoint hgn_model/checkpoints/hgn.safetensors is not shipped")
    return path


@pytest.mark.slow
def test_seams_are_no_worse_than_the_interior(tmp_path):
    """Disagreement with a run on a shifted grid: within 16 px of chunk borders vs elsewhere.

    Each landscape is run twice, the second time with the grid shifted by half a chunk. Pixels
    within ``band`` px of exactly one of the two grids' internal borders are "seam" pixels;
    pixels far from both are "interior". Disagreement between the runs comes from the windows'
    different context everywhere; tiling artefacts would add to it at the seams. Default halo
    (256 px); 512 px chunks give several internal borders per scene. Rates are pooled over two
    landscapes: at ~0.1 % disagreement a single scene's ratio swings with a few small blobs.

    1024 px chunks (1536 px windows): the shipped HGN's deep branch trains on 2048 px of
    context, and in windows far below that its labels follow the window (512 px chunks: 2.0 %
    seam vs 1.3 % interior disagreement, where the 400-step model of the older recipe gave
    0.21 % vs 0.22 %; the default chunk is 2048). A per-scene context pass would remove that.
    """
    from hgn_model.data.synthetic import generate_scene

    ckpt = _shipped_or_skip()
    chunk, halo, shift, band, n = 1024, 256, 256, 16, 1536
    seeds = (7, 8)
    root = tmp_path / "a"
    for seed in seeds:
        image = generate_scene(seed, n + shift, n + shift).image
        write_zarr_scene(root, f"base-{seed}", image[:, shift:, shift:])  # borders: k * chunk
        write_zarr_scene(root, f"shifted-{seed}", image)  # borders: k * chunk - shift
    cfg = load_config(overrides=dict(chunk=chunk, halo=halo, checkpoint=str(ckpt)))
    res = run_pipeline(str(root), str(tmp_path / "o"), cfg, executor=LocalExecutor(cfg.checkpoint))
    assert res.ok, res.manifest.failed
    idx = np.arange(n)

    def near_borders(offset: int) -> np.ndarray:  # (n, n): within `band` px of a border
        d = (idx - offset) % chunk
        line = (np.minimum(d, chunk - d) < band) & (idx > band) & (idx < n - band)
        return line[:, None] | line[None, :]

    keep = np.zeros((n, n), bool)
    keep[halo:-halo, halo:-halo] = True  # the scene edges differ in content between the runs
    near_a, near_b = near_borders(0), near_borders(-shift % chunk)
    seam, interior = (near_a ^ near_b) & keep, ~(near_a | near_b) & keep
    counts = np.zeros((2, 2), np.int64)  # [seam, interior] x [disagree, total]
    for seed in seeds:
        a = SceneWriter.open(str(tmp_path / "o"), f"base-{seed}").read_level(0)
        b = SceneWriter.open(str(tmp_path / "o"), f"shifted-{seed}").read_level(0)
        differ = a != b[shift:, shift:]
        for k, region in enumerate((seam, interior)):
            counts[k] += differ[region].sum(), region.sum()
    rate_seam, rate_int = counts[:, 0] / counts[:, 1]
    ratio = (rate_seam + 1e-4) / (rate_int + 1e-4)
    assert ratio <= 1.5, f"seam disagreement {rate_seam:.5f} vs interior {rate_int:.5f}"


def test_blocks_of_chunks_write_what_single_chunks_write(archive, tmp_path):
    """unit_chunks=2 (one window per 2x2 chunks): same labels once halo >= receptive field."""
    outs = {}
    for k in (1, 2):
        out = tmp_path / f"k{k}"
        res = run_pipeline(
            str(archive),
            str(out),
            _cfg(unit_chunks=k, halo=4),
            executor=LocalExecutor(TinyLoader()),
        )
        assert res.ok, res.manifest.failed
        outs[k] = SceneWriter.open(str(out), "good").read_level(0)
        units = {s.scene_id: s.units_total for s in res.manifest.scenes}
        assert units["good"] == (6 if k == 1 else 2)
    np.testing.assert_array_equal(outs[1], outs[2])


def test_geotiff_input_keeps_its_georeference(tmp_path):
    from conftest import write_geotiff

    root = tmp_path / "tif"
    root.mkdir()
    img = smooth_image(4, 3, 150, 170)
    transform = (500000.0, 10.0, 0.0, 4200000.0, 0.0, -10.0)
    write_geotiff(root / "field.tif", img, "EPSG:32633", transform, photometric="RGB",
                  tiled=True, blockxsize=64, blockysize=64)
    res = run_pipeline(str(root), str(tmp_path / "o"), _cfg(), executor=LocalExecutor(TinyLoader()))
    assert res.ok, res.manifest.failed
    w = SceneWriter.open(str(tmp_path / "o"), "field")
    geo = w.attrs["hgn"]["georeference"]
    assert geo["crs"] == "EPSG:32633" and tuple(geo["transform"]) == transform
    ref = TinySegmenter().predict(img).labels
    np.testing.assert_array_equal(w.read_level(0)[3:-3, 3:-3], ref[3:-3, 3:-3])

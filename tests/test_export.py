"""``hgn-pipeline export --format cog``: what GDAL sees in the file, local and S3 outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.io.omezarr import SceneWriter
from pipeline.scene import Georef

runner = CliRunner()
CLASSES = [("no data", (0, 0, 0, 0)), ("water", (0, 0, 255, 255)),
           ("forest", (0, 128, 0, 255)), ("urban", (200, 50, 50, 255))]
GEO = Georef("EPSG:32633", (500_000.0, 10.0, 0.0, 4_600_000.0, 0.0, -10.0))
H, W, CHUNK = 1100, 900, 256


def _labels() -> np.ndarray:
    """2x2 blocks whose mode (3 of 4 pixels) differs from the top-left (nearest) pixel."""
    rng = np.random.default_rng(0)
    mode = np.kron(rng.integers(1, 4, (H // 2, W // 2)), np.ones((2, 2), np.int64))
    top_left = (mode % 3) + 1  # another class than the mode
    out = mode.copy()
    out[0::2, 0::2] = top_left[0::2, 0::2]
    out[:50, :] = 0  # a nodata strip
    return out.astype(np.uint8)


def _store(root: str, so: dict, georef: Georef | None = GEO, scene: str = "t/s1") -> tuple:
    labels = _labels()
    conf = np.where(labels > 0, 100 + labels * 20, 0).astype(np.uint8)
    writer = SceneWriter.create(root, scene, H, W, CHUNK, CLASSES, {"arch": "test"},
                                georef=georef, storage_options=so)
    for y in range(0, H, CHUNK):
        for x in range(0, W, CHUNK):
            writer.write_block(y, x, labels[y:y + CHUNK, x:x + CHUNK],
                               conf[y:y + CHUNK, x:x + CHUNK])
    writer.finalize()
    return labels, conf


def _export(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["export", *args], terminal_width=200)
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> tuple[str, np.ndarray, np.ndarray]:
    root = str(tmp_path_factory.mktemp("export") / "out")
    labels, conf = _store(root, {})
    return root, labels, conf


def test_labels_cog_is_what_a_gis_expects(out, tmp_path: Path) -> None:
    root, labels, _ = out
    path = tmp_path / "labels.tif"
    code, text = _export("--output", root, "--scene", "t/s1", "--format", "cog", "--path",
                         str(path))
    assert code == 0, text
    assert "EPSG:32633" in text and str(path) in text
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.profile["compress"] == "deflate" and ds.block_shapes == [(512, 512)]
        assert ds.crs.to_epsg() == 32633 and ds.transform.to_gdal() == GEO.transform
        assert (ds.height, ds.width, ds.count, ds.dtypes[0]) == (H, W, 1, "uint8")
        assert ds.nodata == 0
        cmap = ds.colormap(1)
        assert [cmap[i] for i in range(4)] == [c for _, c in CLASSES]
        tags = ds.tags()
        assert tags["CLASS_2"] == "forest" and "urban" in tags["CLASSES"]
        np.testing.assert_array_equal(ds.read(1), labels)
        assert ds.overviews(1) == [2, 4]
        level1 = ds.read(1, out_shape=(H // 2, W // 2), resampling=Resampling.nearest)
    mode = labels[1::2, 1::2]  # in every 2x2 block three pixels hold the mode
    assert (level1[25:] == mode[25:]).mean() > 0.999  # MODE overview, never the top-left one
    assert not level1[:25].any()  # nodata stays nodata in the overviews


def test_confidence_layer_and_windows(out, tmp_path: Path) -> None:
    root, labels, conf = out
    path = tmp_path / "conf.tif"
    code, text = _export("-o", root, "-s", "t/s1", "--path", str(path), "--what",
                         "confidence", "--box", "100,612,256,768", "--compress", "zstd")
    assert code == 0, text
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(ds.read(1), conf[100:612, 256:768])
        assert ds.transform.to_gdal() == (500_000.0 + 2560, 10.0, 0.0, 4_600_000.0 - 1000, 0.0,
                                          -10.0)
        assert ds.profile["compress"] == "zstd" and ds.tags()["LAYER"] == "confidence"
        with pytest.raises(ValueError):
            ds.colormap(1)
    bbox = "503000,4593000,505000,4595000"  # xmin, ymin, xmax, ymax in EPSG:32633
    path = tmp_path / "bbox.tif"
    code, text = _export("-o", root, "-s", "t/s1", "--path", str(path), "--bbox", bbox)
    assert code == 0, text
    with rasterio.open(path) as ds:
        assert tuple(ds.bounds) == (503000.0, 4593000.0, 505000.0, 4595000.0)
        np.testing.assert_array_equal(ds.read(1), labels[500:700, 300:500])


def test_refusals_name_the_problem(out, tmp_path: Path) -> None:
    root, _, _ = out
    for args, needle in (
        (["--format", "png"], "--format 'png'"),
        (["--what", "probs"], "--what 'probs'"),
        (["--box", "0,10,0,5000"], "outside scene 't/s1'"),
        (["--scene", "t/nope"], "scene 't/nope' has no output"),
    ):
        base = {"--output": root, "--scene": "t/s1", "--path": str(tmp_path / "x.tif")}
        for k, v in zip(args[::2], args[1::2], strict=True):
            base[k] = v
        code, text = _export(*[x for kv in base.items() for x in kv])
        assert code == 2 and needle in text, (args, text)
        assert not (tmp_path / "x.tif").exists()


def test_scene_without_georeference_exports_pixels_only(tmp_path: Path) -> None:
    root = str(tmp_path / "out")
    labels, _ = _store(root, {}, georef=None, scene="plain")
    code, text = _export("-o", root, "-s", "plain", "--path", str(tmp_path / "p.tif"))
    assert code == 0 and "no georeference" in text
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert ds.crs is None and ds.colormap(1)[1] == (0, 0, 255, 255)
        np.testing.assert_array_equal(ds.read(1), labels)


@pytest.mark.s3
def test_s3_output_to_local_and_s3_cog(s3_server, tmp_path: Path) -> None:
    import yaml

    bucket = s3_server.make_bucket("export-out")
    so = s3_server.storage_options
    labels, _ = _store(f"{bucket}/run", so)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"s3": {"endpoint_url": s3_server.endpoint_url,
                                          "key": s3_server.key, "secret": s3_server.secret}}))
    local = tmp_path / "from_s3.tif"
    code, text = _export("-o", f"{bucket}/run", "-s", "t/s1", "--path", str(local), "-c",
                         str(cfg))
    assert code == 0, text
    remote = f"{bucket}/cogs/s1.tif"
    code, text = _export("-o", f"{bucket}/run", "-s", "t/s1", "--path", remote, "-c", str(cfg))
    assert code == 0, text
    assert s3_server.secret not in text
    fetched = tmp_path / "fetched.tif"
    s3_server.filesystem().get(remote[5:], str(fetched))
    for path in (local, fetched):
        with rasterio.open(path) as ds:
            assert ds.crs.to_epsg() == 32633
            np.testing.assert_array_equal(ds.read(1), labels)


def test_custom_crs_survives_run_store_and_cog(tmp_path: Path) -> None:
    """A projection without an EPSG code (the GeoKey parser used to drop such CRSs)."""
    import pyproj
    from _standin import TinyLoader, smooth_image
    from conftest import write_geotiff

    from pipeline.config import load_config
    from pipeline.execute import LocalExecutor
    from pipeline.run import run_pipeline

    custom = ("+proj=lcc +lat_0=33.75 +lon_0=-79 +lat_1=36.1666666666667 +lat_2=34.3333333333333"
              " +x_0=609601.22 +y_0=0 +ellps=GRS80 +units=m +no_defs")
    (tmp_path / "a").mkdir()
    write_geotiff(tmp_path / "a/nc.tif", smooth_image(1, 3, 90, 120), custom,
                  (600000.0, 30.0, 0.0, 250000.0, 0.0, -30.0))
    cfg = load_config(overrides={"chunk": 64, "halo": 8})
    res = run_pipeline(str(tmp_path / "a"), str(tmp_path / "o"), cfg,
                       executor=LocalExecutor(TinyLoader()))
    assert res.ok, res.manifest.failed
    attrs = SceneWriter.open(str(tmp_path / "o"), "nc").attrs
    assert "proj:code" not in attrs
    assert pyproj.CRS.from_wkt(attrs["proj:wkt2"]).equals(pyproj.CRS.from_proj4(custom))
    assert attrs["hgn"]["georeference"]["crs"] == attrs["proj:wkt2"]
    code, text = _export("-o", str(tmp_path / "o"), "-s", "nc", "--path", str(tmp_path / "c.tif"))
    assert code == 0 and "custom (WKT2)" in text, text
    with rasterio.open(tmp_path / "c.tif") as ds:
        assert pyproj.CRS.from_wkt(ds.crs.to_wkt()).equals(pyproj.CRS.from_proj4(custom))
        assert ds.transform.to_gdal() == (600000.0, 30.0, 0.0, 250000.0, 0.0, -30.0)

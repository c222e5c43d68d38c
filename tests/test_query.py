"""Query API and CLI over output stores written by SceneWriter, local and on a real S3."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from PIL import Image
from typer.testing import CliRunner

from pipeline.errors import WindowError
from pipeline.io.omezarr import SceneWriter, mean_downsample, mode_downsample
from pipeline.query import OutputStore, QueryError, SceneNotFoundError
from pipeline.scene import Georef
from pipeline.state.ledger import Ledger, RunFingerprint

CLASSES = [("unknown", (0, 0, 0, 0)), ("water", (0, 0, 255, 255)),
           ("forest", (0, 128, 0, 255)), ("urban", (200, 50, 50, 255))]
GEO = Georef("EPSG:32633", (500_000.0, 10.0, 0.0, 4_000_000.0, 0.0, -10.0))


def _labels(h: int, w: int, seed: int) -> np.ndarray:
    """Blocky class regions (so 2x2 modes are not trivial) with some noise."""
    rng = np.random.default_rng(seed)
    blocks = np.kron(rng.integers(0, 4, (h // 7 + 1, w // 7 + 1)), np.ones((7, 7), np.int64))
    noise = rng.random((h, w)) < 0.1
    out = np.where(noise, rng.integers(0, 4, (h, w)), blocks[:h, :w])
    return out.astype(np.uint8)


def _write(root: str, so: dict, scene_id: str, labels: np.ndarray, chunk: int,
           conf: np.ndarray | None, georef: Georef | None, provenance: dict) -> None:
    h, w = labels.shape
    wr = SceneWriter.create(root, scene_id, h, w, chunk, CLASSES, provenance, georef=georef,
                            confidence=conf is not None, levels=3, storage_options=so)
    for y in range(0, h, chunk):
        for x in range(0, w, chunk):
            c = None if conf is None else conf[y:y + chunk, x:x + chunk]
            wr.write_block(y, x, labels[y:y + chunk, x:x + chunk], c)
    wr.finalize({"run_id": "r1", "finished": "2026-11-25T00:00:00+00:00"})


@dataclass
class Out:
    root: str
    so: dict
    a: np.ndarray  # labels of scene "plain/a" (300 x 517, chunk 128, with confidence)
    conf: np.ndarray
    source: np.ndarray  # its input image (3, 300, 517) uint8
    geo: np.ndarray  # labels of scene "geo" (200 x 260, chunk 64, georeferenced)


@pytest.fixture(scope="module", params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def out(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Out:
    if request.param == "local":
        base, so = str(tmp_path_factory.mktemp("query")), {}
    else:
        server = request.getfixturevalue("s3_server")
        base, so = server.make_bucket("query-tests"), server.storage_options
    root, src_url = f"{base}/out", f"{base}/archive/a.zarr"
    rng = np.random.default_rng(7)
    source = rng.integers(0, 256, (3, 300, 517), dtype=np.uint8)
    kw = {"storage_options": so} if so else {}
    zarr.create_array(store=src_url, data=source, chunks=(3, 128, 128), **kw)
    a, conf = _labels(300, 517, 1), rng.integers(0, 256, (300, 517), dtype=np.uint8)
    prov = {"arch": "hgn", "checkpoint_sha256": "c" * 64, "input_url": src_url,
            "input_fingerprint": "fp-a", "config": {"layout": "CHW", "bands": None}}
    _write(root, so, "plain/a", a, 128, conf, None, prov)
    geo = _labels(200, 260, 2)
    _write(root, so, "geo", geo, 64, None, GEO, {**prov, "input_fingerprint": "fp-geo"})
    led = Ledger.open(root, RunFingerprint.from_settings({"x": 1}), storage_options=so)
    led.mark_scene("plain/a", "done", "fp-a")
    led.mark_scene("geo", "done", "fp-geo")
    led.mark_scene("broken", "failed", "fp-b", {"error": "cannot read: truncated TIFF"})
    return Out(root, so, a, conf, source, geo)


def test_list_scenes_status_and_provenance(out: Out) -> None:
    rows = {r.scene_id: r for r in OutputStore(out.root, out.so).list_scenes()}
    assert set(rows) == {"plain/a", "geo", "broken"}
    a, geo, broken = rows["plain/a"], rows["geo"], rows["broken"]
    assert (a.status, a.height, a.width, a.levels, a.arch) == ("done", 300, 517, 3, "hgn")
    assert a.input_fingerprint == "fp-a" and not a.georeferenced and a.store.endswith(".ome.zarr")
    assert geo.georeferenced and geo.input_fingerprint == "fp-geo"
    assert (broken.status, broken.store, broken.error) == (
        "failed", None, "cannot read: truncated TIFF")


def test_metadata_and_unknown_scene(out: Out) -> None:
    store = OutputStore(out.root, out.so)
    meta = store.scene("geo").metadata()
    assert meta["level_shapes"] == [[200, 260], [100, 130], [50, 65]]
    assert [c["name"] for c in meta["classes"]] == [n for n, _ in CLASSES]
    assert meta["georeference"] == {"crs": "EPSG:32633", "transform": list(GEO.transform)}
    assert meta["layers"] == ["segmentation"] and meta["hgn"]["arch"] == "hgn"
    with pytest.raises(SceneNotFoundError, match=r"'plain/b'.*did you mean 'plain/a'"):
        store.scene("plain/b")


def test_read_windows_match_numpy(out: Out) -> None:
    view = OutputStore(out.root, out.so).scene("plain/a")
    box = (37, 261, 100, 517)
    np.testing.assert_array_equal(view.read(box), out.a[37:261, 100:517])
    np.testing.assert_array_equal(view.read(), out.a)
    np.testing.assert_array_equal(view.read(box, layer="confidence"), out.conf[37:261, 100:517])
    lvl1 = mode_downsample(out.a)
    np.testing.assert_array_equal(view.read(box, level=1), lvl1[18:131, 50:259])
    lvl2 = mode_downsample(lvl1)
    np.testing.assert_array_equal(view.read(level=2), lvl2)
    np.testing.assert_array_equal(view.read(level=1, layer="confidence"),
                                  mean_downsample(out.conf))
    da = view.read_xarray(box, level=1)
    assert da.dims == ("y", "x") and da.attrs["flag_meanings"].split()[1] == "water"
    # Pixel-centre coordinates in level-0 units: level-1 pixel 18 covers rows 36-37.
    assert da.y.values[0] == 36.5 and da.x.values[1] - da.x.values[0] == 2.0


def test_bad_queries_say_what_is_wrong(out: Out) -> None:
    view = OutputStore(out.root, out.so).scene("plain/a")
    with pytest.raises(WindowError, match=r"'plain/a' of 300 x 517 px"):
        view.read((0, 301, 0, 10))
    with pytest.raises(WindowError, match="outside"):
        view.read((10, 10, 0, 10))  # empty
    np.testing.assert_array_equal(view.read((250, 400, -5, 20), clip=True), out.a[250:, :20])
    with pytest.raises(QueryError, match=r"level=3 .* levels 0\.\.2"):
        view.read(level=3)
    with pytest.raises(QueryError, match="no georeference"):
        view.read(bbox=(0, 0, 1, 1))
    geo = OutputStore(out.root, out.so).scene("geo")
    with pytest.raises(QueryError, match=r"layer='confidence'.*\['segmentation'\]"):
        geo.read(layer="confidence")
    with pytest.raises(WindowError, match="outside"):
        geo.read(bbox=(0, 0, 100, 100))  # far away from the scene


def test_geographic_bbox_and_coordinates(out: Out) -> None:
    geo = OutputStore(out.root, out.so).scene("geo")
    # x 500_300..500_900 -> cols 30..90; y 3_999_500..3_999_900 -> rows 10..50 (dy < 0)
    bbox = (500_300.0, 3_999_500.0, 500_900.0, 3_999_900.0)
    assert geo.pixel_box(bbox=bbox) == (10, 50, 30, 90)
    np.testing.assert_array_equal(geo.read(bbox=bbox), out.geo[10:50, 30:90])
    da = geo.read_xarray(bbox=bbox, level=1)
    np.testing.assert_array_equal(da.values, mode_downsample(out.geo)[5:25, 15:45])
    assert da.x.values[0] == 500_000 + 15 * 20 + 10  # centre of a 20 m level-1 pixel
    assert da.y.values[0] == 4_000_000 - 5 * 20 - 10
    assert da.attrs["crs"] == "EPSG:32633" and da.attrs["transform"][1] == 20.0
    assert isinstance(da, xr.DataArray)


def test_class_stats_exact_and_from_coarse_level(out: Out) -> None:
    geo = OutputStore(out.root, out.so).scene("geo")
    box = (3, 197, 5, 251)
    exact = geo.class_stats(box)
    want = np.bincount(out.geo[3:197, 5:251].ravel(), minlength=4)
    assert [r.pixels for r in exact.rows] == want.tolist() and exact.exact
    assert exact.area_unit == "m2"
    # every pixel's footprint measured independently on the ellipsoid
    pix = _pixel_areas_m2(GEO, box)
    labels = out.geo[3:197, 5:251]
    for r in exact.rows:
        assert r.area == pytest.approx(pix[labels == r.label].sum(), rel=1e-7), r.name
    # near the central meridian UTM shrinks distances by k = 0.9996: true area = 100 m2 / k^2
    assert exact.rows[1].area / (want[1] * 100.0) == pytest.approx(1 / 0.9996**2, rel=1e-5)
    coarse = geo.class_stats(box, level=2)
    assert not coarse.exact
    assert sum(r.pixels for r in coarse.rows) == pytest.approx(194 * 246)  # totals stay exact
    for r, n in zip(coarse.rows, want, strict=True):
        assert r.pixels == pytest.approx(n, rel=0.25), r.name
    parsed = list(csv.DictReader(io.StringIO(exact.to_csv())))
    assert [int(p["pixels"]) for p in parsed] == want.tolist()
    assert float(parsed[1]["area_ha"]) == pytest.approx(exact.rows[1].area / 1e4, rel=1e-6)
    doc = json.loads(exact.to_json())
    assert doc["area_unit"] == "m2" and doc["rows"][1]["name"] == "water"
    assert doc["rows"][1]["label"] == 1 and doc["rows"][1]["area"] == exact.rows[1].area
    plain = OutputStore(out.root, out.so).scene("plain/a").class_stats()
    assert plain.area_unit is None and {r.area for r in plain.rows} == {None}
    assert "no georeference" in plain.note and "area_m2" not in plain.to_csv()
    assert [r.pixels for r in plain.rows] == np.bincount(out.a.ravel(), minlength=4).tolist()


def _pixel_areas_m2(georef: Georef, box: tuple[int, int, int, int]) -> np.ndarray:
    """Geodesic area of each pixel's 4-corner footprint (pyproj), for the test's reference."""
    import pyproj

    crs = pyproj.CRS.from_user_input(georef.crs)
    to_ll = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    geod = crs.get_geod()
    x0, dx, rx, y0, ry, dy = georef.transform
    y_0, y_1, x_0, x_1 = box
    out = np.empty((y_1 - y_0, x_1 - x_0))
    for i, r in enumerate(range(y_0, y_1)):
        rr = np.array([r, r, r + 1, r + 1])
        for j, c in enumerate(range(x_0, x_1)):
            cc = np.array([c, c + 1, c + 1, c])
            lon, lat = to_ll.transform(x0 + cc * dx + rr * rx, y0 + cc * ry + rr * dy)
            out[i, j] = abs(geod.polygon_area_perimeter(lon, lat)[0])
    return out


def test_preview_png_colours_and_source(out: Out, tmp_path: Path) -> None:
    view = OutputStore(out.root, out.so).scene("plain/a")
    png = view.preview(tmp_path / "a.png", max_size=130)
    img = np.asarray(Image.open(png))
    # step = ceil(517 / 130) = 4 -> level 2, no further striding
    lut = np.array([c for _, c in CLASSES], np.uint8)
    expected = lut[mode_downsample(mode_downsample(out.a))]
    np.testing.assert_array_equal(img, expected)
    # alpha 0: the source alone, subsampled by the same step and stretched for display.
    src = np.asarray(Image.open(view.preview(tmp_path / "s.png", box=(0, 300, 0, 400),
                                             max_size=100, source=True, alpha=0.0)))
    sub = out.source[:, :300:4, :400:4].astype(np.float32)
    lo, hi = np.percentile(sub, 2), np.percentile(sub, 98)
    want = np.clip((sub - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    assert src.shape == (75, 100, 3)
    assert np.abs(src.astype(int) - want.astype(int)).max() <= 1
    with pytest.raises(QueryError, match="alpha"):
        view.preview(tmp_path / "x.png", alpha=2.0)


def _cli(out: Out, *args: str) -> tuple[int, str]:
    from pipeline.cli import app

    env = {}
    if out.so:
        env = {"AWS_ACCESS_KEY_ID": out.so["key"], "AWS_SECRET_ACCESS_KEY": out.so["secret"],
               "AWS_ENDPOINT_URL_S3": out.so["client_kwargs"]["endpoint_url"]}
    res = CliRunner().invoke(app, ["query", *args], env=env)
    return res.exit_code, res.output


def test_cli(out: Out, tmp_path: Path) -> None:
    code, text = _cli(out, "scenes", "--output", out.root, "--json")
    assert code == 0, text
    assert {json.loads(line)["scene_id"] for line in text.splitlines()} == {
        "plain/a", "geo", "broken"}
    code, text = _cli(out, "show", "-o", out.root, "-s", "geo")
    assert code == 0 and json.loads(text)["height"] == 200
    code, text = _cli(out, "read", "-o", out.root, "-s", "plain/a", "--box", "0,50,0,60",
                      "--out", str(tmp_path / "w.npy"))
    assert code == 0, text
    np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), out.a[:50, :60])
    code, text = _cli(out, "read", "-o", out.root, "-s", "geo", "--level", "1",
                      "--out", str(tmp_path / "g.nc"))
    assert code == 0, text
    with xr.open_dataarray(tmp_path / "g.nc", engine="scipy") as da:
        np.testing.assert_array_equal(da.values, mode_downsample(out.geo))
        assert da.attrs["crs"] == "EPSG:32633"
    code, text = _cli(out, "stats", "-o", out.root, "-s", "geo", "--format", "csv")
    assert code == 0 and text.splitlines()[0] == (
        "label,name,pixels,area_m2,area_ha,area_km2,fraction")
    code, text = _cli(out, "stats", "-o", out.root, "-s", "geo", "--format", "json")
    assert code == 0 and json.loads(text)["area_unit"] == "m2"
    code, text = _cli(out, "stats", "-o", out.root, "-s", "geo")
    assert code == 0 and "area (ha)" in text and "area (km2)" in text and "geodesic" in text
    code, text = _cli(out, "stats", "-o", out.root, "-s", "plain/a")
    assert code == 0 and "pixels only" in text and "(ha)" not in text
    code, text = _cli(out, "preview", "-o", out.root, "-s", "geo", "--png",
                      str(tmp_path / "g.png"), "--max-size", "64")
    assert code == 0 and Image.open(tmp_path / "g.png").size == (65, 50)
    code, text = _cli(out, "stats", "-o", out.root, "-s", "nope")
    assert code == 2 and "scene 'nope' has no output" in text
    code, text = _cli(out, "read", "-o", out.root, "-s", "geo", "--level", "9",
                      "--out", str(tmp_path / "x.npy"))
    assert code == 2 and "levels 0..2" in text

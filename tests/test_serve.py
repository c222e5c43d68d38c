"""The viewer's HTTP surface (Starlette app in-process): API answers, tiles, 404s, read-only.

What a browser shows is tested in real Chromium by tests/test_viewer_browser.py; here every
answer is compared with what the query API reads from the same stores.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from _outputs import CLASSES
from _outputs import labels as _labels
from _outputs import write_scene as _write
from _standin import TinyLoader, smooth_image, write_zarr_scene
from PIL import Image
from starlette.testclient import TestClient

from pipeline.change import encode
from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.ops.diff import diff_scene
from pipeline.ops.nightly import nightly
from pipeline.ops.previous import keep_previous
from pipeline.ops.stac import update_catalog
from pipeline.query import OutputStore
from pipeline.serve import create_app


def _png(resp) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(resp.content)).convert("RGBA"))


def _lut() -> np.ndarray:
    lut = np.zeros((256, 4), np.uint8)
    for i, (_, rgba) in enumerate(CLASSES):
        lut[i] = rgba
    return lut


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> str:
    """t/s1 (georeferenced, with a change layer against r1) and plain (no georeference)."""
    root = str(tmp_path_factory.mktemp("serve") / "out")
    _write(root, {}, _labels(1), "r1")
    keep_previous(root, ["t/s1"])
    _write(root, {}, _labels(2), "r2", overwrite=True)
    diff_scene(root, "t/s1", "r1")
    _write(root, {}, _labels(3)[:100, :70], "r2", scene="plain", georef=None)
    update_catalog(root)
    return root


@pytest.fixture(scope="module")
def client(out: str) -> TestClient:
    with TestClient(create_app(out)) as c:
        yield c


def test_scenes_meta_legend_point(client: TestClient, out: str) -> None:
    scenes = client.get("/api/scenes").json()["scenes"]
    assert [(s["scene_id"], s["status"], s["width"], s["run_id"]) for s in scenes] == [
        ("plain", "complete", 70, "r2"), ("t/s1", "complete", 230, "r2")]
    meta = client.get("/api/scene", params={"scene": "t/s1"}).json()
    assert (meta["height"], meta["width"], meta["levels"], meta["min_native_zoom"]) == (
        150, 230, 3, -2)
    assert meta["layers"]["change"] == {"available": True, "against": "run r1", "reason": None}
    assert meta["layers"]["source"]["available"] is False  # these stores name no input
    assert "not readable" in meta["layers"]["source"]["reason"]
    assert meta["georeference"]["crs"] == "EPSG:32633" and meta["georeference"]["units"] == (
        "metre")

    view = OutputStore(out).scene("t/s1")
    rows = client.get("/api/legend", params={"scene": "t/s1"}).json()["rows"]
    stats = view.class_stats()
    assert [(r["name"], r["pixels"], r["area_m2"]) for r in rows] == [
        (r.name, r.pixels, r.area) for r in stats.rows]
    assert rows[1]["area_ha"] == pytest.approx(stats.rows[1].area / 1e4)

    lab, prev = view.read(), _labels(1)
    for x, y in ((0, 0), (229.7, 149.2), (113, 77)):
        p = client.get("/api/point", params={"scene": "t/s1", "x": x, "y": y}).json()
        r, c = int(y), int(x)
        assert (p["x"], p["y"], p["label"], p["class"]) == (c, r, lab[r, c], CLASSES[lab[r, c]][0])
        assert p["confidence"] == pytest.approx(200 / 255)
        assert p["change"]["code"] == encode(prev, lab)[r, c]
        assert p["crs_xy"] == [500_000 + (c + 0.5) * 10, 4_000_000 - (r + 0.5) * 10]
    plain = client.get("/api/point", params={"scene": "plain", "x": 3, "y": 4}).json()
    assert "crs_xy" not in plain and "change" not in plain
    assert client.get("/api/point", params={"scene": "t/s1", "x": 230, "y": 0}).status_code == 404
    assert client.get("/api/point", params={"scene": "t/s1", "x": "a"}).status_code == 400


def test_tiles_are_the_pyramid_windows(client: TestClient, out: str) -> None:
    view = OutputStore(out).scene("t/s1")
    lut = _lut()
    for z in (0, -1, -2):
        level = -z
        expect = lut[view.read(level=level)]
        tile = _png(client.get(f"/tiles/segmentation/{z}/0/0.png", params={"scene": "t/s1"}))
        h, w = expect.shape[:2]
        np.testing.assert_array_equal(tile[:h, :w], expect)
        assert not tile[h:].any() and not tile[:, w:].any()  # outside the scene: transparent
    conf = _png(client.get("/tiles/confidence/-1/0/0.png", params={"scene": "t/s1"}))
    assert (conf[:75, :115, 3] == 255).all() and len(np.unique(conf[:75, :115, :3], axis=0)) == 1
    change = _png(client.get("/tiles/change/0/0/0.png", params={"scene": "t/s1"}))
    codes = encode(_labels(1), view.read())
    changed = (codes != 0) & (codes // 256 != codes % 256)
    np.testing.assert_array_equal(change[:150, :230][changed][:, :3],
                                  lut[view.read()][changed][:, :3])  # the new class's colour
    assert (change[:150, :230][codes == 0][:, 3] == 0).all()  # nodata stays transparent
    for url in ("/tiles/segmentation/1/0/0.png", "/tiles/segmentation/-3/0/0.png",
                "/tiles/segmentation/0/1/0.png", "/tiles/segmentation/x/0/0.png",
                "/tiles/bogus/0/0/0.png", "/tiles/source/0/0/0.png"):
        assert client.get(url, params={"scene": "t/s1"}).status_code == 404, url
    assert client.get("/tiles/change/0/0/0.png", params={"scene": "plain"}).status_code == 404


def test_unknown_scenes_and_traversal_are_404(client: TestClient, out: str) -> None:
    r = client.get("/api/scene", params={"scene": "t/s2"})
    assert r.status_code == 404 and "did you mean 't/s1'" in r.json()["error"]
    for sid in ("../t/s1", "/etc/passwd", "t/../t/s1", "", "t\\s1"):
        assert client.get("/api/scene", params={"scene": sid}).status_code == 404, sid
        assert client.get("/tiles/segmentation/0/0/0.png",
                          params={"scene": sid}).status_code == 404, sid
    assert client.get("/api/history", params={"scene": "nope"}).status_code == 404
    assert client.get("/api/changes", params={"scene": "plain"}).status_code == 404
    for path in ("/t/s1.ome.zarr/../../../etc/passwd", "/t/s1.ome.zarr/%2e%2e/%2e%2e/x",
                 "/static/../app.py", "/static/%2e%2e/app.py", "/_hgn/ledger/current.json",
                 "/_hgn/stac/../lock.json", "/etc/passwd", "/nope.ome.zarr/zarr.json",
                 "/t/s1.ome.zarr/labels/segmentation/0/c/9/9", "/plain.ome.zarrx/zarr.json"):
        assert client.get(path).status_code == 404, path
    # What may be read is there: the stores' zarr objects and the STAC files.
    assert client.get("/t/s1.ome.zarr/zarr.json").json()["attributes"]["hgn"]["run_id"] == "r2"
    assert client.get("/t/s1.ome.zarr/labels/segmentation/0/c/0/0").status_code == 200
    cat = client.get("/catalog.json").json()
    for link in (ln for ln in cat["links"] if ln["rel"] == "item"):
        assert client.get("/" + link["href"][2:]).json()["type"] == "Feature"


def _tree_digest(root: str) -> str:
    h = hashlib.sha256()
    for base, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for f in sorted(files):
            p = Path(base, f)
            h.update(str(p).encode() + p.read_bytes())
    return h.hexdigest()


def test_nothing_is_writable(client: TestClient, out: str) -> None:
    before = _tree_digest(out)
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        for path in ("/", "/api/scenes", "/catalog.json", "/t/s1.ome.zarr/zarr.json",
                     "/tiles/segmentation/0/0/0.png?scene=t/s1", "/nope"):
            r = client.request(method, path, content=b"{}")
            assert r.status_code == 405, (method, path)
            assert r.headers["allow"] == "GET, HEAD"
    assert client.head("/api/scenes").status_code == 200
    for path in ("/", "/api/scenes", "/api/scene?scene=t/s1", "/api/legend?scene=t/s1",
                 "/tiles/change/0/0/0.png?scene=t/s1", "/api/history?scene=t/s1"):
        assert client.get(path).status_code == 200
    assert _tree_digest(out) == before  # every request above left the output as it was
    r = client.get("/")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_source_tiles_and_history_from_a_real_run(tmp_path: Path) -> None:
    archive, out = tmp_path / "archive", str(tmp_path / "out")
    image = smooth_image(3, 3, 300, 420)
    write_zarr_scene(archive, "s", image)
    cfg = load_config(overrides=dict(chunk=128, halo=8, checkpoint="unused-standin"))
    with LocalExecutor(TinyLoader()) as ex:
        nightly(str(archive), out, cfg, executor=ex, run_id="n1")
    with TestClient(create_app(out)) as client:
        meta = client.get("/api/scene", params={"scene": "s"}).json()
        assert meta["layers"]["source"]["available"] is True
        tile = _png(client.get("/tiles/source/-1/0/0.png", params={"scene": "s"}))
        sub = image[:, ::2, ::2].astype(np.float64)
        # The display stretch maps each band linearly: tile values follow the image's order.
        for b in range(3):
            got = tile[:150, :210, b].astype(np.float64).ravel()
            assert np.corrcoef(got, sub[b].ravel())[0, 1] > 0.99
        assert (tile[:150, :210, 3] == 255).all() and not tile[150:].any()
        hist = client.get("/api/history", params={"scene": "s"}).json()
        assert [r["run_id"] for r in hist["runs"]] == ["n1"]
        assert hist["runs"][0]["scene_status"] == "ok"
        assert hist["log"][0].endswith(")") and " nightly n1: 1 new" in hist["log"][0]
        # The input moved away: the source layer says so, the labels still show.
        (archive / "s.zarr").rename(archive / "moved.zarr")
    # A lost chunk: the viewer still shows the scene and the legend says what it left out.
    (Path(out) / "s.ome.zarr" / "labels" / "segmentation" / "0" / "c" / "1" / "1").unlink()
    with TestClient(create_app(out)) as client:
        meta = client.get("/api/scene", params={"scene": "s"}).json()
        assert meta["layers"]["source"]["available"] is False
        assert client.get("/tiles/source/0/0/0.png", params={"scene": "s"}).status_code == 404
        assert client.get("/tiles/segmentation/0/0/0.png", params={"scene": "s"}).status_code == (
            200)
        lg = client.get("/api/legend", params={"scene": "s"}).json()
        assert lg["left_out"] == 1 and lg["coverage"] == pytest.approx(1 - 128 * 128 / 300 / 420)
        p = client.get("/api/point", params={"scene": "s", "x": 130, "y": 130}).json()
        assert p["label"] == 0  # inside the lost chunk: no data


@pytest.mark.s3
def test_serves_an_s3_output(s3_server, s3_bucket: str) -> None:
    root, so = f"{s3_bucket}/labels", s3_server.storage_options
    _write(root, so, _labels(1), "r1")
    with TestClient(create_app(root, so)) as client:
        assert [s["scene_id"] for s in client.get("/api/scenes").json()["scenes"]] == ["t/s1"]
        tile = _png(client.get("/tiles/segmentation/-1/0/0.png", params={"scene": "t/s1"}))
        level1 = OutputStore(root, so).scene("t/s1").read(level=1)
        np.testing.assert_array_equal(tile[:75, :115], _lut()[level1])
        assert client.get("/t/s1.ome.zarr/zarr.json").status_code == 200
        assert client.post("/api/scenes").status_code == 405


def test_serve_cli_refuses_what_cannot_work(out: str, tmp_path: Path) -> None:
    import socket

    from typer.testing import CliRunner

    from pipeline.cli import app

    def said(res) -> str:
        return " ".join(res.output.split())  # the console wraps long lines

    res = CliRunner().invoke(app, ["serve", "--output", str(tmp_path / "none"), "--port", "0"])
    assert res.exit_code == 2 and "does not exist; give the output root" in said(res)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", "--output", out, "--port", str(port)])
    assert res.exit_code == 2 and f"--port {port}: cannot listen there" in said(res)
    assert "--port 0 takes any free one" in said(res)

"""The viewer in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

The output is what a user has after two nightly runs with the shipped HGN checkpoint: a
georeferenced GeoTIFF scene (EPSG:32633) whose second delivery changed in one block, so it
has a change layer, and a plain zarr scene without georeference. The viewer runs as the user
starts it: ``hgn-pipeline serve --output OUT --port 0`` in its own process.

``make test`` installs Chromium (apt-get) when /usr/bin/chromium is missing; Playwright's own
browser download is never used. Set ``HGN_VIEWER_SCREENSHOT=path.png`` to keep the page
screenshot (the README's picture is made this way).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _standin import write_zarr_scene
from conftest import write_geotiff
from PIL import Image

from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.ops.diff import read_changes
from pipeline.ops.nightly import nightly
from pipeline.query import OutputStore

CHROMIUM = "/usr/bin/chromium"
# As measured in shared/design/environment.md: without the background-networking flags,
# Chromium's own connections fail against this closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
GEO = (500_000.0, 0.5, 0.0, 4_000_000.0, 0.0, -0.5)  # 0.5 m pixels, UTM 33N


@dataclass
class Served:
    url: str
    out: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from hgn_model.data.synthetic import generate_scene

    base = tmp_path_factory.mktemp("viewer")
    archive, out = base / "archive", base / "labels"
    archive.mkdir()
    image = generate_scene(3011, 768, 1024).image
    write_geotiff(archive / "tile-a.tif", image, crs="EPSG:32633", transform=GEO)
    write_zarr_scene(archive, "tile-b", generate_scene(3013, 384, 512).image)
    cfg = load_config(overrides=dict(chunk=512, halo=64))
    with LocalExecutor(cfg.checkpoint) as ex:
        nightly(str(archive), str(out), cfg, executor=ex, run_id="night-1")
        image[:, 200:520, 300:800] = generate_scene(3012, 320, 500).image  # a new delivery
        write_geotiff(archive / "tile-a.tif", image, crs="EPSG:32633", transform=GEO)
        night2 = nightly(str(archive), str(out), cfg, executor=ex, run_id="night-2")
    assert night2.changes["changed"] == ["tile-a"] and "tile-a" in night2.change_maps

    exe = shutil.which("hgn-pipeline", path=str(Path(sys.executable).parent))
    proc = subprocess.Popen([exe, "serve", "--output", str(out), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert m, f"serve printed {line!r}"
        yield Served(m.group(0).rstrip("/"), str(out))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium "
                    "(or: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, served: Served) -> Iterator[object]:
    """A fresh page; fails the test on any console error, page error or outside request."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
          if m.type in ("error", "warning") else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("request", lambda r: None if r.url.startswith((served.url, "data:"))
          else problems.append(f"request outside the viewer: {r.url}"))
    pg.problems = problems
    yield pg
    context.close()
    assert problems == [], problems


def _open(page, served: Served, scene: str) -> None:
    page.goto(f"{served.url}/#scene={scene}")
    for part in ("legend", "changes", "history"):  # each panel marks the scene it shows
        page.wait_for_selector(f"#{part}[data-scene='{scene}']", state="attached")
    _wait_tiles(page)


def _wait_tiles(page) -> None:
    page.wait_for_function("() => document.getElementById('map').dataset.ready === '1'")
    page.wait_for_timeout(300)  # the last tiles' fade-in


def _set_layers(page, **on: bool) -> None:
    for name, checked in on.items():
        box = page.get_by_test_id(f"layer-{name}")
        if box.is_checked() != checked:
            box.click()
    _wait_tiles(page)


def _map_pixels(page) -> tuple[np.ndarray, dict]:
    """Screenshot of the scene's rectangle on the map (RGB) and the map's zoom."""
    rect = page.evaluate("""() => {
        const v = window.hgnViewer, b = v.bounds;
        const nw = v.map.latLngToContainerPoint(b.getNorthWest());
        const se = v.map.latLngToContainerPoint(b.getSouthEast());
        return {x: nw.x, y: nw.y, w: se.x - nw.x, h: se.y - nw.y, zoom: v.map.getZoom()};
    }""")
    shot = np.asarray(Image.open(io.BytesIO(page.get_by_test_id("map").screenshot()))
                      .convert("RGB"))
    x, y = round(rect["x"]), round(rect["y"])
    return shot[y:y + round(rect["h"]), x:x + round(rect["w"])], rect


def test_scene_list_and_no_console_errors(page, served: Served) -> None:
    page.goto(served.url + "/")
    page.wait_for_selector("#scenes tbody tr[data-scene]")
    rows = page.locator("#scenes tbody tr[data-scene]")
    assert [rows.nth(i).get_attribute("data-scene") for i in range(rows.count())] == [
        "tile-a", "tile-b"]
    text = page.inner_text("#scenes")
    assert "1024 x 768" in text and "done" in text and "hgn" in text and "night-2" in text
    page.wait_for_selector("#nightly[data-loaded='1']", state="attached")
    assert "night-2" in page.inner_text("#nightly")
    _wait_tiles(page)  # the first scene opens by itself


def test_tiles_hold_the_class_colours(page, served: Served) -> None:
    _open(page, served, "tile-a")
    _set_layers(page, source=False, change=False)
    page.get_by_test_id("opacity").fill("100")
    _wait_tiles(page)
    pixels, rect = _map_pixels(page)
    view = OutputStore(served.out).scene("tile-a")
    level = -int(rect["zoom"])
    assert 0 <= level < view.levels, rect
    labels = view.read(level=level)
    assert abs(pixels.shape[0] - labels.shape[0]) <= 1 and abs(
        pixels.shape[1] - labels.shape[1]) <= 1, (pixels.shape, labels.shape)
    shown = 0
    for k, (name, rgba) in enumerate(view.classes):
        frac = float(np.mean(labels == k))
        if k == 0 or rgba[3] < 255 or frac < 0.03:
            continue
        seen = float(np.mean(np.all(pixels == np.array(rgba[:3], np.uint8), axis=-1)))
        assert abs(seen - frac) < 0.02, f"class {name}: {seen:.3f} of the map vs {frac:.3f}"
        shown += 1
    assert shown >= 2  # the scene has several land-cover classes, all on the map


def test_legend_lists_the_classes_with_areas(page, served: Served) -> None:
    _open(page, served, "tile-a")
    stats = OutputStore(served.out).scene("tile-a").class_stats()
    rows = page.locator("#legend tbody tr")
    got = [rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count())]
    assert [g[1] for g in got] == [r.name for r in stats.rows]
    assert [g[2] for g in got] == [f"{r.area / 1e4:,.2f}" for r in stats.rows]
    assert "geodesic" in page.inner_text("#legend-note")


def _uniform_pixel(labels: np.ndarray, r: int = 12) -> tuple[int, int]:
    """A pixel whose (2r+1)^2 neighbourhood is one non-zero class (a click cannot miss)."""
    h, w = labels.shape
    for y in range(h // 3, h - r, 7):
        for x in range(w // 3, w - r, 7):
            block = labels[y - r:y + r + 1, x - r:x + r + 1]
            if block.min() == block.max() != 0:
                return y, x
    raise AssertionError("no uniform region in the labels")


def _click_uniform_pixel(page, served: Served
                         ) -> tuple[np.ndarray, int, int, tuple[float, float]]:
    """Click the map on a pixel of tile-a inside a uniform region.

    Returns (labels, row, col, the clicked page point).
    """
    labels = OutputStore(served.out).scene("tile-a").read()
    row, col = _uniform_pixel(labels)
    pt = page.evaluate(f"() => window.hgnViewer.map.latLngToContainerPoint("
                       f"[{-row - 0.5}, {col + 0.5}])")
    box = page.get_by_test_id("map").bounding_box()
    at = (box["x"] + pt["x"], box["y"] + pt["y"])
    page.mouse.click(*at)
    return labels, row, col, at


def test_click_reports_the_class_and_coordinates(page, served: Served) -> None:
    from pyproj import Transformer

    _open(page, served, "tile-a")
    labels, row, col, at = _click_uniform_pixel(page, served)
    clicked = page.get_by_test_id("clicked-class")
    clicked.wait_for()
    assert int(clicked.get_attribute("data-label")) == labels[row, col]
    # The click lands within a screen pixel of the target (2 scene pixels at zoom -1).
    px, py = int(clicked.get_attribute("data-x")), int(clicked.get_attribute("data-y"))
    assert abs(px - col) <= 2 and abs(py - row) <= 2
    x = GEO[0] + (px + 0.5) * GEO[1]
    y = GEO[3] + (py + 0.5) * GEO[5]
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(x, y)
    assert page.get_by_test_id("clicked-lonlat").inner_text() == f"lon {lon:.6f}, lat {lat:.6f}"
    assert "change" in page.get_by_test_id("clicked-change").inner_text()
    page.mouse.move(at[0], at[1] + 1)
    coords = page.inner_text("#coords")  # pixel and CRS coordinates while hovering
    assert re.match(r"x [\d,.]+, y [\d,.]+ px \| [\d,.]+, [\d,.]+ metre", coords), coords


def test_change_layer_and_history(page, served: Served) -> None:
    _open(page, served, "tile-a")
    box = page.get_by_test_id("layer-change")
    assert box.is_enabled() and box.is_checked()
    assert "night-1" in page.inner_text("#layers")
    m = read_changes(OutputStore(served.out).scene("tile-a"))
    summary = page.get_by_test_id("changes-summary").inner_text()
    assert f"{100 * m.summary()['changed_fraction']:.2f} %" in summary
    history = page.inner_text("#history")
    assert "night-2" in history and "night-1" in history
    # Only the change layer: changed pixels in their new class colour, inside the new block.
    _set_layers(page, source=False, segmentation=False, change=True)
    page.get_by_test_id("opacity").fill("100")
    _wait_tiles(page)
    pixels, rect = _map_pixels(page)
    f = 2 ** -int(rect["zoom"])
    bright = pixels.max(axis=-1) > 40  # not the (dimmed) map background
    ys, xs = np.nonzero(bright)
    assert ys.size > 0
    assert 200 / f - 2 <= np.median(ys) <= 520 / f + 2 and 300 / f - 2 <= np.median(xs) <= (
        800 / f + 2)
    # tile-b has no change layer: the checkbox says why.
    _open(page, served, "tile-b")
    assert not page.get_by_test_id("layer-change").is_enabled()
    assert "no change map yet" in page.inner_text("#changes")


def test_unknown_scene_and_writes_refused(page, served: Served) -> None:
    for path in ("/api/scene?scene=nope", "/api/scene?scene=../tile-a",
                 "/tiles/segmentation/0/0/0.png?scene=..%2Ftile-a", "/tile-a.ome.zarr/..%2F..",
                 "/_hgn/ledger/current.json"):
        assert page.request.get(served.url + path).status == 404, path
    for method in ("post", "put", "delete", "patch"):
        resp = getattr(page.request, method)(served.url + "/api/scenes", data="{}")
        assert resp.status == 405 and resp.headers["allow"] == "GET, HEAD"


def test_screenshot_of_the_viewer(page, served: Served, tmp_path: Path) -> None:
    _open(page, served, "tile-a")
    _click_uniform_pixel(page, served)
    page.get_by_test_id("clicked-class").wait_for()
    path = Path(os.environ.get("HGN_VIEWER_SCREENSHOT") or tmp_path / "viewer.png")
    page.screenshot(path=str(path))
    shot = np.asarray(Image.open(path).convert("RGB"))
    assert shot.shape == (800, 1280, 3) and len(np.unique(shot.reshape(-1, 3), axis=0)) > 500

"""The STAC catalog of an output root, validated by pystac.

The network is closed here and pystac bundles only the core STAC schemas (1.1.0): items and
the catalog are validated against those, offline (a test proves no schema is fetched), and the
extension fields (projection v2, classification v2) are checked through pystac's extension
APIs, since their JSON schemas cannot be downloaded.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pystac
import pystac.validation
import pytest
from _outputs import CLASSES
from _outputs import labels as _labels
from _outputs import write_scene as _write
from pyproj import Transformer
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.projection import ProjectionExtension

from pipeline.ops.diff import diff_scene
from pipeline.ops.previous import keep_previous
from pipeline.ops.stac import CATALOG_FILE, record_export, update_catalog
from pipeline.query import OutputStore


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a, **k):
        raise AssertionError(f"network access attempted: {a[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _validate(obj: pystac.STACObject) -> None:
    """Core STAC schema (bundled with pystac), offline; extensions checked separately."""
    pystac.validation.validate_dict(obj.to_dict(), extensions=[])


def test_catalog_items_validate_and_point_at_the_stores(tmp_path: Path, offline: None) -> None:
    root = str(tmp_path / "out")
    _write(root, {}, _labels(1), "r1")  # t/s1: EPSG:32633
    keep_previous(root, ["t/s1"])
    _write(root, {}, _labels(2), "r2", overwrite=True)
    diff_scene(root, "t/s1", "r1")
    _write(root, {}, _labels(4)[:90], "r2", scene="plain", georef=None)
    url = update_catalog(root)
    assert url == str(tmp_path / "out" / CATALOG_FILE)

    for f in [Path(url), *(tmp_path / "out" / "_hgn" / "stac").glob("*.json")]:
        d = json.loads(f.read_text())  # every link and asset relative: the output can move
        hrefs = [ln["href"] for ln in d["links"]] + [a["href"] for a in d.get("assets",
                                                                              {}).values()]
        assert hrefs and all(h.startswith(".") for h in hrefs), (f.name, hrefs)
    cat = pystac.Catalog.from_file(url)
    _validate(cat)
    items = {i.id: i for i in cat.get_items()}
    assert sorted(items) == ["plain", "t/s1"]
    for item in items.values():
        _validate(item)
        assert item.properties["hgn:run_id"] == "r2" and item.properties["hgn:status"] == (
            "complete")
        assert item.datetime.isoformat().startswith("2026-12-02")

    geo = items["t/s1"]
    view = OutputStore(root).scene("t/s1")
    proj = ProjectionExtension.ext(geo)
    assert proj.code == "EPSG:32633" and proj.shape == [150, 230]
    assert proj.transform == [10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0, 0.0, 0.0, 1.0]
    assert proj.wkt2 and "UTM zone 33N" in proj.wkt2
    to_ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    corner = to_ll.transform(500_000.0 + 230 * 10, 4_000_000.0 - 150 * 10)
    ring = np.array(geo.geometry["coordinates"][0])
    assert np.abs(ring - corner).sum(1).min() < 1e-9  # the footprint has the scene's corners
    assert geo.bbox[0] <= corner[0] <= geo.bbox[2] and geo.bbox[1] <= corner[1] <= geo.bbox[3]

    labels = geo.assets["labels"]
    assert Path(labels.get_absolute_href()) == Path(view.url) / "labels" / "segmentation"
    assert (Path(labels.get_absolute_href()) / "zarr.json").is_file()
    (item_file,) = (tmp_path / "out" / "_hgn" / "stac").glob("t_s1-*.json")  # URL-safe name
    assert json.loads(item_file.read_text())["assets"]["labels"]["href"] == (
        "../../t/s1.ome.zarr/labels/segmentation")  # relative: the catalog can be moved
    classes = ClassificationExtension.ext(labels).classes
    assert [(c.value, c.description, c.color_hint) for c in classes] == [
        (i, n, "".join(f"{v:02X}" for v in rgba[:3])) for i, (n, rgba) in enumerate(CLASSES)]
    assert classes[0].nodata is True
    assert Path(geo.assets["confidence"].get_absolute_href()) == Path(view.url)
    change = geo.assets["change"]
    assert change.extra_fields["hgn:against"] == "run r1"
    assert any(c.value == 2 * 256 + 3 for c in ClassificationExtension.ext(change).classes)

    plain = items["plain"]
    assert plain.geometry is None and plain.bbox is None
    assert not ProjectionExtension.has_extension(plain)
    assert "change" not in plain.assets


def test_export_is_an_asset_and_updates_keep_other_items(tmp_path: Path, offline: None) -> None:
    root = str(tmp_path / "out")
    _write(root, {}, _labels(1), "r1")
    _write(root, {}, _labels(2), "r1", scene="b")
    update_catalog(root)
    _write(root, {}, _labels(3), "r2", overwrite=True)
    cog = tmp_path / "t.tif"
    record_export(root, "t/s1", SimpleNamespace(path=str(cog), layer="segmentation",
                                                box=(0, 150, 0, 230)))
    cat = pystac.Catalog.from_file(str(tmp_path / "out" / CATALOG_FILE))
    items = {i.id: i for i in cat.get_items()}
    assert sorted(items) == ["b", "t/s1"]
    assert items["t/s1"].properties["hgn:run_id"] == "r2"
    asset = items["t/s1"].assets["cog-segmentation"]
    assert Path(asset.get_absolute_href()) == cog and "cloud-optimized" in asset.media_type
    assert items["b"].properties["hgn:run_id"] == "r1"


@pytest.mark.s3
def test_catalog_on_s3(s3_server, s3_bucket: str) -> None:
    root, so = f"{s3_bucket}/labels", s3_server.storage_options
    _write(root, so, _labels(1), "r1")
    url = update_catalog(root, so)
    fs = s3_server.filesystem()
    cat = json.loads(fs.cat_file(url[len("s3://"):]))
    pystac.validation.validate_dict(cat, extensions=[])
    (link,) = [ln for ln in cat["links"] if ln["rel"] == "item"]
    item = json.loads(fs.cat_file(f"{root[5:]}/{link['href'][2:]}"))
    pystac.validation.validate_dict(item, extensions=[])
    assert item["assets"]["labels"]["href"] == "../../t/s1.ome.zarr/labels/segmentation"
    assert item["properties"]["proj:code"] == "EPSG:32633"


def test_first_update_of_an_older_output_lists_every_scene(tmp_path: Path) -> None:
    root = str(tmp_path / "out")
    _write(root, {}, _labels(1), "r1")  # written before catalogs existed
    _write(root, {}, _labels(2), "r1", scene="b")
    update_catalog(root, scene_ids=["b"])  # a run that touched b only
    cat = pystac.Catalog.from_file(str(tmp_path / "out" / CATALOG_FILE))
    assert sorted(i.id for i in cat.get_items()) == ["b", "t/s1"]

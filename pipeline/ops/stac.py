"""A STAC catalog of an output root: ``<output>/catalog.json`` and one item per scene.

Layout (STAC 1.1, self-contained: every link and asset href is relative, so the catalog works
wherever the output is copied, served or mounted)::

    <output>/catalog.json                      Catalog, an ``item`` link per scene
    <output>/_hgn/stac/<name>.json             Item (the scene id, or a slug + hash of it
                                               when it has characters unsafe in URLs)

Each item has (built with pystac):

- ``geometry``/``bbox``: the scene's footprint in lon/lat (edges densified through pyproj),
  null for scenes without a georeference (pixel grids only);
- the projection extension (v2): ``proj:code`` (EPSG CRSs, else null), ``proj:wkt2``,
  ``proj:transform`` (rasterio order, 9 numbers), ``proj:shape``, ``proj:bbox``;
- the classification extension (v2) on the label assets: value, name, colour, nodata (0);
- provenance: ``datetime`` (when the run finished the scene), ``hgn:run_id``, ``hgn:arch``,
  ``hgn:checkpoint_sha256``, ``hgn:input_url``, ``hgn:input_fingerprint``, ``hgn:status``;
- assets: ``labels`` (``<scene>.ome.zarr/labels/segmentation``), ``confidence`` (the store's
  root image), ``change`` (``labels/change``, when a change map exists), ``store`` (the whole
  OME-Zarr group) and one ``cog-<layer>`` per COG export (:func:`record_export`).

:func:`update_catalog` runs after every run (the scenes it processed) and on demand (all).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pipeline.io.omezarr import CHANGE_LAYER, LABELS_LAYER, read_change_attrs
from pipeline.query import OutputStore, SceneNotFoundError, SceneView
from pipeline.state.hgnstore import HGN_DIR, HgnStore, segment
from pipeline.storage import get_fs, is_remote, join_url, resolve_url, strip_protocol

__all__ = ["CATALOG_FILE", "ITEMS_DIR", "record_export", "scene_item", "update_catalog"]

CATALOG_FILE = "catalog.json"
ITEMS_DIR = "stac"  # under _hgn/
EXPORTS_DIR = "exports"  # under _hgn/: COG exports per scene, for the items' assets
ZARR_TYPE = "application/vnd+zarr"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
_DENSIFY = 16  # points per footprint edge: curved edges of projected grids in lon/lat


def _item_rel(scene_id: str) -> str:
    """``stac/<name>.json``: the id where it is URL- and file-safe, else a slug + hash."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", scene_id).strip(".") or "scene"
    if name != scene_id or len(name) > 150:
        digest = hashlib.sha256(scene_id.encode()).hexdigest()[:10]
        name = f"{name[:150]}-{digest}"
    return f"{ITEMS_DIR}/{name}.json"


def _hex(rgba: Any) -> str:
    return "".join(f"{int(c):02X}" for c in list(rgba)[:3])


def _slug(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_-]+", "_", name).strip("_") or "class"


def _footprint(view: SceneView) -> tuple[dict[str, Any] | None, list[float] | None,
                                         list[float] | None]:
    """(GeoJSON polygon in lon/lat, its bbox, bbox in the scene's CRS), or Nones."""
    g = view.georef
    if g is None or not g.crs:
        return None, None, None
    import numpy as np
    from pyproj import Transformer

    from pipeline.io.geotiff import to_pyproj

    x0, dx, rx, y0, ry, dy = g.transform
    t = np.linspace(0.0, 1.0, _DENSIFY + 1)[:-1]
    h, w = view.height, view.width
    cols = np.concatenate([t * w, np.full_like(t, w), (1 - t) * w, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), (1 - t) * h])
    xs, ys = x0 + cols * dx + rows * rx, y0 + cols * ry + rows * dy
    native = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
    to_ll = Transformer.from_crs(to_pyproj(g.crs), "EPSG:4326", always_xy=True)
    lon, lat = (np.asarray(v) for v in to_ll.transform(xs, ys))
    ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    bbox = [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())]
    return {"type": "Polygon", "coordinates": [ring]}, bbox, native


def _when(hgn: Mapping[str, Any]) -> datetime:
    for key in ("finished", "started", "created"):
        try:
            return datetime.fromisoformat(str(hgn[key]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            continue
    return datetime.now(UTC)


def _classes(classes: Iterable[tuple[int, str, Any]]) -> list[Any]:
    from pystac.extensions.classification import Classification

    return [Classification.create(value=int(v), name=_slug(name), description=name,
                                  color_hint=_hex(rgba), nodata=True if v == 0 else None)
            for v, name, rgba in classes]


def _add_label_assets(item: Any, view: SceneView, store: str, so: Mapping[str, Any]) -> None:
    import pystac
    from pystac.extensions.classification import ClassificationExtension

    labels = pystac.Asset(f"{store}/labels/{LABELS_LAYER}", title="Class labels (uint8)",
                          description="OME-Zarr 0.5 multiscale label image; 0 = no data",
                          media_type=ZARR_TYPE, roles=["data", "labels"])
    item.add_asset("labels", labels)
    ClassificationExtension.ext(labels, add_if_missing=True).apply(classes=_classes(
        (i, n, c) for i, (n, c) in enumerate(view.classes)))
    change = read_change_attrs(view.url, so)
    if change is not None:
        asset = pystac.Asset(
            f"{store}/labels/{CHANGE_LAYER}", title=f"Change against {change.get('against')}",
            description="uint16: 0 = no data on either side, else previous * 256 + current",
            media_type=ZARR_TYPE, roles=["data", "labels", "change"],
            extra_fields={"hgn:against": change.get("against")})
        item.add_asset("change", asset)
        pairs = [p for p in change["matrix"]["pairs"] if p["from"] and p["to"]]
        ClassificationExtension.ext(asset, add_if_missing=True).apply(classes=_classes(
            (p["from"] * 256 + p["to"], f"{p['from_name']} to {p['to_name']}",
             view.classes[p["to"]][1] if p["to"] < len(view.classes) else (255, 0, 255))
            for p in pairs))


def scene_item(view: SceneView, so: Mapping[str, Any] | None = None,
               exports: Iterable[Mapping[str, Any]] = ()) -> Any:
    """The ``pystac.Item`` of one scene (asset hrefs absolute; made relative on writing)."""
    import pystac
    from pystac.extensions.projection import ProjectionExtension

    so = dict(so or {})
    hgn = view.hgn
    geometry, bbox, native = _footprint(view)
    props = {"title": view.scene_id, "hgn:status": hgn.get("status"),
             **{f"hgn:{k}": hgn.get(k) for k in ("run_id", "arch", "checkpoint_sha256",
                                                 "input_url", "input_fingerprint",
                                                 "package_version")},
             "hgn:levels": view.levels, "created": hgn.get("created")}
    item = pystac.Item(view.scene_id, geometry, bbox, _when(hgn),
                       {k: v for k, v in props.items() if v is not None})
    if view.georef is not None and view.georef.crs:
        crs = view.georef.crs
        a, b, c, d, e, f = view.georef.affine
        wkt2 = crs if not crs.upper().startswith("EPSG:") else None
        if wkt2 is None:
            from pipeline.io.geotiff import to_pyproj

            wkt2 = to_pyproj(crs).to_wkt(version="WKT2_2019")
        ProjectionExtension.ext(item, add_if_missing=True).apply(
            code=crs.upper() if crs.upper().startswith("EPSG:") else None, wkt2=wkt2,
            transform=[a, b, c, d, e, f, 0.0, 0.0, 1.0], shape=[view.height, view.width],
            bbox=native)
    store = view.url
    item.add_asset("store", pystac.Asset(store, title="OME-Zarr store of the scene",
                                         media_type=ZARR_TYPE, roles=["data"]))
    if "confidence" in view.layers:
        item.add_asset("confidence", pystac.Asset(
            store, title="Confidence: round(255 * max softmax), the store's root image",
            description="OME-Zarr 0.5 multiscale image at levels 0..L-1; 0 = no data",
            media_type=ZARR_TYPE, roles=["data", "confidence"]))
    _add_label_assets(item, view, store, so)
    for exp in exports:
        item.add_asset(f"cog-{exp['layer']}", pystac.Asset(
            exp["path"], title=f"COG export of the {exp['layer']} (box {exp['box']})",
            media_type=COG_TYPE, roles=["data", exp["layer"]]))
    return item


def _write_json(output_url: str, rel: str, data: Mapping[str, Any], so: Mapping[str, Any]
                ) -> None:
    fs = get_fs(output_url, so)
    path = join_url(strip_protocol(output_url), rel)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, json.dumps(data, indent=1).encode())


def _item_ids(hgn: HgnStore) -> list[str]:
    return sorted(n for n in hgn.list(ITEMS_DIR) if n.endswith(".json") and "/" not in n)


def update_catalog(output_url: str, storage_options: Mapping[str, Any] | None = None,
                   scene_ids: Iterable[str] | None = None) -> str:
    """(Re)write the items of ``scene_ids`` (None: every scene) and ``catalog.json``."""
    import pystac

    so = dict(storage_options or {})
    out = OutputStore(output_url, so)
    root = resolve_url(output_url)
    hgn = HgnStore(root, so)
    cat_href = join_url(root, CATALOG_FILE)
    if scene_ids is not None and not get_fs(root, so).exists(strip_protocol(cat_href)):
        scene_ids = None  # the first catalog of an older output: every scene gets its item
    ids = out.scene_ids() if scene_ids is None else sorted(set(scene_ids))
    if scene_ids is None:  # a full rebuild drops items whose store is gone
        stale = set(_item_ids(hgn)) - {_item_rel(s).split("/", 1)[1] for s in ids}
        hgn.delete([f"{ITEMS_DIR}/{n}" for n in stale])
    catalog = pystac.Catalog("hgn-pipeline", f"Segmentations written by hgn-pipeline "
                             f"under {root}", title="hgn-pipeline outputs", href=cat_href,
                             catalog_type=pystac.CatalogType.SELF_CONTAINED)  # relative links
    for sid in ids:
        try:
            view = out.scene(sid)
        except SceneNotFoundError:
            hgn.delete([_item_rel(sid)])
            continue
        item = scene_item(view, so, exports_of(root, sid, so))
        item_href = join_url(root, HGN_DIR, _item_rel(sid))
        item.set_self_href(item_href)
        item.set_root(catalog)
        item.set_parent(catalog)
        item.make_asset_hrefs_relative()
        _write_json(root, f"{HGN_DIR}/{_item_rel(sid)}",
                    item.to_dict(include_self_link=False, transform_hrefs=True), so)
        item.set_root(None)
    for name in _item_ids(hgn):
        catalog.add_link(pystac.Link("item", f"./{HGN_DIR}/{ITEMS_DIR}/{name}",
                                     media_type="application/geo+json"))
    data = catalog.to_dict(include_self_link=False, transform_hrefs=True)
    _write_json(root, CATALOG_FILE, data, so)
    return f"s3://{strip_protocol(cat_href)}" if is_remote(root) else cat_href


def exports_of(output_url: str, scene_id: str, so: Mapping[str, Any] | None = None
               ) -> list[dict[str, Any]]:
    """COG exports recorded for a scene (newest per layer)."""
    data = HgnStore(resolve_url(output_url), so).read_json(
        f"{EXPORTS_DIR}/{segment(scene_id, 'scene_id')}.json")
    return list((data or {}).get("exports", {}).values())


def record_export(output_url: str, scene_id: str, result: Any,
                  so: Mapping[str, Any] | None = None) -> None:
    """Remember a COG export (path, layer, box, time) and refresh the scene's STAC item."""
    store = HgnStore(resolve_url(output_url), so)
    rel = f"{EXPORTS_DIR}/{segment(scene_id, 'scene_id')}.json"
    data = store.read_json(rel) or {"scene_id": scene_id, "exports": {}}
    data["exports"][result.layer] = {
        "path": result.path, "layer": result.layer, "box": list(result.box),
        "time": datetime.now(UTC).isoformat(timespec="seconds")}
    store.write(rel, json.dumps(data, indent=1).encode())
    update_catalog(output_url, so, [scene_id])

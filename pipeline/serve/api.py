"""JSON answers of the viewer's API: scenes, one scene's metadata, a point, run history."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.errors import NotFoundError
from pipeline.serve.scenes import Scene, SceneRegistry, source_reader
from pipeline.serve.tiles import SOURCE_MAX_LEVEL, TILE

__all__ = ["dumps", "history", "point", "scene_list", "scene_meta"]

MAX_MANIFESTS = 30  # newest run manifests read for the history (each may list many scenes)


def scene_list(reg: SceneRegistry) -> list[dict[str, Any]]:
    """One row per scene: status, size, model, run, time (as ``query scenes``)."""
    rows = []
    for s in reg.store.list_scenes():
        d = s.to_dict()
        d["model"] = s.arch
        rows.append(d)
    return rows


def _georef(scene: Scene) -> dict[str, Any] | None:
    g = scene.view.georef
    if g is None:
        return None
    out: dict[str, Any] = {"crs": g.crs, "transform": list(g.transform), "units": None,
                           "geographic": False, "name": None}
    if g.crs:
        from pipeline.io.geotiff import to_pyproj

        try:
            crs = to_pyproj(g.crs)
            out.update(name=crs.name, geographic=bool(crs.is_geographic),
                       units=crs.axis_info[0].unit_name if crs.axis_info else None,
                       lonlat=crs.get_geod() is not None)
        except Exception:  # a CRS pyproj cannot parse: CRS coordinates only, no lon/lat
            out["lonlat"] = False
    return out


def scene_meta(scene: Scene) -> dict[str, Any]:
    """What the map page needs: grid, zooms, layers (with why one is missing), classes."""
    from pipeline.io.omezarr import read_change_attrs

    view = scene.view
    change = read_change_attrs(view.url, scene.so)
    layers: dict[str, dict[str, Any]] = {
        "segmentation": {"available": True},
        "confidence": {"available": "confidence" in view.layers,
                       "reason": None if "confidence" in view.layers
                       else "the run wrote no confidence layer (confidence: false)"},
        "change": {"available": change is not None,
                   "against": (change or {}).get("against"),
                   "reason": None if change else "no change map yet: a nightly run writes one "
                   "when it re-segments a changed scene (or `hgn-pipeline diff`)"},
    }
    src = source_reader(scene)
    layers["source"] = {"available": src is not None, "max_level": SOURCE_MAX_LEVEL,
                        "reason": None if src else "the input image named in the provenance "
                        "is not readable from here (moved, changed, or no access)"}
    hgn = view.hgn
    return {
        "scene_id": view.scene_id, "height": view.height, "width": view.width,
        "levels": view.levels, "tile": TILE, "version": scene.version,
        "min_native_zoom": 1 - view.levels, "layers": layers,
        "classes": [{"label": i, "name": n, "rgba": list(c)} for i, (n, c) in
                    enumerate(view.classes)],
        "georeference": _georef(scene),
        "provenance": {k: hgn.get(k) for k in ("status", "arch", "checkpoint_sha256", "run_id",
                                               "input_url", "started", "finished")},
    }


def _lonlat(scene: Scene, x: float, y: float) -> list[float] | None:
    def make() -> Any:
        from pyproj import Transformer

        from pipeline.io.geotiff import to_pyproj

        crs = to_pyproj(scene.view.georef.crs)
        return Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)

    try:
        lon, lat = scene.cached("to_lonlat", make).transform(x, y)
    except Exception:  # no geodetic CRS to go to: CRS coordinates only
        return None
    return [float(lon), float(lat)] if np.isfinite([lon, lat]).all() else None


def _change_classes(scene: Scene) -> tuple[dict[int, str], dict[int, str]]:
    """Class names (previous, current) of the change layer: the tables may differ."""
    def make() -> tuple[dict[int, str], dict[int, str]]:
        from pipeline.io.omezarr import read_change_attrs

        m = (read_change_attrs(scene.view.url, scene.so) or {}).get("matrix") or {}
        now = [n for n, _ in scene.view.classes]
        return (dict(enumerate(m.get("classes_from") or now)),
                dict(enumerate(m.get("classes_to") or now)))

    return scene.cached("change_classes", make)


def point(scene: Scene, x: float, y: float) -> dict[str, Any]:
    """Class, confidence and change at level-0 pixel (x, y) (column, row; may be fractional)."""
    from pipeline.change import BASE
    from pipeline.io.omezarr import open_change_level

    view = scene.view
    col, row = int(np.floor(x)), int(np.floor(y))
    if not (0 <= row < view.height and 0 <= col < view.width):
        raise NotFoundError(f"pixel x={col}, y={row} is outside scene {view.scene_id!r} of "
                          f"{view.height} x {view.width} px")
    box = (row, row + 1, col, col + 1)
    label = int(view.read(box, allow_incomplete=True)[0, 0])
    out: dict[str, Any] = {"x": col, "y": row, "label": label,
                           "class": view.classes[label][0] if label < len(view.classes)
                           else str(label)}
    if "confidence" in view.layers:
        out["confidence"] = int(view.read(box, layer="confidence",
                                          allow_incomplete=True)[0, 0]) / 255
    try:
        code = int(open_change_level(view.url, 0, scene.so)[row, col])
    except FileNotFoundError:
        code = None
    if code is not None:
        before, after = _change_classes(scene)
        out["change"] = {"code": code, "nodata": code == 0,
                         "from": before.get(code // BASE, str(code // BASE)) if code else None,
                         "to": after.get(code % BASE, str(code % BASE)) if code else None,
                         "changed": bool(code and code // BASE != code % BASE)}
    g = view.georef
    if g is not None:
        x0, dx, rx, y0, ry, dy = g.transform
        cx, cy = x0 + (col + 0.5) * dx + (row + 0.5) * rx, y0 + (col + 0.5) * ry + (row + 0.5) * dy
        out["crs_xy"] = [cx, cy]
        out["lonlat"] = _lonlat(scene, cx, cy) if g.crs else None
    return out


def _manifest_rows(reg: SceneRegistry, scene_id: str | None) -> list[dict[str, Any]]:
    from pipeline.state.hgnstore import HGN_DIR
    from pipeline.storage import get_fs, join_url, strip_protocol

    fs = get_fs(reg.store.url, reg.so)
    base = join_url(strip_protocol(reg.store.url), HGN_DIR)
    try:
        names = sorted(p["name"] for p in fs.ls(base, detail=True)
                       if p["name"].rsplit("/", 1)[-1].startswith("manifest-"))
    except FileNotFoundError:
        return []
    rows = []
    for path in names[-MAX_MANIFESTS:]:
        try:
            m = json.loads(fs.cat_file(path))
        except (OSError, ValueError):
            continue  # a manifest being written right now
        scenes = {s["scene_id"]: s for s in m.get("scenes", [])}
        if scene_id is not None and scene_id not in scenes:
            continue
        row = {"run_id": m.get("run_id"), "started": m.get("started"),
               "finished": m.get("finished"), "scenes_ok": m.get("summary", {}).get("scenes_ok"),
               "scenes_failed": m.get("summary", {}).get("scenes_failed"),
               "error": m.get("error")}
        if scene_id is not None:
            s = scenes[scene_id]
            row.update(scene_status=s.get("status"), scene_error=s.get("error"),
                       change=(s.get("change") or {}).get("summary"))
        rows.append(row)
    return sorted(rows, key=lambda r: str(r["started"]), reverse=True)


def history(reg: SceneRegistry, scene_id: str | None = None) -> dict[str, Any]:
    """Nightly history (log lines + reports) and run manifests, newest first."""
    from pipeline.ops.nightly import read_history
    from pipeline.ops.previous import previous_versions

    lines, reports = read_history(reg.store.url, reg.so)
    nights = [{k: r.get(k) for k in ("run_id", "started", "finished", "summary",
                                     "nothing_to_do", "processed_ok", "processed_failed")}
              for r in reversed(reports)]
    out: dict[str, Any] = {"log": list(reversed(lines)), "nightly": nights,
                           "runs": _manifest_rows(reg, scene_id)}
    if scene_id is not None:
        out["kept_versions"] = [{"run_id": v.run_id, "finished": v.finished}
                                for v in previous_versions(reg.store.url, scene_id, reg.so)]
    return out


def dumps(data: Any) -> bytes:
    """JSON with NaN/Inf as null (browsers' JSON.parse refuses NaN)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, Mapping):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(data)).encode()

"""Change maps: a scene's labels against earlier labels (a kept run, or another output root).

:func:`diff_scene` (``hgn-pipeline diff``) and nightly runs (:func:`change_maps`, for scenes
whose previous labels :mod:`pipeline.ops.previous` kept) read both label rasters chunk by chunk
through :class:`pipeline.query.SceneView` (memory: a few chunks, whatever the scene size),
encode them (:mod:`pipeline.change`), write ``labels/change`` into the current store
(:mod:`pipeline.io.omezarr`) and return the from -> to matrix, which the layer's
``hgn_change`` attribute records; :func:`read_changes` reads it back (``query changes``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pipeline.change import ChangeMatrix, MatrixAccumulator, encode
from pipeline.errors import ChangeError
from pipeline.io.omezarr import ChangeLayerWriter, read_change_attrs
from pipeline.ops.previous import previous_root, previous_versions
from pipeline.query import OutputStore, SceneNotFoundError, SceneView
from pipeline.query.areas import NoAreaError, PixelAreas
from pipeline.storage import resolve_url

__all__ = ["change_maps", "compute_change", "diff_scene", "read_changes", "resolve_against"]

READ_WORKERS = 4  # chunks read concurrently from both stores (S3 latency hiding)


def _kept_runs(output_url: str, scene_id: str, so: Mapping[str, Any]) -> str:
    runs = [v.run_id for v in previous_versions(output_url, scene_id, so)]
    return ", ".join(map(repr, runs)) if runs else "none kept yet"


def resolve_against(output_url: str, scene_id: str, against: str,
                    storage_options: Mapping[str, Any] | None = None) -> tuple[SceneView, str]:
    """The earlier labels ``against`` names: a run id kept under ``_hgn/previous``, else an
    output root (path or ``s3://``) holding the same scene id. Returns (view, description)."""
    so = dict(storage_options or {})
    for v in previous_versions(output_url, scene_id, so):
        if v.run_id == against:
            return OutputStore(v.root, so).scene(scene_id), f"run {against}"
    looks_like_root = "/" in against or "://" in against or against.startswith(".")
    if not looks_like_root:
        raise ChangeError(
            f"--against {against!r}: no labels of scene {scene_id!r} from run {against!r} are "
            f"kept under {previous_root(output_url, against)} (kept runs: "
            f"{_kept_runs(output_url, scene_id, so)}); give one of those run ids or another "
            "output root (a path or s3:// URL)"
        )
    other = resolve_url(against)
    if other == resolve_url(output_url):
        raise ChangeError(f"--against {against!r} is the output itself; give a kept run id "
                          f"(kept: {_kept_runs(output_url, scene_id, so)}) or another output")
    try:
        return OutputStore(other, so).scene(scene_id), other
    except SceneNotFoundError as exc:
        raise ChangeError(f"--against {against!r}: {exc}") from None


def _check_grids(cur: SceneView, prev: SceneView, against: str) -> None:
    if (prev.height, prev.width) != (cur.height, cur.width):
        raise ChangeError(
            f"scene {cur.scene_id!r}: the labels of {against} are {prev.height} x {prev.width} "
            f"px, the current ones {cur.height} x {cur.width}: a change map needs one pixel "
            "grid (the scene was re-delivered at another size)"
        )
    if cur.georef is not None and prev.georef is not None:
        a, b = cur.georef.transform, prev.georef.transform
        tol = 1e-6 * max(abs(a[1]), abs(a[5]), 1e-12)
        if any(not math.isclose(x, y, abs_tol=tol) for x, y in zip(a, b, strict=True)):
            raise ChangeError(
                f"scene {cur.scene_id!r}: the grid moved between {against} (transform "
                f"{list(b)}) and now ({list(a)}); a change map compares pixel by pixel on "
                "one grid"
            )


def compute_change(current: SceneView, previous: SceneView, against: str,
                   storage_options: Mapping[str, Any] | None = None) -> ChangeMatrix:
    """Write ``labels/change`` of ``current`` against ``previous``; return the matrix."""
    _check_grids(current, previous, against)
    try:
        areas: PixelAreas | None = PixelAreas(current.georef)
        note = None
    except NoAreaError as exc:
        areas, note = None, f"scene {current.scene_id!r}: {exc}"
    info = {"against": against, "against_store": previous.url,
            "previous_run_id": previous.hgn.get("run_id"),
            "current_run_id": current.hgn.get("run_id"),
            "created": datetime.now(UTC).isoformat(timespec="seconds")}
    writer = ChangeLayerWriter(current.url, current.height, current.width, current.chunk,
                               current.levels, current.georef, storage_options)
    writer.create(info)
    ch, cw = current.chunk

    def one(origin: tuple[int, int]) -> MatrixAccumulator:
        y0, x0 = origin
        box = (y0, min(y0 + ch, current.height), x0, min(x0 + cw, current.width))
        before, after = previous.read(box), current.read(box)
        writer.write(y0, x0, encode(before, after))
        acc = MatrixAccumulator(areas is not None)
        acc.add(before, after, areas.block(*box) if areas is not None else None)
        return acc

    origins = [(y, x) for y in range(0, current.height, ch) for x in range(0, current.width, cw)]
    total = MatrixAccumulator(areas is not None)
    with ThreadPoolExecutor(READ_WORKERS) as pool:
        for i in range(0, len(origins), 2 * READ_WORKERS):  # bounded: a few chunks in memory
            for part in pool.map(one, origins[i:i + 2 * READ_WORKERS]):
                total.merge(part)
    matrix = total.result(current.scene_id, against, [n for n, _ in previous.classes],
                          [n for n, _ in current.classes], note)
    writer.finish(info, matrix, [rgba for _, rgba in current.classes])
    return matrix


def diff_scene(output_url: str, scene_id: str, against: str,
               storage_options: Mapping[str, Any] | None = None) -> ChangeMatrix:
    """``hgn-pipeline diff``: change map of one scene, under the output's run lock."""
    from pipeline.state.runlock import RunLock

    so = dict(storage_options or {})
    current = OutputStore(output_url, so).scene(scene_id)
    if (current.hgn or {}).get("status") != "complete":
        raise ChangeError(f"scene {scene_id!r}: its store is not complete (a run is writing it "
                          "or failed); rerun the pipeline first")
    previous, label = resolve_against(output_url, scene_id, against, so)
    run_id = f"diff-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    with RunLock(resolve_url(output_url), run_id, storage_options=so):
        return compute_change(current, previous, label, so)


def change_maps(output_url: str, kept: Mapping[str, str], scene_ids: Iterable[str],
                storage_options: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Nightly: change maps of the re-segmented ``scene_ids`` whose labels were ``kept``.

    Returns ``{scene_id: {"against", "summary", "matrix"}}``, or ``{"error": why}`` for a scene
    whose change map could not be made (its new labels stay valid).
    """
    so = dict(storage_options or {})
    out: dict[str, dict[str, Any]] = {}
    for sid in scene_ids:
        if sid not in kept:
            continue
        try:
            current = OutputStore(output_url, so).scene(sid)
            previous = OutputStore(previous_root(output_url, kept[sid]), so).scene(sid)
            m = compute_change(current, previous, f"run {kept[sid]}", so)
            out[sid] = {"against": kept[sid], "summary": m.summary(), "matrix": m.to_dict()}
        except Exception as exc:  # one scene's change map never fails the run
            out[sid] = {"against": kept[sid], "error": f"{type(exc).__name__}: {exc}"}
    return out


def read_changes(view: SceneView,
                 storage_options: Mapping[str, Any] | None = None) -> ChangeMatrix:
    """The from -> to matrix recorded with the scene's change layer (ChangeError if none)."""
    info = read_change_attrs(view.url, storage_options)
    if info is None or "matrix" not in info:
        raise ChangeError(
            f"scene {view.scene_id!r} has no change layer: none of its nightly re-segmentations "
            "kept earlier labels yet. Make one with `hgn-pipeline diff --output OUT --scene "
            f"{view.scene_id} --against RUN_ID|OTHER_OUTPUT`"
        )
    return ChangeMatrix.from_dict(info["matrix"])

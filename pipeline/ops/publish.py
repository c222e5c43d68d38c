"""Around a resumable run: keep the labels a run will replace, then publish what it wrote.

``ResumableRun`` (``run`` and ``nightly``) calls :func:`before_run` with the scenes whose
input changed, before any store is rewritten (:func:`pipeline.ops.previous.keep_previous`), and
:func:`after_run` once the run is recorded: a change map for each re-segmented scene whose
earlier labels were kept (:func:`pipeline.ops.diff.change_maps`, recorded in the scene's manifest
entry), then the STAC catalog (:func:`pipeline.ops.stac.update_catalog`) for the scenes written.
Neither step can fail the run: a problem is recorded in the manifest (``change.error``,
``catalog``) and said on the console; the labels themselves are complete either way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["after_run", "before_run"]

log = logging.getLogger(__name__)


def before_run(output_url: str, changed: Iterable[str], keep: int,
               storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keep the previous labels of ``changed`` scenes: ``{scene_id: run id | {"error"}}``."""
    from pipeline.ops.previous import keep_previous

    kept: dict[str, Any] = {}
    for sid in changed:
        try:
            kept.update(keep_previous(output_url, [sid], keep, storage_options))
        except Exception as exc:  # the re-segmentation goes on; its change map cannot
            kept[sid] = {"error": f"previous labels not kept: {type(exc).__name__}: {exc}"}
            log.warning("scene %r: %s", sid, kept[sid]["error"])
    return kept


def after_run(output_url: str, result: Any | None, kept: Mapping[str, Any],
              storage_options: Mapping[str, Any] | None = None, console: Any = None) -> None:
    """Change maps into ``result``'s manifest (rewritten), then ``catalog.json``."""
    from pipeline.ops.diff import change_maps
    from pipeline.ops.stac import CATALOG_FILE
    from pipeline.run.report import write_manifest
    from pipeline.storage import get_fs, join_url, strip_protocol

    so = dict(storage_options or {})
    if result is None:  # nothing ran: only make sure the output has a catalog
        path = join_url(strip_protocol(output_url), CATALOG_FILE)
        if not get_fs(output_url, so).exists(path):
            _catalog(output_url, so, None, console)
        return
    m = result.manifest
    ok = [s.scene_id for s in m.scenes if s.status == "ok"]
    runs = {k: v for k, v in kept.items() if isinstance(v, str)}
    maps = change_maps(output_url, runs, ok, so)
    for s in m.scenes:
        if s.scene_id in maps:
            s.change = maps[s.scene_id]
        elif isinstance(kept.get(s.scene_id), dict):
            s.change = dict(kept[s.scene_id])
        if s.change and "error" in s.change:
            _say(console, f"scene {s.scene_id!r}: no change map: {s.change['error']}")
    m.catalog = _catalog(output_url, so, ok, console)
    result.manifest_url = write_manifest(m, so)


def _catalog(output_url: str, so: Mapping[str, Any], ids: list[str] | None,
             console: Any) -> str:
    from pipeline.ops.stac import update_catalog

    try:
        return update_catalog(output_url, so, ids)
    except Exception as exc:  # a catalog problem never undoes the run's outputs
        why = f"STAC catalog not updated: {type(exc).__name__}: {exc}"
        _say(console, why)
        return why


def _say(console: Any, text: str) -> None:
    log.warning("%s", text)
    if console is not None:
        console.print(f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True)

"""Previous label versions of re-segmented scenes, kept for change maps.

Before a run rewrites the store of a scene whose input changed, :func:`keep_previous` copies
that store's labels (``labels/segmentation``, every level, and the root provenance) to::

    <output>/_hgn/previous/<run_id>/<scene_id>.ome.zarr

where ``run_id`` is the run that produced those labels. Each ``_hgn/previous/<run_id>`` is
an output root of its own (labels only, ``confidence`` false), so the query API reads it like
any other output and ``hgn-pipeline diff --against RUN_ID`` compares with it. At most
``keep`` versions per scene are kept (oldest deleted first). On S3 the copy is server-side
(no bytes through this machine).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.io.omezarr import LABELS_LAYER, open_group, scene_store_url
from pipeline.state.hgnstore import HGN_DIR, segment
from pipeline.storage import get_fs, is_remote, join_url, listed_root, resolve_url, strip_protocol

__all__ = ["PREVIOUS_DIR", "PreviousVersion", "keep_previous", "previous_root",
           "previous_versions"]

log = logging.getLogger(__name__)

PREVIOUS_DIR = "previous"


@dataclass(frozen=True)
class PreviousVersion:
    """One kept label version of a scene."""

    run_id: str
    root: str  # output root that holds it (``<output>/_hgn/previous/<run_id>``)
    finished: str | None


def previous_root(output_url: str, run_id: str) -> str:
    """``<output>/_hgn/previous/<run_id>`` (the run id escaped as one path segment)."""
    return join_url(resolve_url(output_url), HGN_DIR, PREVIOUS_DIR, segment(run_id, "run_id"))


def _url(fs_path: str, remote: bool) -> str:
    return f"s3://{fs_path}" if remote else fs_path


def previous_versions(output_url: str, scene_id: str,
                      storage_options: Mapping[str, Any] | None = None) -> list[PreviousVersion]:
    """Kept versions of ``scene_id``, oldest first (by the time their run finished it)."""
    output_url = resolve_url(output_url)
    fs, base = listed_root(join_url(output_url, HGN_DIR, PREVIOUS_DIR), storage_options)
    try:
        runs = [e for e in fs.ls(base, detail=True) if e.get("type") == "directory"]
    except FileNotFoundError:
        return []
    found = []
    for entry in runs:
        root = _url(entry["name"].rstrip("/"), is_remote(output_url))
        store = scene_store_url(root, scene_id)
        try:
            hgn = dict(open_group(store, storage_options or {}, mode="r").attrs).get("hgn", {})
        except Exception:  # not kept for this scene (or a half-copied version): skip it
            continue
        run_id = hgn.get("run_id") or entry["name"].rstrip("/").rsplit("/", 1)[-1]
        found.append(PreviousVersion(str(run_id), root, hgn.get("finished")))
    return sorted(found, key=lambda v: (v.finished or "", v.run_id))


def _copy_labels(src_store: str, dst_store: str, hgn: dict[str, Any],
                 options: Mapping[str, Any]) -> None:
    """The labels of ``src_store`` as a labels-only OME-Zarr at ``dst_store``."""
    fs, src = listed_root(join_url(src_store, "labels", LABELS_LAYER), options)
    root = open_group(dst_store, options, mode="w")
    writer = dict(hgn.get("writer") or {}, confidence=False, confidence_image=None)
    root.attrs.put({"ome": {"version": "0.5"},
                    "hgn": {**hgn, "writer": writer, "kept_from": src_store}})
    root.create_group("labels", attributes={"ome": {"version": "0.5", "labels": [LABELS_LAYER]}})
    dst = join_url(strip_protocol(dst_store), "labels", LABELS_LAYER)
    files = fs.find(src)
    targets = [dst + f[len(src):] for f in files]
    if not is_remote(src_store):
        for d in sorted({t.rsplit("/", 1)[0] for t in targets}):
            fs.makedirs(d, exist_ok=True)
    fs.copy(files, targets)  # s3fs: server-side CopyObject per file
    seg = open_group(dst_store, options, mode="r+", path=f"labels/{LABELS_LAYER}")
    ome = dict(seg.attrs["ome"])
    ome["image-label"] = {k: v for k, v in ome["image-label"].items() if k != "source"}
    seg.attrs.update({"ome": ome})  # no confidence image to point at in the copy


def keep_previous(output_url: str, scene_ids: Iterable[str], keep: int = 1,
                  storage_options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Copy the complete labels of ``scene_ids`` aside; ``{scene_id: run id kept}``.

    Scenes without a complete store are left out (nothing to compare with), and so is every
    scene when ``keep`` < 1. Older versions beyond ``keep`` are deleted.
    """
    from pipeline.errors import OutputNotFoundError
    from pipeline.query import OutputStore, SceneNotFoundError

    so = dict(storage_options or {})
    out: dict[str, str] = {}
    if keep < 1:
        return out
    store = OutputStore(output_url, so)
    for sid in scene_ids:
        try:
            view = store.scene(sid)
        except (SceneNotFoundError, OutputNotFoundError):
            continue  # no output yet: nothing to keep
        hgn = view.hgn
        if hgn.get("status") != "complete":
            log.info("scene %r: its store is not complete; no previous labels kept", sid)
            continue
        run_id = str(hgn.get("run_id") or "unknown-run")
        dst = scene_store_url(previous_root(store.url, run_id), sid)
        _copy_labels(view.url, dst, hgn, so)
        out[sid] = run_id
        _prune(store.url, sid, keep, so)
    return out


def _prune(output_url: str, scene_id: str, keep: int, options: Mapping[str, Any]) -> None:
    versions = previous_versions(output_url, scene_id, options)
    fs = get_fs(output_url, options)
    for old in versions[:-keep]:
        fs.rm(strip_protocol(scene_store_url(old.root, scene_id)), recursive=True)
        path = strip_protocol(old.root)
        try:
            if not fs.find(path):  # no other scene kept from that run
                fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

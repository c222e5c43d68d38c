"""Output preparation: every scene's store exists before any batch is sent.

A scene the ledger has units of is resumed: its store is opened (and must exist); any other
scene gets a fresh OME-Zarr store with the run's provenance. Stores are created a few at a
time (S3 latency, not bandwidth, bounds it). A scene whose store cannot be made fails with
the reason; the others go on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pipeline.config import RunConfig
from pipeline.execute import ModelInfo
from pipeline.run.report import RunManifest
from pipeline.run.scheduler import SceneWork

__all__ = ["CREATE_THREADS", "prepare_outputs"]

CREATE_THREADS = 8  # stores created at once: each is a handful of small metadata writes


def prepare_outputs(
    works: Sequence[SceneWork],
    cfg: RunConfig,
    model: ModelInfo,
    manifest: RunManifest,
    storage_options: Mapping[str, Any],
) -> None:
    """Create (or, when resuming, open) the store of every scene in ``works``."""

    def prepare(w: SceneWork) -> None:
        try:
            _prepare_one(w, cfg, model, manifest, storage_options)
        except Exception as e:
            w.report.fail(f"cannot create output {w.report.output}: {type(e).__name__}: {e}")

    with ThreadPoolExecutor(min(CREATE_THREADS, max(1, len(works)))) as pool:
        list(pool.map(prepare, works))


def _prepare_one(
    w: SceneWork,
    cfg: RunConfig,
    model: ModelInfo,
    manifest: RunManifest,
    so: Mapping[str, Any],
) -> None:
    from pipeline.io.omezarr import SceneWriter

    s = w.info
    if w.resumed:  # some units are already written under this token: keep them
        SceneWriter.open(manifest.output_url, s.scene_id, storage_options=dict(so))
        return
    SceneWriter.create(
        manifest.output_url,
        s.scene_id,
        height=s.height,
        width=s.width,
        chunk=cfg.chunk,
        classes=list(model.classes),
        provenance={
            "arch": model.arch,
            "checkpoint_sha256": model.sha256,
            "config": manifest.config,
            "input_url": s.url,
            "input_fingerprint": s.fingerprint,
            "input_scene": s.to_dict(),  # queries reopen the source without a catalog
            "package_version": manifest.package_version,
            "run_id": manifest.run_id,
            "resume_token": w.token,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        georef=s.georef,
        confidence=cfg.confidence,
        levels=cfg.pyramid_levels,
        storage_options=dict(so),
        overwrite=cfg.overwrite,
    )

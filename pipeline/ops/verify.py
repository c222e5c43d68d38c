"""``hgn-pipeline verify --output OUT [--scene ID] [--repair]``: re-hash, report, repair.

:func:`verify` re-reads every chunk the ledger recorded for each scene (or one scene) and
compares its sha256 (:mod:`pipeline.state.checks`); a recorded chunk that is gone is
``missing``, one whose bytes differ (or that exists where the ledger says nothing was
stored) is ``damaged``, and the chunks of units no run finished are ``not computed``.

:func:`repair` recomputes exactly the work units of missing / damaged level-0 chunks, with
the model and output settings the output was written with, then rebuilds the scene's
pyramid from level 0 and records everything again, under the output's run lock. Units are
computed as in a clean run (same plan, windows and model), so a repaired store is
bit-identical to a clean run's. A scene whose input changed since is not repaired (that is
a new run's job), nor one whose checkpoint no longer matches the ledger's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pipeline.catalog import Catalog, SceneInfo, catalog
from pipeline.config import RunConfig, load_config
from pipeline.errors import ConfigError, LedgerMismatchError, OutputNotFoundError
from pipeline.io.omezarr import SceneWriter
from pipeline.query import OutputStore
from pipeline.state.checks import current_ledger, inspect_scene
from pipeline.state.integrity import PYRAMID_UNIT, SceneIntegrity
from pipeline.state.ledger import OUTPUT_SETTINGS, Ledger, RunFingerprint
from pipeline.storage import resolve_url

__all__ = ["RepairResult", "VerifyReport", "repair", "verify"]


@dataclass
class VerifyReport:
    """Every scene checked; ``exit_code`` 0 when all hold what the ledger recorded."""

    output_url: str
    scenes: list[SceneIntegrity] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    not_repaired: dict[str, str] = field(default_factory=dict)  # scene id -> why

    @property
    def damaged(self) -> list[SceneIntegrity]:
        return [s for s in self.scenes if not s.ok]

    @property
    def exit_code(self) -> int:
        return 0 if not self.damaged else 1

    def lines(self) -> list[str]:
        out = []
        for s in self.scenes:
            state = "ok" if s.ok else s.describe()
            note = f" (note: {s.note})" if s.note else ""
            out.append(f"{s.scene_id}: {state}; {s.checked} chunks checked{note}")
        for sid in self.repaired:
            out.append(f"{sid}: repaired")
        for sid, why in self.not_repaired.items():
            out.append(f"{sid}: not repaired: {why}")
        bad = len(self.damaged)
        out.append(f"{len(self.scenes)} scenes checked, {bad} with missing or damaged chunks"
                   + (f", {len(self.repaired)} repaired" if self.repaired else ""))
        return out


def verify(
    output_url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    scene: str | None = None,
    deep: bool = True,
) -> VerifyReport:
    """Check every scene the output's ledger or stores know (or only ``scene``)."""
    so = dict(storage_options or {})
    url = resolve_url(output_url)
    store = OutputStore(url, so)
    ledger = current_ledger(url, so)
    records = ledger.scenes() if ledger is not None else {}
    if scene is not None:
        store.scene(scene)  # SceneNotFoundError with close ids
        ids = [scene]
    else:
        ids = [s.scene_id for s in store.list_scenes() if s.store is not None]
    report = VerifyReport(url)
    for sid in ids:
        report.scenes.append(inspect_scene(url, sid, so, deep=deep, ledger=ledger,
                                           record=records.get(sid)))
    return report


@dataclass
class RepairResult:
    repaired: list[str]
    not_repaired: dict[str, str]
    units: int  # work units recomputed


def _config(output_url: str, so: dict[str, Any], scene_id: str,
            overrides: dict[str, Any]) -> RunConfig:
    """The run config the scene was written with (its provenance), plus ``overrides``."""
    hgn = dict(SceneWriter.open(output_url, scene_id, so).attrs.get("hgn") or {})
    base = {k: v for k, v in dict(hgn.get("config") or {}).items() if k != "s3"}  # masked
    return load_config(overrides={**base, **overrides})


def _input(output_url: str, so: dict[str, Any], scene_id: str, cfg: RunConfig) -> SceneInfo:
    hgn = dict(SceneWriter.open(output_url, scene_id, so).attrs.get("hgn") or {})
    url = hgn.get("input_url")
    if not url:
        raise ConfigError(f"scene {scene_id!r}: its provenance has no input_url to recompute from")
    try:
        cat = catalog(url, so, layout=cfg.layout)
    except OSError as exc:
        raise OutputNotFoundError(f"scene {scene_id!r}: its input {url} cannot be read "
                                  f"({exc}); restore it to repair the scene") from None
    if len(cat.scenes) != 1:
        why = "; ".join(f.reason for f in cat.failures) or f"{len(cat.scenes)} scenes there"
        raise OutputNotFoundError(f"scene {scene_id!r}: its input {url} cannot be read ({why})")
    return replace(cat.scenes[0], scene_id=scene_id)  # listed alone, it has a shorter id


def repair(
    output_url: str,
    damaged: list[SceneIntegrity],
    storage_options: dict[str, Any] | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    executor: Any | None = None,
    run_id: str | None = None,
    session: Any | None = None,
) -> RepairResult:
    """Recompute the damaged scenes' missing / damaged units (see module docstring)."""
    from pipeline.run import run_pipeline
    from pipeline.run.resume import model_identity
    from pipeline.state.runlock import RunLock

    so = dict(storage_options or {})
    url = resolve_url(output_url)
    todo = [s for s in damaged if not s.ok]
    if not todo:
        return RepairResult([], {}, 0)
    current = current_ledger(url, so)
    if current is None:
        raise ConfigError(f"output {url} has no ledger: nothing records what it should hold")
    cfg = _config(url, so, todo[0].scene_id, dict(overrides or {}))
    sha, arch = model_identity(cfg, executor)
    fp = RunFingerprint.from_config(cfg, sha, arch)
    if fp.token != current.fingerprint.token:
        raise LedgerMismatchError(
            f"output {url} was written with fingerprint {current.fingerprint.token!r}, the "
            f"repair would use {fp.token!r} ({fp.diff(current.fingerprint.settings)}): give the "
            "checkpoint it was written with (--set checkpoint=PATH) and the same "
            f"{', '.join(OUTPUT_SETTINGS)}"
        )
    run_id = run_id or f"repair-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    lock = RunLock(url, run_id, storage_options=so)
    with lock:
        ledger = Ledger.open(url, fp, storage_options=so, run_id=run_id, guard=lock.check)
        records = ledger.scenes()
        scenes, not_repaired, units = [], {}, 0
        for s in todo:
            info = _input(url, so, s.scene_id, cfg)
            rec = records.get(s.scene_id)
            if rec is not None and rec.input_fingerprint not in (None, info.fingerprint):
                not_repaired[s.scene_id] = ("its input changed since it was written; run "
                                            "`hgn-pipeline run` to reprocess it")
                continue
            token = SceneWriter.open(url, s.scene_id, so).attrs["hgn"]["resume_token"]
            ledger.forget_chunks(s.scene_id, token, [*s.units, PYRAMID_UNIT])
            ledger.mark_scene(s.scene_id, "running", info.fingerprint)
            scenes.append(info)
            units += len(s.units)
        if scenes:
            with session() if session is not None else contextlib.nullcontext():
                result = run_pipeline(
                    scenes[0].url, url, cfg.with_overrides(overwrite=True), executor=executor,
                    ledger=ledger, run_id=run_id,
                    catalog_result=Catalog(scenes=scenes, url=scenes[0].url))
            by_id = {s.scene_id: s for s in scenes}
            for rep in result.manifest.scenes:
                state = "done" if rep.status == "ok" else "failed"
                info_ = {"units": rep.units_total, "units_reused": rep.units_resumed,
                         "class_pixels": rep.class_pixels, "output": rep.output,
                         "repaired_by": run_id} if state == "done" else {"error": rep.error}
                ledger.mark_scene(rep.scene_id, state, by_id[rep.scene_id].fingerprint, info_)
                if state != "done":
                    not_repaired[rep.scene_id] = rep.error or "failed"
        ledger.compact()
        ledger.close()
    repaired = [s.scene_id for s in scenes if s.scene_id not in not_repaired]
    return RepairResult(repaired, not_repaired, units)

"""What a scene's store should hold, from its ledger, and whether it does.

:func:`inspect_scene` puts :mod:`pipeline.state.integrity`'s check together for one scene of an
output: the resume token from the store's provenance, the chunk records of its finished
units and of its pyramid from the ledger, and the plan's grid for the units no run finished.
Used by ``hgn-pipeline verify`` (deep), by queries before they answer (cheap) and by
``nightly`` before it calls a scene unchanged (cheap).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.io.omezarr import SceneWriter
from pipeline.plan import plan_scene
from pipeline.state.hgnstore import HgnStore
from pipeline.state.integrity import PYRAMID_UNIT, Record, SceneIntegrity, check_scene, chunk_key
from pipeline.state.ledger import Ledger, RunFingerprint, SceneRecord

__all__ = ["current_ledger", "expectations", "inspect_scene", "recheck_unchanged"]

RECHECK_WORKERS = 8  # scenes listed at once by recheck_unchanged (S3 latency-bound)


def current_ledger(output_url: str, storage_options: Mapping[str, Any] | None) -> Ledger | None:
    """The ledger of the fingerprint the output is bound to (None: no run recorded here)."""
    current = HgnStore(output_url, storage_options).read_json("ledger/current.json")
    if not current or "token" not in current:
        return None
    fp = RunFingerprint(current["token"], current.get("settings", {}))
    return Ledger(output_url, fp, storage_options)


def expectations(
    writer: SceneWriter, hgn: Mapping[str, Any], ledger: Ledger | None
) -> tuple[dict[str, tuple[Record, str | None]], dict[str, str], str | None]:
    """(recorded chunks: key -> (record, unit), chunks no finished unit wrote -> unit, note)."""
    token = hgn.get("resume_token")
    if ledger is None or not token:
        return {}, {}, "the output has no ledger record of this scene's chunks"
    infos = ledger.chunk_infos(writer.scene_id, token)
    expected: dict[str, tuple[Record, str | None]] = {}
    unrecorded = 0
    for unit, info in infos.items():
        stored = info.get("stored")
        if stored is None:
            unrecorded += 1
            continue
        for key, record in stored.items():
            expected[key] = (record, None if unit == PYRAMID_UNIT else unit)
    unit_chunks = int((hgn.get("config") or {}).get("unit_chunks") or 1)
    arrays = [writer.array_path(layer, 0) for layer in writer._layers()]
    grid = plan_scene(writer.scene_id, writer.height, writer.width, chunk=writer.chunk[0],
                      halo=0, unit_chunks=unit_chunks)
    not_computed = {chunk_key(a, cy, cx): u.unit_id for u in grid if u.unit_id not in infos
                    for a in arrays for cy, cx in u.chunk_indices}
    note = None
    if unrecorded:
        note = (f"{unrecorded} finished unit(s) have no recorded checksums (written before "
                "checksums were recorded): only their presence is known")
    if hgn.get("status") == "complete" and PYRAMID_UNIT not in infos:
        note = (note + "; " if note else "") + "the pyramid's checksums are not recorded"
    return expected, not_computed, note


def inspect_scene(
    output_url: str,
    scene_id: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    deep: bool = False,
    ledger: Ledger | None = None,
    record: SceneRecord | None = None,
) -> SceneIntegrity:
    """Check one scene's store against its ledger (see :func:`.integrity.check_scene`)."""
    so = dict(storage_options or {})
    writer = SceneWriter.open(output_url, scene_id, storage_options=so)
    hgn = dict(writer.attrs.get("hgn") or {})
    ledger = ledger if ledger is not None else current_ledger(output_url, so)
    if record is None and ledger is not None:
        record = ledger.scene(scene_id)
    expected, not_computed, note = expectations(writer, hgn, ledger)
    tracked = ledger is not None and bool(hgn.get("resume_token"))
    if not tracked:
        not_computed = {}  # nothing says which units finished: no chunk can be named
    result = check_scene(scene_id, writer.url, expected, not_computed, options=so, deep=deep,
                         done_at=record.updated if record is not None else None)
    result.note, result.tracked = note, tracked
    return result


def recheck_unchanged(output_url: str, storage_options: Mapping[str, Any] | None,
                      ledger: Ledger, changes: Any) -> None:
    """Move ``changes.unchanged`` scenes whose chunks are missing or damaged to ``damaged``.

    The cheap check per scene (a listing: sizes, ETags, mtimes against the recorded
    checksums; suspects re-hashed). Their missing / damaged units and pyramid are forgotten
    in the ledger, so the run that follows recomputes exactly those and rebuilds the pyramid.
    """
    if not changes.unchanged:
        return
    records = ledger.scenes()

    def one(sid: str) -> SceneIntegrity | None:
        try:
            return inspect_scene(output_url, sid, storage_options, ledger=ledger,
                                 record=records.get(sid))
        except OSError:  # the store itself is gone: its units are all missing
            return None

    with ThreadPoolExecutor(RECHECK_WORKERS) as pool:
        results = dict(zip(changes.unchanged, pool.map(one, changes.unchanged), strict=True))
    for sid, result in results.items():
        if result is not None and result.ok:
            continue
        writer_token = None
        if result is not None:
            writer = SceneWriter.open(output_url, sid, storage_options=dict(storage_options or {}))
            writer_token = (writer.attrs.get("hgn") or {}).get("resume_token")
        if result is None or writer_token is None:
            ledger.reset_scene(sid)  # nothing to keep: redo the whole scene
            changes.damaged[sid] = ["<store missing>"]
        else:
            ledger.forget_chunks(sid, writer_token, [*result.units, PYRAMID_UNIT])
            changes.damaged[sid] = result.keys()
        changes.unchanged.remove(sid)

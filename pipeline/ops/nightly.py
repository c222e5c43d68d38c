"""Nightly incremental processing: only new or changed scenes, with a run history.

``hgn-pipeline nightly --input URL --output URL`` lists the archive, compares each scene's
fingerprint with the output's ledger (:mod:`pipeline.run.resume`) and processes only scenes that
are new, changed, or failed/unfinished before. A night without changes starts nothing (no
Ray, no model) and says so. Scenes that vanished from the archive are reported; their outputs
are kept. Every night appends to ``<output>/_hgn/history/``:

- ``<run_id>.json``: the full report (:class:`NightlyReport`);
- ``history.log``: one line of text per night.

Both are written while the run lock is held, so the log's append cannot race another run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.config import RunConfig
from pipeline.run import RunRequest
from pipeline.run.resume import ResumableRun
from pipeline.state.hgnstore import HgnStore, now_utc
from pipeline.storage import resolve_url

__all__ = ["HISTORY_LOG", "NightlyReport", "nightly", "read_history"]

HISTORY_DIR = "history"
HISTORY_LOG = f"{HISTORY_DIR}/history.log"


@dataclass
class NightlyReport:
    """One night's record (JSON in the history)."""

    run_id: str
    started: str
    finished: str
    input_url: str
    output_url: str
    fingerprint: str
    changes: dict[str, Any]
    nothing_to_do: bool
    processed_ok: list[str] = field(default_factory=list)
    processed_failed: list[dict[str, str | None]] = field(default_factory=list)
    units_done: int = 0
    units_reused: int = 0
    manifest: str | None = None
    seconds: float = 0.0
    lock_takeover: str | None = None
    summary: str = ""
    # Re-segmented scenes with a change map: {scene_id: {"against", "summary"} or {"error"}}
    change_maps: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0: all good or nothing to do; 1: a scene failed or the archive has unreadable ones."""
        return 1 if self.processed_failed or self.changes["unreadable"] else 0

    def line(self) -> str:
        """The history.log line: time, run id, what happened."""
        return f"{self.finished} nightly {self.run_id}: {self.summary} ({self.seconds:.1f} s)"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)


def nightly(
    request: RunRequest | str,
    output_url: str | None = None,
    config: RunConfig | None = None,
    /,
    **options: Any,
) -> NightlyReport:
    """Process what changed in the archive since the last run; append to the history.

    Takes a :class:`~pipeline.run.RunRequest` (or its parts, as for ``run_pipeline``); its
    ``session`` (e.g. ``lambda: ray_session(address)``) is entered only when there is work.
    """
    t0 = time.perf_counter()
    started = now_utc()
    with ResumableRun(request, output_url, config, **options) as rr:
        rr.plan()
        run = rr.execute()
        res = rr.result(run)
        report = NightlyReport(
            run_id=rr.run_id, started=started, finished=now_utc(),
            input_url=rr.input_url, output_url=rr.output_url, fingerprint=res.fingerprint,
            changes=res.changes.as_dict(), nothing_to_do=res.nothing_to_do,
            units_reused=res.units_reused, lock_takeover=res.lock_takeover,
            seconds=time.perf_counter() - t0, summary=res.describe(),
        )
        if run is not None:
            m = run.manifest
            report.processed_ok = [s.scene_id for s in m.ok]
            report.processed_failed = [{"scene_id": s.scene_id, "error": s.error}
                                       for s in m.failed]
            report.units_done = sum(s.units_done for s in m.scenes)
            report.manifest = run.manifest_url
            report.change_maps = {s.scene_id: {k: v for k, v in s.change.items() if k != "matrix"}
                                  for s in m.scenes if s.change}
        _append_history(HgnStore(rr.output_url, rr.so), report)
    return report


def _append_history(store: HgnStore, report: NightlyReport) -> None:
    store.write(f"{HISTORY_DIR}/{report.run_id}.json", report.to_json().encode())
    old = store.read(HISTORY_LOG) or b""
    store.write(HISTORY_LOG, old + (report.line() + "\n").encode())


def read_history(
    output_url: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[list[str], list[dict[str, Any]]]:
    """(history.log lines, report dicts oldest first) of an output."""
    store = HgnStore(resolve_url(output_url), storage_options)
    lines = (store.read(HISTORY_LOG) or b"").decode().splitlines()
    names = sorted(n for n in store.list(HISTORY_DIR) if n.endswith(".json"))
    reports = [json.loads(d) for _, d in sorted(
        store.read_many([f"{HISTORY_DIR}/{n}" for n in names]).items())]
    return lines, reports

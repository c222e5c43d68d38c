"""Resumable runs: the run lock, the ledger and ``run_pipeline`` put together.

``hgn-pipeline run`` and ``nightly`` both go through :class:`ResumableRun`:

1. take the output's run lock (:mod:`pipeline.state.runlock`): a second run on the same output is
   refused with a message naming the holder; a dead holder's lock is taken over;
2. bind the output to the run fingerprint (checkpoint sha256 + output settings): another
   fingerprint is refused unless ``overwrite`` (:mod:`pipeline.state.ledger`);
3. compare the catalog with the ledger: scenes ``done`` under this fingerprint with the same
   input fingerprint are reused as they are; new, changed, failed and unfinished scenes are
   (re)processed; scenes in the ledger but gone from the archive are reported, outputs kept;
4. run only that subset; each chunk is recorded after its write succeeded, so a crash
   loses at most the chunks in flight and a rerun of the same command redoes only those;
5. record every processed scene ``done`` (chunks, pyramid and metadata written) or
   ``failed``, compact the ledger, release the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from pipeline.catalog import Catalog, SceneInfo, catalog
from pipeline.config import RunConfig
from pipeline.errors import ConfigError
from pipeline.names import check_run_id
from pipeline.run import RunRequest, RunResult, new_run_id, run_pipeline
from pipeline.state.checks import recheck_unchanged
from pipeline.state.ledger import Ledger, RunFingerprint, SceneRecord
from pipeline.state.runlock import RunLock
from pipeline.storage import check_output_location, resolve_url, storage_options_from

__all__ = ["Changes", "ResumableRun", "ResumeResult", "model_identity", "run_resumable"]

log = logging.getLogger(__name__)

LOCK_TTL_S = 300.0  # a holder silent this long is dead; > any clock skew and GC/IO pause
HEARTBEAT_S = 30.0  # lock refresh period; 10 beats per TTL tolerate a few failed writes


def model_identity(cfg: RunConfig, executor: Any | None = None) -> tuple[str, str]:
    """(checkpoint sha256, arch) of the model the run will use, without loading weights.

    With an ``executor`` (tests, custom models) its own model is what runs, so it is asked
    (``start()`` is idempotent; its owner closes it); else the checkpoint's JSON is read and
    the weights file's sha256 checked against it (a hash, not a model load).
    """
    if executor is not None:
        executor.start()
        return executor.model.sha256, executor.model.arch
    from hgn_model.checkpoint import read_config, resolve_checkpoint

    ckpt = read_config(cfg.checkpoint)
    # The workers verify the weights when they load them; checking here too refuses a
    # tampered or truncated file before the output is bound to the hash its JSON claims.
    weights, cfg_path = resolve_checkpoint(cfg.checkpoint)
    digest = hashlib.sha256()
    with weights.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != ckpt.sha256:
        raise ConfigError(
            f"checkpoint {str(weights)!r}: sha256 {digest.hexdigest()[:16]}... does not match "
            f"the {ckpt.sha256[:16] or '<empty>'}... recorded in {cfg_path.name}; the weights "
            "were modified or truncated. Re-download or re-export the checkpoint."
        )
    return ckpt.sha256, ckpt.arch


@dataclass
class Changes:
    """The archive compared with the ledger (scene ids, sorted)."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # input fingerprint differs
    retry: list[str] = field(default_factory=list)  # failed / unfinished before
    unchanged: list[str] = field(default_factory=list)  # done, same input: reused
    vanished: list[str] = field(default_factory=list)  # in the ledger, gone from the archive
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # catalog failures
    # done before, but chunks are missing or damaged now: scene id -> chunk keys (redone)
    damaged: dict[str, list[str]] = field(default_factory=dict)

    @property
    def todo(self) -> list[str]:
        return sorted(self.new + self.changed + self.retry + list(self.damaged))

    def as_dict(self) -> dict[str, Any]:
        return {
            "new": self.new, "changed": self.changed, "retry": self.retry,
            "unchanged": len(self.unchanged), "vanished": self.vanished,
            "unreadable": [{"scene_id": s, "reason": r} for s, r in self.unreadable],
            "damaged": self.damaged,
        }


def compare(cat: Catalog, records: dict[str, SceneRecord]) -> Changes:
    """Classify the catalog's scenes against the ledger's records."""
    ch = Changes()
    for s in cat.scenes:
        rec = records.get(s.scene_id)
        if rec is None:
            ch.new.append(s.scene_id)
        elif rec.input_fingerprint not in (None, s.fingerprint):
            ch.changed.append(s.scene_id)
        elif rec.state == "done":
            ch.unchanged.append(s.scene_id)
        else:
            ch.retry.append(s.scene_id)
    listed = {s.scene_id for s in cat.scenes} | {f.scene_id for f in cat.failures}
    ch.vanished = sorted(set(records) - listed)
    ch.unreadable = [(f.scene_id, f.reason) for f in cat.failures]
    return ch


@dataclass
class ResumeResult:
    """What a resumable run did (``run`` is None when there was nothing to do)."""

    run_id: str
    fingerprint: str
    changes: Changes
    run: RunResult | None
    lock_takeover: str | None = None

    @property
    def nothing_to_do(self) -> bool:
        return self.run is None

    @property
    def units_reused(self) -> int:
        return sum(s.units_resumed for s in self.run.manifest.scenes) if self.run else 0

    @property
    def exit_code(self) -> int:
        if self.run is not None:
            return self.run.exit_code
        return 1 if self.changes.unreadable else 0

    def describe(self) -> str:
        """One sentence: what was reused, processed, failed, vanished."""
        ch = self.changes
        parts = [f"{len(ch.new)} new", f"{len(ch.changed)} changed", f"{len(ch.retry)} retried",
                 f"{len(ch.unchanged)} unchanged (reused)", f"{len(ch.vanished)} vanished"]
        if ch.unreadable:
            parts.append(f"{len(ch.unreadable)} unreadable")
        if ch.damaged:
            parts.append(f"{len(ch.damaged)} with missing or damaged chunks (redone)")
        if self.run is None:
            return f"nothing to do: {', '.join(parts)}"
        m = self.run.manifest
        return (f"{', '.join(parts)}; processed {len(m.ok)} ok, {len(m.failed)} failed; "
                f"{self.units_reused} chunks reused from the ledger")


class ResumableRun(AbstractContextManager["ResumableRun"]):
    """Lock + ledger around one run on the request's output (see module docstring).

    Takes a :class:`~pipeline.run.RunRequest`, or ``(input_url, output_url, config,
    **options)`` with the request's fields as options.
    """

    def __init__(
        self,
        request: RunRequest | str,
        output_url: str | None = None,
        config: RunConfig | None = None,
        /,
        *,
        lock_ttl_s: float = LOCK_TTL_S,
        heartbeat_s: float = HEARTBEAT_S,
        **options: Any,
    ) -> None:
        req = RunRequest.of(request, output_url, config, **options)
        self.input_url, self.output_url = resolve_url(req.input_url), resolve_url(req.output_url)
        check_output_location(self.input_url, self.output_url)  # before the lock is written
        self.run_id = check_run_id(req.run_id) if req.run_id is not None else new_run_id()
        self.request = req.evolve(
            input_url=self.input_url, output_url=self.output_url, run_id=self.run_id
        )
        self.cfg = req.config
        self.executor = req.executor
        self.so = storage_options_from(self.cfg.s3)
        self.lock = RunLock(self.output_url, self.run_id, storage_options=self.so,
                            ttl_s=lock_ttl_s, heartbeat_s=heartbeat_s)
        self.ledger: Ledger | None = None
        self.catalog: Catalog | None = None
        self.changes: Changes | None = None

    def __enter__(self) -> ResumableRun:
        # What can refuse the run is checked before the output is touched: a wrong input or
        # checkpoint must not leave a lock, or a ledger bound to this run's fingerprint, behind.
        sha, arch = model_identity(self.cfg, self.executor)
        self.catalog = catalog(self.input_url, self.so, **self.cfg.catalog_options())
        self.lock.acquire()
        try:
            fp = RunFingerprint.from_config(self.cfg, sha, arch)
            self.ledger = Ledger.open(self.output_url, fp, storage_options=self.so,
                                      overwrite=self.cfg.overwrite, run_id=self.run_id,
                                      guard=self.lock.check, background=True)
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.ledger is not None:
                try:
                    if not self.lock.lost:
                        self.ledger.compact()
                finally:
                    self.ledger.close()
        finally:
            self.lock.release()

    def plan(self) -> Changes:
        """Compare the archive (listed on entering) with the ledger."""
        if self.catalog is None:
            self.catalog = catalog(self.input_url, self.so, **self.cfg.catalog_options())
        self.changes = compare(self.catalog, self.ledger.scenes())
        # "unchanged" must still hold what was recorded (pipeline.state.checks: one listing each)
        recheck_unchanged(self.output_url, self.so, self.ledger, self.changes)
        return self.changes

    def execute(self) -> RunResult | None:
        """Process :attr:`Changes.todo` (unreadable scenes go in its manifest); None if no work.

        The request's ``session`` is entered only when there is work (e.g. starting Ray for a
        nightly run).
        """
        from pipeline.ops.publish import after_run, before_run

        ch = self.changes if self.changes is not None else self.plan()
        if not ch.todo:
            after_run(self.output_url, None, {}, self.so, self.request.console)
            return None
        todo = set(ch.todo)
        subset = Catalog(
            scenes=[s for s in self.catalog.scenes if s.scene_id in todo],
            failures=list(self.catalog.failures),
            url=self.catalog.url,
            skipped=list(self.catalog.skipped),  # reported in every run's manifest
        )
        for s in subset.scenes:  # clears the chunks of a changed scene before any write
            self.ledger.mark_scene(s.scene_id, "running", s.fingerprint)
        # The ledger decides what is done: an existing store of a scene to (re)process is ours
        # to replace, unless the ledger is brand new (then its stores are someone else's).
        cfg = self.cfg if self.ledger.created else self.cfg.with_overrides(overwrite=True)
        # Before any store is rewritten: the labels of changed scenes, for their change maps.
        kept = before_run(self.output_url, ch.changed, cfg.keep_previous, self.so)
        session = self.request.session
        with session() if session is not None else contextlib.nullcontext():
            result = run_pipeline(
                self.request.evolve(config=cfg), ledger=self.ledger, catalog_result=subset
            )
        self._record(subset.scenes, result)
        after_run(self.output_url, result, kept, self.so, self.request.console)  # maps, STAC
        self.lock.check()
        return result

    def _record(self, scenes: list[SceneInfo], result: RunResult) -> None:
        by_id = {s.scene_id: s for s in scenes}
        for rep in result.manifest.scenes:
            info = by_id.get(rep.scene_id)
            if info is None:
                continue  # a catalog failure: nothing was written
            if rep.status == "ok":
                self.ledger.mark_scene(rep.scene_id, "done", info.fingerprint, {
                    "units": rep.units_total, "units_reused": rep.units_resumed,
                    "class_pixels": rep.class_pixels, "output": rep.output,
                })
            else:
                self.ledger.mark_scene(rep.scene_id, "failed", info.fingerprint,
                                       {"error": rep.error})

    def result(self, run: RunResult | None) -> ResumeResult:
        return ResumeResult(self.run_id, self.ledger.fingerprint.token, self.changes, run,
                            self.lock.took_over)


def run_resumable(
    request: RunRequest | str,
    output_url: str | None = None,
    config: RunConfig | None = None,
    /,
    **options: Any,
) -> ResumeResult:
    """``run_pipeline`` with lock, fingerprint check and resume (the ``run`` command).

    Takes a :class:`~pipeline.run.RunRequest`, or its parts as for ``run_pipeline``.
    """
    with ResumableRun(request, output_url, config, **options) as rr:
        rr.plan()
        return rr.result(rr.execute())

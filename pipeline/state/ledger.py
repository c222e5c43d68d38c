"""Resume ledger of an output store (local path or ``s3://``).

zarr 3 skips empty chunks, so a chunk listing cannot say what a run finished; the ledger can.
It lives under ``<output>/_hgn/`` next to the run lock (:mod:`pipeline.state.runlock`)::

    ledger/current.json                        the run fingerprint the output was written with
    ledger/<fp>/chunks/<scene>/<token>/<chunk> one marker object per finished chunk
    ledger/<fp>/scenes/<scene>.json            latest state record of a scene
    ledger/<fp>/summary.json                   compacted scenes + chunks (Ledger.compact)

``<fp>`` is the output-wide :class:`RunFingerprint`; ``<token>`` the per-scene resume token
``pipeline.run`` passes (it also covers the scene's input fingerprint), ``_`` without one.
Ids are percent-escaped into single path segments.

Design for many concurrent writers (Ray actors on many nodes, S3 without locks): nothing is
ever read-modified-written by a worker. A finished chunk is one new marker object (written
only after the chunk's write succeeded; idempotent), a scene state is one whole-object PUT by
the run's driver, and a resume lists the markers. ``compact`` folds markers into
``summary.json`` at the end of a run, so later listings stay short.

The fingerprint (:class:`RunFingerprint`) hashes the checkpoint's sha256 and every setting
that changes the output, so a resume never mixes outputs of different models or configs: a
run with another fingerprint is refused unless ``overwrite=True``. ``current.json`` is
created conditionally (see :mod:`pipeline.state.hgnstore`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote

from pipeline.config import OUTPUT_SETTINGS, output_settings
from pipeline.errors import LedgerMismatchError
from pipeline.state.hgnstore import HgnStore, now_utc, segment

__all__ = [
    "OUTPUT_SETTINGS",
    "STATES",
    "Ledger",
    "LedgerMismatchError",
    "RunFingerprint",
    "SceneRecord",
]

log = logging.getLogger(__name__)

STATES = ("pending", "running", "done", "failed")
# Bump when the pipeline's own output for identical settings changes (padding, stitching).
LEDGER_FORMAT = 2  # 2: no reflection beyond scene edges (windows padded only for the model)
_NO_TOKEN = "_"  # marker folder of chunks recorded without a per-scene token
MARKER_WRITERS = 8  # concurrent marker writes per process: S3 latency, not bandwidth, bounds them
MAX_PENDING = 512  # markers queued at most before mark_done blocks (memory stays flat)


# --- fingerprint ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFingerprint:
    """What decides the labels an output holds: checkpoint + output-changing settings."""

    token: str
    settings: dict[str, Any]

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> RunFingerprint:
        clean = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
        blob = json.dumps(clean, sort_keys=True, separators=(",", ":"))
        return cls(hashlib.sha256(blob.encode()).hexdigest()[:20], clean)

    @classmethod
    def from_config(
        cls, config: Any, checkpoint_sha256: str, arch: str | None = None
    ) -> RunFingerprint:
        """From a ``RunConfig`` (or a mapping of its fields) and the loaded checkpoint's hash."""
        data = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
        missing = [k for k in OUTPUT_SETTINGS if k not in data]
        if missing:
            raise ValueError(f"config lacks output settings {missing}; pass a full RunConfig")
        if not checkpoint_sha256:
            raise ValueError("checkpoint_sha256 is empty; pass Segmenter.config.sha256")
        settings = output_settings(data)
        settings.update(checkpoint_sha256=checkpoint_sha256, arch=arch, format=LEDGER_FORMAT)
        return cls.from_settings(settings)

    def diff(self, other: Mapping[str, Any]) -> str:
        keys = sorted(set(self.settings) | set(other))
        parts = [
            f"{k}: {other.get(k)!r} -> {self.settings.get(k)!r}"
            for k in keys
            if self.settings.get(k) != other.get(k)
        ]
        return "; ".join(parts) or "(same settings, different token)"


# --- ledger ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneRecord:
    """Latest state of one scene under a fingerprint."""

    scene_id: str
    state: str
    input_fingerprint: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    updated: str = ""
    run_id: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SceneRecord:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class Ledger:
    """Which chunks and scenes of an output are finished, under one run fingerprint.

    Cheap and picklable: build it with :meth:`open` in the driver (which checks the
    fingerprint), pass it to workers, call :meth:`mark_done` after each chunk write succeeded.
    ``background=True`` (the driver of a run) queues marker writes on a small thread pool;
    :meth:`flush` / :meth:`close` wait for them (``mark_scene`` and ``compact`` flush first).
    """

    def __init__(
        self,
        output_url: str,
        fingerprint: RunFingerprint,
        storage_options: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        guard: Callable[[], None] | None = None,
        background: bool = False,
    ) -> None:
        self._store = HgnStore(output_url, storage_options)
        self.fingerprint = fingerprint
        self.run_id = run_id
        # Called before every write, e.g. RunLock.check: a run whose lock was taken over
        # stops recording instead of racing the new holder.
        self.guard = guard
        self._done: dict[tuple[str, str], set[str]] = {}  # (scene, token) snapshot for is_done
        self.created = False  # open() made this output's ledger (no earlier run wrote here)
        self._summary: dict[str, Any] | None = None
        self.background = background
        self._pool: ThreadPoolExecutor | None = None
        self._sem: threading.BoundedSemaphore | None = None
        self._error: BaseException | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Workers get no guard (a lock's thread is not picklable), no snapshots, no threads.
        return {**self.__dict__, "_done": {}, "_summary": None, "guard": None, "_pool": None,
                "_sem": None, "_error": None}

    def close(self) -> None:
        """Flush background writes and stop their threads (the ledger stays usable)."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _guard(self) -> None:
        if self.guard is not None:
            self.guard()

    @property
    def output_url(self) -> str:
        return self._store.output_url

    @property
    def _base(self) -> str:
        return f"ledger/{self.fingerprint.token}"

    @classmethod
    def open(
        cls,
        output_url: str,
        fingerprint: RunFingerprint,
        *,
        storage_options: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        run_id: str | None = None,
        guard: Callable[[], None] | None = None,
        background: bool = False,
    ) -> Ledger:
        """Bind the output to ``fingerprint``; refuse another one unless ``overwrite``.

        With ``overwrite`` and a different fingerprint, the old ledgers are deleted (their
        scenes count as not done). Call while holding the output's :class:`RunLock`.
        """
        ledger = cls(output_url, fingerprint, storage_options, run_id, guard, background)
        store = ledger._store
        record = {
            "token": fingerprint.token, "settings": fingerprint.settings, "created": now_utc()
        }
        data = json.dumps(record, indent=1).encode()
        if store.create("ledger/current.json", data):
            ledger.created = True
            return ledger
        current = store.read_json("ledger/current.json") or {}
        if current.get("token") == fingerprint.token:
            return ledger
        if not overwrite:
            raise LedgerMismatchError(
                f"output {ledger.output_url} was written with run fingerprint "
                f"{current.get('token')!r}, this run's is {fingerprint.token!r} "
                f"({fingerprint.diff(current.get('settings', {}))}). Resuming would mix outputs "
                "of different models/settings: rerun with `--set overwrite=true` to replace "
                "them, or write to another --output."
            )
        log.warning(
            "overwrite: %s switches from fingerprint %s to %s; old ledger removed",
            ledger.output_url, current.get("token"), fingerprint.token,
        )
        for name in {p.split("/", 1)[0] for p in store.list("ledger")}:
            if name != "current.json":
                store.delete_tree(f"ledger/{name}")
        store.write("ledger/current.json", data)
        return ledger

    def current_token(self) -> str | None:
        """The fingerprint token the output is bound to (None: never written)."""
        return (self._store.read_json("ledger/current.json") or {}).get("token")

    # chunks ------------------------------------------------------------------------------
    def _chunks_dir(self, scene_id: str, token: str | None) -> str:
        tok = segment(token or _NO_TOKEN, "token")
        return f"{self._base}/chunks/{segment(scene_id, 'scene_id')}/{tok}"

    def mark_done(
        self,
        scene_id: str,
        chunk_id: str,
        token: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a finished chunk. Call only after its write succeeded. Idempotent.

        ``token``: the scene's resume token (``pipeline.run`` passes one per scene that also
        covers the scene's input fingerprint); only the same token finds the chunk done.
        ``info`` (e.g. class counts) is kept for reports (:meth:`chunk_infos`).
        """
        self._guard()
        body = {"t": now_utc(), "run": self.run_id, **(dict(info) if info else {})}
        rel = f"{self._chunks_dir(scene_id, token)}/{segment(chunk_id, 'chunk_id')}"
        data = json.dumps(body, separators=(",", ":")).encode()
        self._done.setdefault((scene_id, token or _NO_TOKEN), set()).add(chunk_id)
        if not self.background:
            self._store.write(rel, data)
            return
        # One PUT per chunk would serialise the driver on S3 latency: write in the background,
        # at most MAX_PENDING at once (backpressure); flush() waits and re-raises failures.
        self._slots().acquire()
        try:
            future = self._writers().submit(self._store.write, rel, data)
        except BaseException:
            self._slots().release()
            raise
        future.add_done_callback(self._written)

    def _slots(self) -> threading.BoundedSemaphore:
        if self._sem is None:
            self._sem = threading.BoundedSemaphore(MAX_PENDING)
        return self._sem

    def _writers(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(MARKER_WRITERS, thread_name_prefix="ledger")
        return self._pool

    def _written(self, future: Future[None]) -> None:
        exc = future.exception()
        if exc is not None and self._error is None:
            self._error = exc
        self._slots().release()

    def flush(self) -> None:
        """Wait for background marker writes; raise the first that failed."""
        if self._pool is not None:
            for _ in range(MAX_PENDING):  # all slots free = nothing in flight
                self._slots().acquire()
            for _ in range(MAX_PENDING):
                self._slots().release()
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def chunk_infos(self, scene_id: str, token: str | None = None) -> dict[str, dict[str, Any]]:
        """chunk id -> ``info`` given to mark_done, for every finished chunk (listing + summary)."""
        tok = token or _NO_TOKEN
        out = dict(self._load_summary()["chunks"].get(scene_id, {}).get(tok, {}))
        d = self._chunks_dir(scene_id, token)
        names = [n for n in self._store.list(d) if "/" not in n]
        for rel, data in self._store.read_many([f"{d}/{n}" for n in names]).items():
            out[unquote(rel.rsplit("/", 1)[1])] = _marker_info(data)
        return out

    def done_chunks(self, scene_id: str, token: str | None = None) -> set[str]:
        """Chunk ids recorded as finished for ``scene_id`` under ``token``."""
        names = self._store.list(self._chunks_dir(scene_id, token))
        done = {unquote(n) for n in names if "/" not in n}
        done |= set(self._load_summary()["chunks"].get(scene_id, {}).get(token or _NO_TOKEN, ()))
        self._done[(scene_id, token or _NO_TOKEN)] = set(done)
        return done

    def is_done(self, scene_id: str, chunk_id: str, token: str | None = None) -> bool:
        """From a per-scene snapshot listed on first use (plus this instance's mark_done).

        One listing per scene instead of one request per chunk; a resume asks for every unit.
        """
        key = (scene_id, token or _NO_TOKEN)
        if key not in self._done:
            self.done_chunks(scene_id, token)
        return chunk_id in self._done[key]

    # scenes ------------------------------------------------------------------------------
    def _scene_rel(self, scene_id: str) -> str:
        return f"{self._base}/scenes/{segment(scene_id, 'scene_id')}.json"

    def _scene_file(self, scene_id: str) -> SceneRecord | None:
        d = self._store.read_json(self._scene_rel(scene_id))
        return SceneRecord.from_dict(d) if d else None

    def scene(self, scene_id: str) -> SceneRecord | None:
        """Latest record of one scene, or None."""
        rec = self._scene_file(scene_id)
        if rec is not None:
            return rec
        d = self._load_summary()["scenes"].get(scene_id)
        return SceneRecord.from_dict(d) if d else None

    def mark_scene(
        self,
        scene_id: str,
        state: str,
        input_fingerprint: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> SceneRecord:
        """Record a scene's state. ``done`` only once chunks, pyramid and metadata are written.

        When ``input_fingerprint`` differs from the recorded one (the scene changed in the
        archive), its chunk markers are cleared first: chunks of the old input are not done.
        """
        if state not in STATES:
            raise ValueError(f"state {state!r} for scene {scene_id!r}: use one of {STATES}")
        self._guard()
        self.flush()  # a scene's record never lands before its chunks' markers
        old = self.scene(scene_id)
        if (
            old is not None
            and input_fingerprint is not None
            and old.input_fingerprint not in (None, input_fingerprint)
        ):
            self.reset_scene(scene_id)
        rec = SceneRecord(
            scene_id, state, input_fingerprint, dict(info or {}), now_utc(), self.run_id
        )
        self._store.write(self._scene_rel(scene_id), json.dumps(asdict(rec), indent=1).encode())
        return rec

    def forget_chunks(self, scene_id: str, token: str | None, chunk_ids: list[str]) -> None:
        """Forget some finished chunks (their output is missing or damaged: redo them)."""
        self._guard()
        self.flush()
        d = self._chunks_dir(scene_id, token)
        self._store.delete(f"{d}/{segment(c, 'chunk_id')}" for c in chunk_ids)
        summary = self._load_summary(fresh=True)
        per_token = summary["chunks"].get(scene_id, {}).get(token or _NO_TOKEN, {})
        removed = [c for c in chunk_ids if per_token.pop(c, None) is not None]
        if removed:
            self._store.write(f"{self._base}/summary.json", json.dumps(summary).encode())
        self._done.pop((scene_id, token or _NO_TOKEN), None)

    def reset_scene(self, scene_id: str) -> None:
        """Forget a scene's chunks under every token (its output will be rewritten)."""
        self._guard()
        self._store.delete_tree(f"{self._base}/chunks/{segment(scene_id, 'scene_id')}")
        summary = self._load_summary(fresh=True)
        if summary["chunks"].pop(scene_id, None) is not None:
            self._store.write(f"{self._base}/summary.json", json.dumps(summary).encode())
        for key in [k for k in self._done if k[0] == scene_id]:
            del self._done[key]

    def scenes(self) -> dict[str, SceneRecord]:
        """Every scene recorded under this fingerprint, by id."""
        out = {sid: SceneRecord.from_dict(d) for sid, d in self._load_summary()["scenes"].items()}
        rels = [f"{self._base}/scenes/{n}" for n in self._store.list(f"{self._base}/scenes")]
        for data in self._store.read_many(rels).values():
            try:
                rec = SceneRecord.from_dict(json.loads(data))
            except (ValueError, TypeError):
                continue
            out[rec.scene_id] = rec  # scene files are newer than the summary
        return out

    # compaction ----------------------------------------------------------------------------
    def _load_summary(self, fresh: bool = False) -> dict[str, Any]:
        if self._summary is None or fresh:
            s = self._store.read_json(f"{self._base}/summary.json") or {}
            s.setdefault("scenes", {})
            s.setdefault("chunks", {})  # scene id -> token -> chunk id -> info
            self._summary = s
        return self._summary

    def compact(self) -> dict[str, int]:
        """Fold chunk markers and scene files into ``summary.json``, then delete them.

        Only with no other writer active (the driver, holding the run lock, after every task
        has finished): a marker written during compaction would survive, but a scene file
        rewritten during it could be lost.
        """
        self._guard()
        self.flush()
        summary = self._load_summary(fresh=True)
        scene_rels = [f"{self._base}/scenes/{n}" for n in self._store.list(f"{self._base}/scenes")]
        for data in self._store.read_many(scene_rels).values():
            rec = json.loads(data)
            summary["scenes"][rec["scene_id"]] = rec
        by_seg = {segment(sid, "scene_id"): sid for sid in summary["scenes"]}
        marker_rels = [
            f"{self._base}/chunks/{rel}"
            for rel in self._store.list(f"{self._base}/chunks")
            if rel.count("/") == 2
        ]
        folded = []
        for rel, data in self._store.read_many(marker_rels).items():
            seg, tok, name = rel.split("/")[-3:]
            sid = by_seg.get(seg, unquote(seg))
            per_token = summary["chunks"].setdefault(sid, {}).setdefault(unquote(tok), {})
            per_token[unquote(name)] = _marker_info(data)
            folded.append(rel)
        summary.update(token=self.fingerprint.token, compacted=now_utc())
        self._store.write(f"{self._base}/summary.json", json.dumps(summary).encode())
        self._store.delete(folded)
        self._store.delete(scene_rels)
        self._summary = summary
        return {"scenes": len(summary["scenes"]), "markers_folded": len(folded)}


def _marker_info(data: bytes) -> dict[str, Any]:
    body = json.loads(data)
    return {k: v for k, v in body.items() if k not in ("t", "run")}

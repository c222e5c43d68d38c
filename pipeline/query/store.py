"""An output root as the query API sees it: its scenes, their status and provenance."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import OutputNotFoundError, SceneNotFoundError
from pipeline.io.omezarr import STORE_SUFFIX, SceneWriter
from pipeline.query.view import READ_WORKERS, SceneView
from pipeline.state.hgnstore import HGN_DIR, HgnStore
from pipeline.state.ledger import Ledger, RunFingerprint
from pipeline.storage import listed_root, resolve_url

__all__ = ["OutputStore", "SceneSummary"]


@dataclass(frozen=True)
class SceneSummary:
    """One line of ``query scenes``: status and provenance."""

    scene_id: str
    status: str  # ledger state (pending/running/done/failed), else "complete"/"incomplete"
    store: str | None
    height: int | None = None
    width: int | None = None
    levels: int | None = None
    arch: str | None = None
    checkpoint_sha256: str | None = None
    input_url: str | None = None
    input_fingerprint: str | None = None
    run_id: str | None = None
    finished: str | None = None
    georeferenced: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OutputStore:
    """An output root written by ``hgn-pipeline run``."""

    def __init__(self, output_url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = resolve_url(output_url)
        self.storage_options = dict(storage_options or {})

    def _ledger_records(self) -> dict[str, Any]:
        current = HgnStore(self.url, self.storage_options).read_json("ledger/current.json")
        if not current:
            return {}
        fp = RunFingerprint(current["token"], current.get("settings", {}))
        return Ledger(self.url, fp, self.storage_options).scenes()

    def _store_ids(self) -> Iterator[str]:
        """Scene ids of every ``*.ome.zarr`` below the root (never descends into a store)."""
        fs, root = listed_root(self.url, self.storage_options)
        stack = [root]
        while stack:
            path = stack.pop()
            try:
                entries = fs.ls(path, detail=True)
            except FileNotFoundError:
                continue
            for e in entries:
                name = e["name"].rstrip("/")
                base = name.rsplit("/", 1)[-1]
                if e.get("type") != "directory" or name == path or base.startswith("."):
                    continue
                if path == root and base == HGN_DIR:
                    continue
                if base.endswith(STORE_SUFFIX):
                    yield name[len(root) + 1 : -len(STORE_SUFFIX)]
                else:
                    stack.append(name)

    def scene_ids(self) -> list[str]:
        """Ids of every scene with an output store, sorted (a listing; no store is opened)."""
        return sorted(self._store_ids())

    def _check_root(self) -> None:
        """OutputNotFoundError unless the root exists and holds a run's output."""
        fs, root = listed_root(self.url, self.storage_options)
        if not fs.exists(root):
            raise OutputNotFoundError(
                f"output {self.url} does not exist: check --output (the folder or "
                "s3://bucket/prefix given to `hgn-pipeline run --output`)"
            )

    def list_scenes(self) -> list[SceneSummary]:
        """Every scene with an output store or a ledger record, sorted by id."""
        self._check_root()
        records = self._ledger_records()
        ids = set(self._store_ids())
        if not ids and not records and not HgnStore(self.url, self.storage_options).list(""):
            raise OutputNotFoundError(
                f"output {self.url} holds no hgn-pipeline output (no *.ome.zarr store and no "
                f"{HGN_DIR}/ folder): check --output"
            )

        def one(sid: str) -> SceneSummary:
            rec = records.get(sid)
            base: dict[str, Any] = {"scene_id": sid, "store": None, "status": "missing"}
            if rec is not None:
                base.update(status=rec.state, input_fingerprint=rec.input_fingerprint,
                            run_id=rec.run_id, error=rec.info.get("error"))
            if sid not in ids:
                return SceneSummary(**base)
            view = self.scene(sid)
            hgn = view.hgn
            return SceneSummary(**{
                **base,
                "status": rec.state if rec is not None else hgn.get("status", "incomplete"),
                "store": view.url, "height": view.height, "width": view.width,
                "levels": view.levels, "arch": hgn.get("arch"),
                "checkpoint_sha256": hgn.get("checkpoint_sha256"),
                "input_url": hgn.get("input_url"),
                "input_fingerprint": base.get("input_fingerprint") or hgn.get("input_fingerprint"),
                "run_id": hgn.get("run_id") or base.get("run_id"),
                "finished": hgn.get("finished"), "georeferenced": view.georef is not None,
            })

        with ThreadPoolExecutor(READ_WORKERS) as pool:
            return list(pool.map(one, sorted(ids | set(records))))

    def scene(self, scene_id: str) -> SceneView:
        """Open one scene's store; :class:`SceneNotFoundError` lists close ids."""
        try:
            writer = SceneWriter.open(self.url, scene_id, storage_options=self.storage_options)
        except OutputNotFoundError:
            self._check_root()
            known = sorted(self._store_ids())
            import difflib

            close = difflib.get_close_matches(scene_id, known, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise SceneNotFoundError(
                f"scene {scene_id!r} has no output under {self.url} ({len(known)} scenes there"
                f"{hint}); list them with `hgn-pipeline query scenes --output {self.url}`"
            ) from None
        return SceneView(writer, self.storage_options)

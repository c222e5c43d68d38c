"""Run manifest (JSON at ``<output>/_hgn/manifest-<run_id>.json``) and the final summary.

The manifest is the run's record: every scene with its status (``ok`` / ``failed``), the error
that failed it, unit counts, class areas, output location and time per stage; plus the run's
settings (credentials masked), the model, the executor and throughput. Scenes the catalog could
not read appear as ``failed`` with the catalog's reason; every other file under the archive
that is not a scene is listed once under ``skipped`` with its reason.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline.errors import PERMANENT
from pipeline.storage import get_fs, join_url, strip_protocol

__all__ = [
    "MANIFEST_DIR",
    "RunManifest",
    "SceneReport",
    "manifest_url",
    "read_manifest",
    "render_summary",
    "write_manifest",
]

MANIFEST_DIR = "_hgn"
STAGES = ("read", "infer", "write", "finalize")


@dataclass
class SceneReport:
    """One scene's line in the manifest. Stage times are worker-seconds summed over units."""

    scene_id: str
    url: str
    status: str = "pending"  # pending -> ok | failed
    error: str | None = None
    error_kind: str | None = None  # "transient" (a rerun may succeed) | "permanent"
    shape: tuple[int, int, int] | None = None
    dtype: str | None = None
    bands: list[int] | None = None  # bands read (0-based, in model order); None: all as stored
    output: str | None = None
    units_total: int = 0
    units_done: int = 0
    units_resumed: int = 0  # skipped because the ledger had them done
    units_nodata: int = 0  # written as label 0 without inference: every pixel was nodata
    pixels: int = 0
    io_retries: int = 0  # reads/writes the pipeline retried (see pipeline.retries)
    storage_retries: int = 0  # requests the S3 client retried
    class_pixels: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    # Change map against the scene's previous labels (pipeline.ops.publish): against, summary,
    # matrix (from -> to pixels and m2), or error; None when the scene had no earlier labels
    change: dict[str, Any] | None = None

    def fail(self, error: str, kind: str | None = None) -> None:
        """Mark failed; the first error is the one kept (later ones are consequences)."""
        if self.status != "failed":
            self.status, self.error, self.error_kind = "failed", error, kind or PERMANENT


@dataclass
class RunManifest:
    """Everything about one run; ``to_dict`` is the JSON written next to the outputs."""

    run_id: str
    input_url: str
    output_url: str
    started: str
    finished: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    # kind, workers, gpu_ids, actors: [{actor_id, node_id, gpu_ids, pid, state, started,
    # stopped, units, batches, busy_s, alive_s, busy_fraction, joined, reason}], joined, lost,
    # units_redone, busy_fraction (see pipeline.execute.ActorStats)
    executor: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)  # wall seconds per driver stage
    scenes: list[SceneReport] = field(default_factory=list)
    # Files under the archive that are not scenes: {"path", "url", "reason"} each
    skipped: list[dict[str, str]] = field(default_factory=list)
    package_version: str = ""
    error: str | None = None  # set when the run itself broke (e.g. every model actor died)
    # Retries in the driver (catalog, ledger, lock, manifest): {"io": n, "storage": n}
    driver_retries: dict[str, int] = field(default_factory=dict)
    catalog: str | None = None  # the STAC catalog this run updated (or why it could not)

    @property
    def ok(self) -> list[SceneReport]:
        return [s for s in self.scenes if s.status == "ok"]

    @property
    def failed(self) -> list[SceneReport]:
        return [s for s in self.scenes if s.status != "ok"]

    @property
    def output_pixels(self) -> int:
        return sum(s.pixels for s in self.scenes)

    def mpx_per_s(self, stage: str = "total") -> float:
        """Output megapixels written per wall second of ``stage`` ("total" or "execute")."""
        seconds = self.stages.get(f"{stage}_s", 0.0)
        return self.output_pixels / 1e6 / seconds if seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = {
            "scenes_ok": len(self.ok),
            "scenes_failed": len(self.failed),
            "files_skipped": len(self.skipped),
            "units_nodata": sum(s.units_nodata for s in self.scenes),
            "output_mpx": round(self.output_pixels / 1e6, 3),
            "mpx_per_s": round(self.mpx_per_s("total"), 3),
            "mpx_per_s_execute": round(self.mpx_per_s("execute"), 3),
            "io_retries": sum(s.io_retries for s in self.scenes)
            + self.driver_retries.get("io", 0),
            "storage_retries": sum(s.storage_retries for s in self.scenes)
            + self.driver_retries.get("storage", 0),
        }
        return d


def manifest_url(output_url: str, run_id: str) -> str:
    return join_url(output_url, MANIFEST_DIR, f"manifest-{run_id}.json")


def write_manifest(manifest: RunManifest, storage_options: dict[str, Any] | None = None) -> str:
    """Write the manifest JSON under the output root; returns its URL."""
    url = manifest_url(manifest.output_url, manifest.run_id)
    fs = get_fs(manifest.output_url, storage_options)
    path = strip_protocol(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, json.dumps(manifest.to_dict(), indent=2, default=str).encode())
    return url


def read_manifest(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    fs = get_fs(url, storage_options)
    return json.loads(fs.cat_file(strip_protocol(url)))


def render_summary(manifest: RunManifest, console: Console | None = None) -> None:
    """Print the per-scene table and the totals (scenes ok/failed, Mpx/s, time per stage)."""
    console = console or Console()
    table = Table(title=f"run {manifest.run_id} (stage times in worker-seconds)")
    table.add_column("scene", overflow="fold", min_width=16)
    for col in ("status", "size", "units", "read", "infer", "write", "final"):
        table.add_column(col, justify="left" if col == "status" else "right", no_wrap=True)
    for s in manifest.scenes:
        size = f"{s.shape[1]}x{s.shape[2]}" if s.shape else "-"
        status = "[green]ok[/]" if s.status == "ok" else f"[red]{s.status}[/]"
        t = s.timings
        table.add_row(
            s.scene_id,
            status,
            size,
            f"{s.units_done + s.units_resumed}/{s.units_total}",
            *(f"{t.get(k, 0.0):.1f}" for k in STAGES),
        )
    console.print(table)
    for s in manifest.failed:
        console.print(f"[red]failed[/] {s.scene_id}: {s.error}", highlight=False)
    for f in manifest.skipped:
        console.print(f"[yellow]skipped[/] {f['path']}: {f['reason']}", highlight=False,
                      soft_wrap=True)
    nodata = sum(s.units_nodata for s in manifest.scenes)
    if nodata:
        console.print(f"{nodata} windows were all nodata: written as label 0 without "
                      "inference", highlight=False)
    stages = ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in manifest.stages.items())
    console.print(
        f"scenes ok {len(manifest.ok)}, failed {len(manifest.failed)}, files skipped "
        f"{len(manifest.skipped)}; {manifest.output_pixels / 1e6:.1f} Mpx at "
        f"{manifest.mpx_per_s('total'):.2f} Mpx/s "
        f"end to end ({manifest.mpx_per_s('execute'):.2f} Mpx/s while executing); {stages}",
        highlight=False,
    )
    actors = manifest.executor.get("actors", [])
    if actors:
        console.print(_actors_line(manifest.executor), highlight=False, soft_wrap=True)
    io = sum(s.io_retries for s in manifest.scenes) + manifest.driver_retries.get("io", 0)
    client = sum(s.storage_retries for s in manifest.scenes)
    client += manifest.driver_retries.get("storage", 0)
    if io or client:  # a flaky store is worth a line; a healthy one is not
        console.print(
            f"storage retries: {io} by the pipeline (io_retries), {client} inside the S3 client",
            highlight=False,
        )


def _actors_line(ex: dict[str, Any]) -> str:
    """'actors: 4 ran on 3 nodes (2 joined during the run, 1 lost; 6 units redone), ...'"""
    actors = ex["actors"]
    nodes = len({a["node_id"] for a in actors})
    extra = [f"{ex['joined']} joined during the run"] if ex.get("joined") else []
    if ex.get("lost"):
        extra.append(f"{ex['lost']} lost; {ex.get('units_redone', 0)} units redone")
    more = f" ({', '.join(extra)})" if extra else ""
    per = ", ".join(f"{a['units']}" for a in actors)
    return (
        f"actors: {len(actors)} ran on {nodes} node(s){more}; units per actor {per}; "
        f"busy {ex.get('busy_fraction', 0.0):.0%} of their time in the model"
    )

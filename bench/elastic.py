"""Elastic pool benchmark on a fake multi-node cluster: nodes join, a node dies.

    python bench/elastic.py [--scenes 4] [--size 1024] [--delay 0.25]

``ray.cluster_utils.Cluster``: a head with 0 CPUs and nodes of 1 CPU + 1 logical GPU, all on
this machine, like a GPU cluster whose autoscaler adds and removes workers. The model is a
stand-in that sleeps ``--delay`` seconds per batch and takes no CPU, so the figures measure
the pool (scheduling, joining, healing), not this machine's two cores.

- ``growth``: the run starts on 1 node with ``max_actors=4`` (3 actors pending as demand);
  a 2nd node joins after 15 % of the units, a 3rd and 4th after 40 %. Per actor: units,
  busy fraction (time in the model / time alive), seconds from its node joining to its
  actor's first finished unit.
- ``loss``: 2 nodes; a clean run, then the same run with one node removed after 40 % of
  the units. Seconds until the loss is seen, seconds until every batch that was in flight on
  the lost node is written by the other, units redone, wall time vs the clean run, and
  whether the output is bit-identical to the clean run.

JSON on stdout and in bench/results/elastic.json. No assertions.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

CHUNK, HALO, BATCH = 128, 16, 2
CLASSES = [("background", (0, 0, 0, 0)), ("a", (255, 0, 0, 255)), ("b", (0, 255, 0, 255)),
           ("c", (0, 0, 255, 255))]


class SleepSegmenter:
    """Predictor stand-in: sleeps, then labels = top 2 bits of band 0 (deterministic)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.in_channels, self.num_classes, self.device = 3, len(CLASSES), "cpu"
        self.config = SimpleNamespace(
            arch="sleep-standin", sha256="1" * 64, in_channels=3, num_classes=len(CLASSES),
            classes=[SimpleNamespace(name=n, color=c) for n, c in CLASSES],
        )

    def predict(self, images, return_confidence=False, value_max=None, valid_mask=None, **kw):
        time.sleep(self.delay_s)
        labels = (images[:, 0] >> 6).astype(np.uint8)
        conf = np.full(labels.shape, 200, np.uint8)
        if valid_mask is not None:
            labels[~valid_mask], conf[~valid_mask] = 0, 0
        return SimpleNamespace(labels=labels, confidence=conf if return_confidence else None)


class SleepLoader:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def __call__(self, device: str = "auto", threads: int | None = None) -> SleepSegmenter:
        return SleepSegmenter(self.delay_s)


class Timeline:
    """Wraps an executor: timestamps every result (actor, first unit) and every pool event."""

    def __init__(self, ex: Any) -> None:
        self.ex = ex
        self.results: list[tuple[float, str, int, str | None]] = []
        self.events: list[tuple[float, str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ex, name)

    @property
    def listener(self) -> Any:
        return self.ex.listener

    @listener.setter
    def listener(self, fn: Any) -> None:
        def record(event: Any) -> None:
            self.events.append((time.monotonic(), event.kind, event.actor_id))
            if fn is not None:
                fn(event)

        self.ex.listener = record if fn is not None else None

    def map(self, batches: Any) -> Any:
        for r in self.ex.map(batches):
            key = r.done[0].unit_id if r.done else (r.failed_units[0] if r.failed_units else None)
            self.results.append((time.monotonic(), r.actor, len(r.done), key))
            yield r

    def units(self) -> int:
        return sum(n for _, _, n, _ in self.results)


def build_archive(root: Path, scenes: int, size: int) -> None:
    import zarr

    rng = np.random.default_rng(11)
    for k in range(scenes):
        g = zarr.open_group(str(root / f"s{k}.zarr"), mode="w")
        a = g.create_array("image", shape=(3, size, size), dtype="uint8",
                           chunks=(3, 256, 256))
        a[...] = rng.integers(0, 256, (3, size, size), dtype=np.uint8)


def _cfg(**kw: Any) -> Any:
    from pipeline.config import load_config

    base = dict(chunk=CHUNK, halo=HALO, batch_size=BATCH, checkpoint="unused-standin",
                overwrite=True, use_gpu=True, actor_start_timeout_s=120)
    return load_config(overrides={**base, **kw})


def _run_while(fn: Any, steps: list[tuple[float, Any]], tl: Timeline, total: int) -> Any:
    """Run ``fn`` in a thread; at each (fraction of units done, action) call the action."""
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.update(res=fn()), daemon=True)
    t.start()
    for fraction, action in steps:
        while t.is_alive() and tl.units() < fraction * total:
            time.sleep(0.02)
        action()
    t.join()
    return box["res"]


def _levels(out: Path) -> list[np.ndarray]:
    from pipeline.io.omezarr import SceneWriter

    arrays = []
    for store in sorted(out.glob("*.ome.zarr")):
        w = SceneWriter.open(str(out), store.name.removesuffix(".ome.zarr"))
        arrays += [w.read_level(0), w.read_level(0, "confidence")]
    return arrays


def growth(cluster: Any, archive: Path, out: Path, delay: float, total: int) -> dict:
    from pipeline.execute import RayExecutor
    from pipeline.run import run_pipeline

    joined_at: dict[str, float] = {}
    node_up: list[float] = []
    first = cluster.add_node(num_cpus=1, num_gpus=1)
    cfg = _cfg(max_actors=4)
    with RayExecutor.from_config(cfg, SleepLoader(delay)) as ex:
        tl = Timeline(ex)
        t0 = time.monotonic()
        joined_at[first.node_id] = t0

        def join(n: int) -> None:
            for _ in range(n):
                t = time.monotonic()
                node = cluster.add_node(num_cpus=1, num_gpus=1)
                joined_at[node.node_id] = time.monotonic()  # the node is up and registered
                node_up.append(round(joined_at[node.node_id] - t, 2))

        res = _run_while(lambda: run_pipeline(str(archive), str(out), cfg, executor=tl),
                         [(0.15, lambda: join(1)), (0.40, lambda: join(2))], tl, total)
        wall = time.monotonic() - t0
    actors = []
    for a in res.manifest.executor["actors"]:
        firsts = [t for t, actor, n, _ in tl.results if actor == a["actor_id"] and n]
        join_t = joined_at.get(a["node_id"])
        actors.append({
            "node": a["node_id"][:12], "units": a["units"], "busy_fraction": a["busy_fraction"],
            "alive_s": a["alive_s"], "joined_mid_run": a["joined"],
            "node_join_to_first_unit_s": (round(min(firsts) - join_t, 2)
                                          if firsts and join_t is not None else None),
        })
    return {"ok": res.ok, "wall_s": round(wall, 2), "units": total, "nodes": len(joined_at),
            "node_start_s": node_up, "actors": actors,
            "executor_busy_fraction": res.manifest.executor["busy_fraction"]}


def loss(cluster: Any, archive: Path, base: Path, delay: float, total: int) -> dict:
    from pipeline.execute import RayExecutor
    from pipeline.run import run_pipeline

    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cfg = _cfg()
    with RayExecutor.from_config(cfg, SleepLoader(delay)) as ex:
        t = time.monotonic()
        clean = run_pipeline(str(archive), str(base / "clean"), cfg, executor=ex)
        clean_wall = time.monotonic() - t
    with RayExecutor.from_config(cfg, SleepLoader(delay)) as ex:
        tl = Timeline(ex)
        victim = next(w for w in ex.workers if w.node == nodes[1].node_id)
        removed: dict[str, float] = {}

        def remove() -> None:
            removed["t"], removed["units"] = time.monotonic(), tl.units()
            cluster.remove_node(nodes[1])

        t = time.monotonic()
        res = _run_while(lambda: run_pipeline(str(archive), str(base / "loss"), cfg,
                                              executor=tl), [(0.40, remove)], tl, total)
        wall = time.monotonic() - t
        redone = ex.redone_batches()
    seen = [t for t, kind, _ in tl.events if kind == "lost"]
    redone_done = [t for t, _, n, key in tl.results if key in redone and n]
    # With one actor left, the ideal: the units done at the loss, then one actor's clean rate.
    rate_one = total / clean_wall / 2
    ideal = (removed["t"] - t) + (total - removed["units"]) / rate_one
    identical = all(np.array_equal(a, b) for a, b in zip(
        _levels(base / "loss"), _levels(base / "clean"), strict=True))
    return {
        "ok": clean.ok and res.ok,
        "lost_actor_pid": victim.pid,
        "loss_seen_after_s": round(seen[0] - removed["t"], 3) if seen else None,
        "recovered_after_s": (round(max(redone_done) - removed["t"], 2)
                              if redone_done else None),
        "units_redone": res.manifest.executor["units_redone"],
        "batches_redone": len(redone),
        "wall_clean_s": round(clean_wall, 2),
        "wall_with_loss_s": round(wall, 2),
        "wall_loss_over_clean": round(wall / clean_wall, 3),
        "wall_loss_over_ideal_one_actor_left": round(wall / ideal, 3),
        "bit_identical_to_clean": identical,
        "units_per_actor": [a["units"] for a in res.manifest.executor["actors"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--delay", type=float, default=0.25, help="stand-in seconds per batch")
    ap.add_argument("--work", type=Path, default=REPO / "bench" / ".work" / "elastic")
    args = ap.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    archive = args.work / "archive"
    if not archive.exists():
        build_archive(archive, args.scenes, args.size)
    per_side = -(-args.size // CHUNK)
    total = args.scenes * per_side * per_side
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        out: dict[str, Any] = {
            "config": {"scenes": args.scenes, "size": args.size, "chunk": CHUNK,
                       "batch_size": BATCH, "units": total, "delay_s_per_batch": args.delay,
                       "node": "1 CPU + 1 logical GPU", "machine": platform.machine(),
                       "ray": ray.__version__},
            "growth": growth(cluster, archive, args.work / "growth", args.delay, total),
        }
        for node in list(cluster.worker_nodes):
            cluster.remove_node(node)
        out["loss"] = loss(cluster, archive, args.work, args.delay, total)
    finally:
        ray.shutdown()
        cluster.shutdown()
    text = json.dumps(out, indent=1)
    print(text)
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "elastic.json").write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Scaling benchmark: the same pipeline on a 1x, 2x and 4x archive, side by side in one run.

    python bench/scaling.py [--scenes 2] [--size 2048] [--factors 1,2,4] [--cpus 2]

Each archive size runs in a fresh process with its own private local Ray (``ray_session``)
and a pool of model actors started before the clock starts, so ``wall_s`` is the pipeline
itself (catalog, plan, reads, inference, writes, pyramids, manifest). While it runs, a
sampler reads /proc every 0.2 s and keeps the peak RSS of three roles, each summed over its
processes at every sample: the driver, the model actors, and the other Ray processes (GCS,
raylet, dashboard head, idle workers). Results: JSON on stdout and in
``bench/results/scaling.json``, with ratios against 1x and the issue's targets (wall time 4x
over 1x <= 4.4, peak RSS 4x over 1x <= 1.2) stated as met or missed. No assertions.

``bench/pipeline.py`` measures 1x and 4x inside its wider comparison; this script adds 2x
and splits memory by role, which is what shows whether anything grows with the archive.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# bench/ must not shadow the `pipeline` package (here and in Ray workers, which inherit
# sys.path): put the repository root first and drop this script's folder.
sys.path[:] = [str(REPO)] + [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent
]
from bench._proc import descendants as _descendants  # noqa: E402
from bench._proc import rss_kib as _rss_kib  # noqa: E402
from bench.pipeline import build_archive  # noqa: E402  (one archive recipe for both)

CHUNK, HALO = 1024, 128  # as bench/pipeline.py: 4 windows per 2048^2 scene
SAMPLE_S = 0.2
TARGET_WALL_4X, TARGET_RSS_4X = 4.4, 1.2


# ------------------------------------------------------------------------------ memory






class RolePeaks:
    """Peak RSS (MiB) per role: driver, model actors, other Ray processes."""

    def __init__(self, actor_pids: set[int]) -> None:
        self.actor_pids = actor_pids
        self.peak_kib = {"driver": 0, "actors": 0, "ray_other": 0, "total": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            now = {"driver": _rss_kib(me), "actors": 0, "ray_other": 0}
            for pid in _descendants(me):
                now["actors" if pid in self.actor_pids else "ray_other"] += _rss_kib(pid)
            now["total"] = sum(now.values())
            for k, v in now.items():
                self.peak_kib[k] = max(self.peak_kib[k], v)
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> RolePeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mib(self) -> dict[str, float]:
        return {f"peak_rss_{k}_mib": round(v / 1024, 1) for k, v in self.peak_kib.items()}


# ------------------------------------------------------------------------------ parts


def measure(archive: Path, out: Path, checkpoint: str, cpus: int) -> dict[str, Any]:
    """One archive size in this process: private Ray, actor pool, ``run_pipeline``."""
    from pipeline.config import load_config
    from pipeline.execute import RayExecutor, ray_session
    from pipeline.run import run_pipeline

    cfg = load_config(overrides=dict(chunk=CHUNK, halo=HALO, batch_size=1, overwrite=True,
                                     checkpoint=checkpoint, io_retries=1))
    with (
        ray_session(None, num_cpus=cpus),
        RayExecutor.from_config(cfg) as ex,
        RolePeaks({w.pid for w in ex.workers}) as mem,
    ):
        t = time.perf_counter()
        res = run_pipeline(str(archive), str(out), cfg, executor=ex)
        wall = time.perf_counter() - t
    m = res.manifest
    return {
        "scenes": len(m.scenes),
        "scenes_ok": len(m.ok),
        "actors": len(res.workers),
        "output_mpx": round(m.output_pixels / 1e6, 3),
        "wall_s": round(wall, 3),
        "mpx_s": round(m.output_pixels / 1e6 / wall, 4),
        **mem.mib(),
        "stages_s": {k: round(v, 3) for k, v in m.stages.items()},
    }


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    with contextlib.suppress(OSError, IndexError, ValueError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenes", type=int, default=2, help="scenes in the 1x archive")
    ap.add_argument("--size", type=int, default=2048, help="scene side (px)")
    ap.add_argument("--factors", default="1,2,4", help="archive sizes, multiples of 1x")
    ap.add_argument("--checkpoint", default=None, help="default: the shipped hgn checkpoint")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-scaling")
    ap.add_argument("--result", type=Path, default=REPO / "bench" / "results" / "scaling.json")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child: this archive
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.measure:  # child process: one measurement, JSON on the last stdout line
        print(json.dumps(measure(args.measure, args.out, args.checkpoint, args.cpus)))
        return 0

    if args.checkpoint is None:
        from hgn_model.checkpoint import shipped_checkpoint

        args.checkpoint = str(shipped_checkpoint("hgn"))
    factors = [int(f) for f in args.factors.split(",")]
    res: dict[str, Any] = {
        "machine": _machine(),
        "config": {"scenes_1x": args.scenes, "size": args.size, "chunk": CHUNK, "halo": HALO,
                   "cpus": args.cpus, "checkpoint": args.checkpoint, "factors": factors},
        "runs": {},
    }
    for f in factors:
        print(f"building the {f}x archive ...", file=sys.stderr, flush=True)
        archive = build_archive(args.work / f"archive-{f}x", f * args.scenes, args.size)
        print(f"  running {f}x ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--measure", str(archive), "--out",
               str(args.work / f"out-{f}x"), "--checkpoint", args.checkpoint,
               "--cpus", str(args.cpus)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        res["runs"][f"{f}x"] = (json.loads(proc.stdout.strip().splitlines()[-1])
                                if proc.returncode == 0 else {"error": proc.stderr[-2000:]})

    base = res["runs"].get("1x", {})
    ratios: dict[str, Any] = {}
    for f in factors[1:] if factors and factors[0] == 1 else []:
        run = res["runs"][f"{f}x"]
        for key in ("wall_s", "peak_rss_driver_mib", "peak_rss_actors_mib",
                    "peak_rss_total_mib"):
            a, b = run.get(key), base.get(key)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
                ratios[f"{key.removesuffix('_mib').removesuffix('_s')}_{f}x_over_1x"] = round(
                    a / b, 3)
    res["ratios"] = ratios
    targets = {}
    if "wall_4x_over_1x" in ratios:
        targets["wall_4x_over_1x <= 4.4"] = ratios["wall_4x_over_1x"] <= TARGET_WALL_4X
    if "peak_rss_total_4x_over_1x" in ratios:
        targets["peak_rss_total_4x_over_1x <= 1.2"] = (
            ratios["peak_rss_total_4x_over_1x"] <= TARGET_RSS_4X)
    res["targets_met"] = targets
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    print("\nratios:", file=sys.stderr)
    for k, v in ratios.items():
        print(f"  {k:34s} {v}", file=sys.stderr)
    for k, ok in targets.items():
        print(f"  target {k}: {'met' if ok else 'MISSED'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

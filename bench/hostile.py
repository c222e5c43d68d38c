"""Costs that issue 12 changed, each measured side by side in one run (ratios, no assertions).

    python bench/hostile.py [--scenes 40] [--strip 100000] [--repeats 2]

- ``dryrun``: an archive of ``--scenes`` tiny scenes (64 x 64): the ``--dry-run`` estimate
  without the per-scene overhead (inference only, what it printed before), with it, and the
  wall time of the real ``run --local`` (same process, same model) -> ratios estimate/actual.
- ``strip``: a 7 x ``--strip`` scene, default chunk/halo, the shipped HGN: model-input pixels
  and wall time of ``run --local`` with the windows padded as today (clipped to the scene,
  the model pads to its size divisor) vs the old full-halo reflection (the same run with the
  halo reflected beyond the scene, as ``pipeline.plan`` did before).

Each comparison alternates its two sides ``--repeats`` times and reports medians, so both see
the same machine load (this machine is shared; single runs vary 3x). JSON on stdout and in
``bench/results/hostile.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO), str(REPO / "tests")] + [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent
]


def _run_local(archive: Path, out: Path, cfg: Any) -> tuple[float, float]:
    """(wall s, model s) of a fresh resumable run into ``out``, model load included."""
    import shutil

    from pipeline.execute import LocalExecutor
    from pipeline.run.resume import run_resumable

    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    with LocalExecutor(cfg.checkpoint, threads=cfg.threads_per_actor) as ex:
        res = run_resumable(str(archive), str(out), cfg, executor=ex)
    assert res.run is not None and res.run.ok
    infer = sum(s.timings["infer"] for s in res.run.manifest.scenes)
    return time.perf_counter() - t, infer


def bench_dryrun(base: Path, scenes: int, repeats: int) -> dict[str, Any]:
    from _standin import smooth_image, write_zarr_scene

    from pipeline.config import load_config
    from pipeline.run.dryrun import dry_run

    archive = base / "tiny"
    for i in range(scenes):
        write_zarr_scene(archive, f"s{i:03d}", smooth_image(i, 3, 64, 64))
    cfg = load_config(overrides={"threads_per_actor": 2})
    runs = []
    for _ in range(repeats):
        d = dry_run(str(archive), cfg, workers=1)
        runs.append((d, _run_local(archive, base / "tiny-out", cfg)[0]))
    est_only = statistics.median(d.inference_s or 0 for d, _ in runs)
    est = statistics.median(d.estimated_s or 0 for d, _ in runs)
    actual = statistics.median(a for _, a in runs)
    return {
        "scenes": scenes, "per_scene_s": round(statistics.median(
            d.per_scene_s or 0 for d, _ in runs), 4),
        "estimate_inference_only_s": round(est_only, 2),
        "estimate_with_overhead_s": round(est, 2), "actual_s": round(actual, 2),
        "ratio_inference_only_over_actual": round(est_only / actual, 3),
        "ratio_with_overhead_over_actual": round(est / actual, 3),
        "ratios_per_repeat": [round((d.estimated_s or 0) / a, 3) for d, a in runs],
    }


def bench_strip(base: Path, length: int, repeats: int) -> dict[str, Any]:
    from _standin import smooth_image, write_zarr_scene

    import pipeline.plan as plan_mod
    from pipeline.config import load_config

    archive = base / "strip"
    write_zarr_scene(archive, "strip", smooth_image(3, 3, 7, length), chunks=2048)
    cfg = load_config(overrides={"threads_per_actor": 2})
    grid = plan_mod.plan_scene("strip", 7, length, chunk=cfg.chunk, halo=cfg.halo)
    unit = plan_mod.SceneGrid.unit

    def full_halo(self: Any, row: int, col: int) -> Any:  # the rule before issue 12
        u = unit(self, row, col)
        h = self.halo
        pad = plan_mod.Pad(h - (u.core.y0 - u.window.y0), h - (u.window.y1 - u.core.y1),
                           h - (u.core.x0 - u.window.x0), h - (u.window.x1 - u.core.x1))
        return plan_mod.WorkUnit(u.scene_id, u.row, u.col, u.core, u.window, pad, u.chunk)

    now, old = [], []
    old_px = 0
    for _ in range(repeats):
        now.append(_run_local(archive, base / "strip-now", cfg))
        plan_mod.SceneGrid.unit = full_halo  # type: ignore[method-assign]
        try:
            old_px = sum(u.input_shape[0] * u.input_shape[1] for u in grid)
            old.append(_run_local(archive, base / "strip-old", cfg))
        finally:
            plan_mod.SceneGrid.unit = unit  # type: ignore[method-assign]
    wall_now, wall_old = (statistics.median(w for w, _ in r) for r in (now, old))
    infer_now, infer_old = (statistics.median(i for _, i in r) for r in (now, old))
    return {
        "shape": [7, length], "windows": len(grid), "input_px_now": grid.input_pixels(),
        "input_px_full_halo": old_px, "wall_now_s": round(wall_now, 2),
        "wall_full_halo_s": round(wall_old, 2), "speedup_wall": round(wall_old / wall_now, 2),
        "model_now_s": round(infer_now, 2), "model_full_halo_s": round(infer_old, 2),
        "speedup_model": round(infer_old / infer_now, 2),
        "note": "model input before the model's own padding to its size divisor (128 for HGN)",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--strip", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="hgn-bench-hostile-") as tmp:
        base = Path(tmp)
        result = {
            "machine": f"{platform.machine()}, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads",
            "dryrun": bench_dryrun(base, args.scenes, args.repeats),
            "strip": bench_strip(base, args.strip, args.repeats),
        }
    text = json.dumps(result, indent=1)
    print(text)
    out = REPO / "bench" / "results" / "hostile.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()

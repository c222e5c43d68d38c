"""Costs that issue 12 changed, each measured side by side in one run (ratios, no assertions).

    python bench/hostile.py [--scenes 40] [--strip 100000]

- ``dryrun``: an archive of ``--scenes`` tiny scenes (64 x 64): the ``--dry-run`` estimate
  without the per-scene overhead (inference only, what it printed before), with it, and the
  wall time of the real ``run --local`` (same process, same model) -> ratios estimate/actual.
- ``strip``: a 7 x ``--strip`` scene, default chunk/halo, the shipped HGN: model-input pixels
  and wall time of ``run --local`` with the windows padded as today (clipped to the scene,
  the model pads to its size divisor) vs the old full-halo reflection (the same run with the
  halo reflected beyond the scene, as ``pipeline.plan`` did before), one after the other.

JSON on stdout and in ``bench/results/hostile.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO), str(REPO / "tests")] + [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent
]


def _run_local(archive: Path, out: Path, cfg: Any) -> float:
    from pipeline.execute import LocalExecutor
    from pipeline.resume import run_resumable

    t = time.perf_counter()
    with LocalExecutor(cfg.checkpoint, threads=cfg.threads_per_actor) as ex:
        res = run_resumable(str(archive), str(out), cfg, executor=ex)
    assert res.run is not None and res.run.ok
    return time.perf_counter() - t


def bench_dryrun(base: Path, scenes: int) -> dict[str, Any]:
    from _standin import smooth_image, write_zarr_scene

    from pipeline.config import load_config
    from pipeline.dryrun import dry_run

    archive = base / "tiny"
    for i in range(scenes):
        write_zarr_scene(archive, f"s{i:03d}", smooth_image(i, 3, 64, 64))
    cfg = load_config(overrides={"threads_per_actor": 2})
    d = dry_run(str(archive), cfg, workers=1)
    actual = _run_local(archive, base / "tiny-out", cfg)
    return {
        "scenes": scenes, "per_scene_s": round(d.per_scene_s or 0, 4),
        "estimate_inference_only_s": round(d.inference_s or 0, 2),
        "estimate_with_overhead_s": round(d.estimated_s or 0, 2), "actual_s": round(actual, 2),
        "ratio_inference_only_over_actual": round((d.inference_s or 0) / actual, 3),
        "ratio_with_overhead_over_actual": round((d.estimated_s or 0) / actual, 3),
    }


def bench_strip(base: Path, length: int) -> dict[str, Any]:
    from _standin import smooth_image, write_zarr_scene

    import pipeline.plan as plan_mod
    from pipeline.config import load_config

    archive = base / "strip"
    write_zarr_scene(archive, "strip", smooth_image(3, 3, 7, length), chunks=2048)
    cfg = load_config(overrides={"threads_per_actor": 2})
    grid = plan_mod.plan_scene("strip", 7, length, chunk=cfg.chunk, halo=cfg.halo)
    now_s = _run_local(archive, base / "strip-now", cfg)

    unit = plan_mod.SceneGrid.unit

    def full_halo(self: Any, row: int, col: int) -> Any:  # the rule before issue 12
        u = unit(self, row, col)
        h = self.halo
        pad = plan_mod.Pad(h - (u.core.y0 - u.window.y0), h - (u.window.y1 - u.core.y1),
                           h - (u.core.x0 - u.window.x0), h - (u.window.x1 - u.core.x1))
        return plan_mod.WorkUnit(u.scene_id, u.row, u.col, u.core, u.window, pad, u.chunk)

    plan_mod.SceneGrid.unit = full_halo  # type: ignore[method-assign]
    try:
        old_px = sum(u.input_shape[0] * u.input_shape[1] for u in grid)
        old_s = _run_local(archive, base / "strip-old", cfg)
    finally:
        plan_mod.SceneGrid.unit = unit  # type: ignore[method-assign]
    return {
        "shape": [7, length], "windows": len(grid), "input_px_now": grid.input_pixels(),
        "input_px_full_halo": old_px, "wall_now_s": round(now_s, 2),
        "wall_full_halo_s": round(old_s, 2), "speedup": round(old_s / now_s, 2),
        "note": "model input before the model's own padding to its size divisor (128 for HGN)",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--strip", type=int, default=100_000)
    args = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="hgn-bench-hostile-") as tmp:
        base = Path(tmp)
        result = {
            "machine": f"{platform.machine()}, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads",
            "dryrun": bench_dryrun(base, args.scenes),
            "strip": bench_strip(base, args.strip),
        }
    text = json.dumps(result, indent=1)
    print(text)
    out = REPO / "bench" / "results" / "hostile.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()

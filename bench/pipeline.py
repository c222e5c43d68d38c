"""Pipeline benchmark: the same synthetic archive through five ways of running the same job.

    python bench/pipeline.py [--scenes 2] [--size 2048] [--checkpoint PATH] [--cpus 2] [--repeat 1]

Parts (each in a fresh process, so memory figures are its own):
- ``reads``     window reads alone: SceneReader.read vs Dask graphs (dask-on-ray, threads).
- ``model``     model-only forward over the plan's windows, pre-loaded in memory: the limit.
- ``pipeline``  ``run_pipeline`` on a private local Ray (actor pool, reads/writes in actors),
                on the 1x archive and on a 4x archive (4x the scenes).
- ``dask``      the same pipeline with ``read_path: dask`` (windows as Dask graphs on Ray).
- ``naive``     a sequential tile loop in one process: read, pad, predict, crop, write.
- ``raydata``   Ray Data: read tasks -> ``map_batches`` actor pool (model) -> write tasks.

Throughput is output (core) megapixels per second. ``wall_s`` excludes starting Ray and
loading models; ``wall_incl_start_s`` includes them (Ray Data cannot separate them). Peak RSS
is the sum over the driver and every Ray worker process, sampled every 0.2 s from /proc
(Linux). Each part records the 1-minute load average before/after: on a shared machine use
``--repeat 3`` (best run per part). Results: JSON on stdout and in bench/results/pipeline.json.
No assertions. The parts themselves are in bench/_pipeline_parts.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This script is bench/pipeline.py: with bench/ on sys.path (python puts a script's folder
# first), `import pipeline` would import this file, here and in Ray workers (which inherit
# the driver's sys.path). Put the repository root first instead.
sys.path[:] = [str(REPO)] + [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent
]
from bench._pipeline_parts import CHUNK, HALO, PARTS, build_archive  # noqa: E402

DEFAULT_PARTS = "reads,model,pipeline,dask,naive,raydata,pipeline4x,overlap"


def _run_part(part: str, archive: Path, out: Path, checkpoint: str, cpus: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--part",
        part,
        "--archive",
        str(archive),
        "--out",
        str(out),
        "--checkpoint",
        checkpoint,
        "--cpus",
        str(cpus),
    ]
    print(f"  {part} on {archive.name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best(old: dict | None, new: dict) -> dict:
    """The faster of two runs of a part (a shared machine only ever slows a run down)."""
    if old is None or "error" in old:
        return new
    if "error" in new:
        return old
    key = (
        "wall_s" if "wall_s" in new else "wall_incl_start_s" if "wall_incl_start_s" in new else None
    )
    if key is None:  # reads: per-way rates, keep the higher of each
        return {k: max(v, old[k]) if k.endswith("_mpx_s") else v for k, v in new.items()}
    return new if new[key] < old[key] else old



def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenes", type=int, default=2, help="scenes in the 1x archive")
    ap.add_argument("--size", type=int, default=2048, help="scene side (px)")
    ap.add_argument("--checkpoint", default=None, help="default: the shipped hgn checkpoint")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-pipeline")
    ap.add_argument(
        "--parts", default=DEFAULT_PARTS,
        help="comma-separated; parts not run keep their result from the result file",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="rounds; the best run of each part counts"
    )
    ap.add_argument("--result", type=Path, default=REPO / "bench" / "results" / "pipeline.json")
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    ap.add_argument("--archive", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return ap


def _child(args: argparse.Namespace) -> int:
    """One measurement in this process, JSON on the last stdout line."""
    load = os.getloadavg()[0]
    result = PARTS[args.part](args.archive, args.out, args.checkpoint, args.cpus)
    # The machine may be shared: the 1-minute load average says how much.
    result["loadavg_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result, default=float))
    return 0


def _measure(args: argparse.Namespace) -> dict:
    """Every requested part, ``--repeat`` rounds, over the previous result file's figures."""
    if args.checkpoint is None:
        from hgn_model.checkpoint import shipped_checkpoint

        args.checkpoint = str(shipped_checkpoint("hgn"))
    print("building archives ...", file=sys.stderr, flush=True)
    a1 = build_archive(args.work / "archive-1x", args.scenes, args.size)
    parts = args.parts.split(",")
    a4 = (
        build_archive(args.work / "archive-4x", 4 * args.scenes, args.size)
        if ("pipeline4x" in parts)
        else None
    )
    # Parts not run this time keep their previous figures (e.g. --parts overlap alone).
    old = json.loads(args.result.read_text()) if args.result.exists() else {}
    res: dict = {
        **{k: v for k, v in old.items() if k in PARTS or k == "pipeline4x"},
        "config": {
            "repeat": args.repeat,
            "scenes_1x": args.scenes,
            "size": args.size,
            "chunk": CHUNK,
            "halo": HALO,
            "cpus": args.cpus,
            "checkpoint": args.checkpoint,
        }
    }
    for k in parts:
        res.pop(k, None)
    for _ in range(args.repeat):  # rounds over all parts, so load drifts hit every part alike
        for part in parts:
            archive = a4 if part == "pipeline4x" else a1
            name = "pipeline" if part == "pipeline4x" else part
            r = _run_part(name, archive, args.work / f"out-{part}", args.checkpoint, args.cpus)
            res[part] = _best(res.get(part), r)
    return res


def _ratios(res: dict) -> dict:
    """The side-by-side comparisons of the parts' figures (None where a part is missing)."""

    def get(part: str, key: str) -> float | None:
        v = res.get(part, {}).get(key)
        return float(v) if isinstance(v, (int, float)) else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    p_incl = get("pipeline", "wall_incl_start_s")
    ratios = {
        "pipeline_vs_model_mpx_s": ratio(get("pipeline", "mpx_s"), get("model", "mpx_s")),
        # 4x: the same per-run fixed costs (catalog, first reads, tail) over 4x the windows.
        "pipeline4x_vs_model_mpx_s": ratio(get("pipeline4x", "mpx_s"), get("model", "mpx_s")),
        "pipeline_vs_raydata_speed": ratio(get("raydata", "wall_incl_start_s"), p_incl),
        "pipeline_vs_naive_speed": ratio(get("naive", "wall_incl_start_s"), p_incl),
        "dask_reads_vs_actor_reads_speed": ratio(get("pipeline", "wall_s"), get("dask", "wall_s")),
        "read_only_dask_ray_vs_actor": ratio(
            get("reads", "dask-ray_mpx_s"), get("reads", "actor_mpx_s")
        ),
        "wall_4x_over_1x": ratio(get("pipeline4x", "wall_s"), get("pipeline", "wall_s")),
        "peak_rss_4x_over_1x": ratio(
            get("pipeline4x", "peak_rss_mib"), get("pipeline", "peak_rss_mib")
        ),
    }
    for where in ("local", "s3"):  # the overlap's gain and the model's busy fraction
        o = res.get("overlap", {}).get(where, {})
        if o:
            ratios[f"overlap_gain_{where}"] = o["wall_off_over_on"]
            for mode in ("on", "off"):
                runs = o[mode]
                ratios[f"busy_{mode}_{where}"] = max(r["busy_fraction"] for r in runs)
                ratios[f"busy_steady_{mode}_{where}"] = max(
                    r["busy_fraction_steady"] for r in runs)
    return ratios


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.part:  # child process: one measurement
        return _child(args)
    res = _measure(args)
    res["ratios"] = _ratios(res)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(res, indent=2, default=float) + "\n")
    print(json.dumps(res, indent=2, default=float))
    print("\nratios:", file=sys.stderr)
    for k, v in res["ratios"].items():
        print(f"  {k:34s} {v}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

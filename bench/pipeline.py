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
No assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# This script is bench/pipeline.py: with bench/ on sys.path (python puts a script's folder
# first), `import pipeline` would import this file, here and in Ray workers (which inherit
# the driver's sys.path). Put the repository root first instead.
sys.path[:] = [str(REPO)] + [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent
]
from bench._proc import descendants as _descendants  # noqa: E402
from bench._proc import rss_kib as _rss_kib  # noqa: E402

CHUNK, HALO = 1024, 128  # 4 windows per 2048^2 scene; multiples of 128 (model phase)
SAMPLE_S = 0.2


# ------------------------------------------------------------------------------ memory






class PeakRss:
    """Peak of (driver + Ray worker processes) RSS, sampled in a background thread."""

    def __init__(self, ray_workers: bool) -> None:
        self.ray_workers = ray_workers
        self.peak_kib = 0
        self.per_pid_kib: dict[int, int] = {}
        self._stop = threading.Event()
        self._raylet = None
        if ray_workers:
            import ray

            node = ray._private.worker._global_node
            self._raylet = node.all_processes["raylet"][0].process.pid
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def pids(self) -> list[int]:
        return [os.getpid()] + (_descendants(self._raylet) if self._raylet else [])

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = {p: _rss_kib(p) for p in self.pids()}
            self.peak_kib = max(self.peak_kib, sum(rss.values()))
            for p, v in rss.items():
                self.per_pid_kib[p] = max(self.per_pid_kib.get(p, 0), v)
            self._stop.wait(SAMPLE_S)

    def breakdown_mib(self, roles: dict[int, str]) -> dict[str, float]:
        """Peak MiB per role ("driver", "actor", others: "worker"), summed over processes."""
        out: dict[str, float] = {}
        for p, v in self.per_pid_kib.items():
            role = "driver" if p == os.getpid() else roles.get(p, "worker")
            out[role] = round(out.get(role, 0.0) + v / 1024, 1)
        return out

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return round(self.peak_kib / 1024, 1)


# ------------------------------------------------------------------------------ archive


def build_archive(root: Path, scenes: int, size: int) -> Path:
    """``scenes`` synthetic scenes of size x size (seeds 100..), reused when already there."""
    from hgn_model.data.synthetic import GENERATOR_VERSION, make_archive

    stamp = root / "bench-spec.json"
    spec = {"scenes": scenes, "size": size, "generator": GENERATOR_VERSION}
    if stamp.exists() and json.loads(stamp.read_text()) == spec:
        return root
    make_archive(root, seeds=range(100, 100 + scenes), sizes=(size, size), chunks=512)
    stamp.write_text(json.dumps(spec))
    return root


def _cfg(checkpoint: str, **kw):
    from pipeline.config import load_config

    return load_config(
        overrides=dict(
            chunk=CHUNK,
            halo=HALO,
            batch_size=1,
            overwrite=True,
            checkpoint=checkpoint,
            io_retries=1,
            **kw,
        )
    )


def _units(archive: Path):
    from pipeline.catalog import catalog
    from pipeline.plan import plan_archive

    cat = catalog(str(archive))
    return cat, plan_archive(cat.scenes, chunk=CHUNK, halo=HALO)


# ------------------------------------------------------------------------------ parts


def _model_inputs(archive: Path, share: int = 0, of: int = 1) -> tuple[list, Any]:
    from pipeline.io.readers import open_scene
    from pipeline.stitch import model_input

    cat, plan = _units(archive)
    infos = {s.scene_id: s for s in cat.scenes}
    units = list(plan.units())[share::of]
    read = [
        open_scene(infos[u.scene_id]).read(u.window.y0, u.window.y1, u.window.x0, u.window.x1)
        for u in units
    ]
    return [model_input(w, u) for w, u in zip(read, units, strict=True)], plan


def _forward_share(args: tuple) -> tuple[float, float]:
    """Worker process: its share of the windows, 1 torch thread; (start, end) wall clock."""
    archive, checkpoint, share, of, barrier = args
    from hgn_model import Segmenter

    seg = Segmenter.from_checkpoint(checkpoint, threads=1)
    inputs, _ = _model_inputs(Path(archive), share, of)
    seg.predict(inputs[0])  # warm-up
    barrier.wait()  # start together
    t0 = time.time()
    for x in inputs:
        seg.predict(x, return_confidence=True)
    return t0, time.time()


def part_model(archive: Path, out: Path, checkpoint: str, cpus: int) -> dict:
    """Forward passes only, over the plan's padded windows held in memory: the limit.

    Two ways to use the cores, the better one counts: one process with ``cpus`` torch threads,
    and ``cpus`` processes with one thread each over a share of the windows (the pipeline's
    layout; on a shared machine single-threaded processes often fare better).
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from hgn_model import Segmenter

    seg = Segmenter.from_checkpoint(checkpoint, threads=cpus)
    inputs, plan = _model_inputs(archive)
    seg.predict(inputs[0])  # warm-up (oneDNN kernel selection)
    with PeakRss(ray_workers=False) as mem:
        t = time.perf_counter()
        for x in inputs:
            seg.predict(x, return_confidence=True)
        threads_wall = time.perf_counter() - t
    del seg, inputs
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(cpus, mp_context=ctx) as pool:
        barrier = manager.Barrier(cpus)
        spans = list(
            pool.map(
                _forward_share, [(str(archive), checkpoint, i, cpus, barrier) for i in range(cpus)]
            )
        )
    procs_wall = max(e for _, e in spans) - min(s for s, _ in spans)
    wall = min(threads_wall, procs_wall)
    s = plan.summary()
    return {
        "wall_s": wall,
        "mpx_s": s.output_pixels / 1e6 / wall,
        "input_mpx_s": s.input_pixels / 1e6 / wall,
        "one_process_threads_wall_s": threads_wall,
        "processes_1_thread_wall_s": procs_wall,
        "peak_rss_mib": mem.peak_mib,
    }


def part_pipeline(
    archive: Path, out: Path, checkpoint: str, cpus: int, read_path: str = "actor"
) -> dict:
    from pipeline.execute import RayExecutor, ray_session
    from pipeline.run import run_pipeline

    t0 = time.perf_counter()
    with ray_session(None, num_cpus=cpus):
        cfg = _cfg(checkpoint, read_path=read_path)
        ex = RayExecutor.from_config(cfg)
        ex.start()
        start = time.perf_counter() - t0
        with PeakRss(ray_workers=True) as mem:
            t = time.perf_counter()
            res = run_pipeline(str(archive), str(out), cfg, executor=ex)
            wall = time.perf_counter() - t
        ex.close()
    m = res.manifest
    return {
        "wall_s": wall,
        "wall_incl_start_s": wall + start,
        "mpx_s": m.output_pixels / 1e6 / wall,
        "actors": len(res.workers),
        "busy_fraction": m.executor.get("busy_fraction"),
        "scenes_ok": len(m.ok),
        "peak_rss_mib": mem.peak_mib,
        "peak_rss_by_role_mib": mem.breakdown_mib({w.pid: "actor" for w in res.workers}),
        "stages": m.stages,
    }


def part_dask(archive: Path, out: Path, checkpoint: str, cpus: int) -> dict:
    return part_pipeline(archive, out, checkpoint, cpus, read_path="dask")


def part_naive(archive: Path, out: Path, checkpoint: str, cpus: int) -> dict:
    """The loop everyone writes first: one process, one window at a time."""
    from hgn_model import Segmenter
    from pipeline.io.omezarr import SceneWriter
    from pipeline.io.readers import open_scene
    from pipeline.plan import plan_scene
    from pipeline.stitch import crop_core, reflect_pad

    cat, _ = _units(archive)
    with PeakRss(ray_workers=False) as mem:
        t = time.perf_counter()
        seg = Segmenter.from_checkpoint(checkpoint, threads=cpus)
        load = time.perf_counter() - t
        t = time.perf_counter()
        classes = [(c.name, c.color) for c in seg.config.classes]
        for s in cat.scenes:
            w = SceneWriter.create(
                str(out), s.scene_id, s.height, s.width, CHUNK, classes, {}, overwrite=True
            )
            reader = open_scene(s)
            for u in plan_scene(s.scene_id, s.height, s.width, chunk=CHUNK, halo=HALO):
                win = reader.read(u.window.y0, u.window.y1, u.window.x0, u.window.x1)
                p = seg.predict(reflect_pad(win, u.pad), return_confidence=True)
                w.write_block(
                    u.core.y0,
                    u.core.x0,
                    np.ascontiguousarray(crop_core(p.labels, u)),
                    np.ascontiguousarray(crop_core(p.confidence, u)),
                )
            w.finalize()
        wall = time.perf_counter() - t
    px = sum(s.height * s.width for s in cat.scenes)
    return {
        "wall_s": wall,
        "wall_incl_start_s": wall + load,
        "mpx_s": px / 1e6 / wall,
        "peak_rss_mib": mem.peak_mib,
    }


class _RayDataModel:
    def __init__(self, checkpoint: str) -> None:
        from hgn_model import Segmenter

        self.seg = Segmenter.from_checkpoint(checkpoint, threads=1)

    def __call__(self, batch: dict) -> dict:
        out = self.seg.predict(list(batch["image"]), return_confidence=True)
        keep = {k: v for k, v in batch.items() if k != "image"}
        # batch_size=1: one window per call, so stacking never meets two shapes.
        return {
            **keep,
            "labels": np.stack(list(out.labels)),
            "conf": np.stack(list(out.confidence)),
        }


def part_raydata(archive: Path, out: Path, checkpoint: str, cpus: int) -> dict:
    """Ray Data's canonical shape: read tasks -> actor-pool map_batches -> write tasks.

    Pixels flow between stages through the object store. Reads/writes get 0.25 CPU and the
    model actors 0.75 each, so everything fits the same ``cpus`` as the pipeline.
    """
    import ray

    from hgn_model.checkpoint import read_config
    from pipeline.execute import ray_session
    from pipeline.io.omezarr import SceneWriter
    from pipeline.plan import plan_scene

    cat, _ = _units(archive)
    infos = {s.scene_id: s for s in cat.scenes}
    ck = read_config(checkpoint)
    classes = [(c.name, c.color) for c in ck.classes]
    rows = []
    for s in cat.scenes:
        SceneWriter.create(
            str(out), s.scene_id, s.height, s.width, CHUNK, classes, {}, overwrite=True
        )
        for u in plan_scene(s.scene_id, s.height, s.width, chunk=CHUNK, halo=HALO):
            rows.append({"scene": s.scene_id, "row": u.row, "col": u.col})

    def read(batch: dict) -> dict:
        from pipeline.io.readers import open_scene
        from pipeline.stitch import model_input

        images = []
        for sid, r, c in zip(batch["scene"], batch["row"], batch["col"], strict=True):
            info = infos[sid]
            u = plan_scene(sid, info.height, info.width, chunk=CHUNK, halo=HALO).unit(r, c)
            win = open_scene(info).read(u.window.y0, u.window.y1, u.window.x0, u.window.x1)
            images.append(model_input(win, u))
        return {**batch, "image": np.stack(images)}

    def write(batch: dict) -> dict:
        from pipeline.stitch import crop_core

        for sid, r, c, lab, cf in zip(
            batch["scene"], batch["row"], batch["col"], batch["labels"], batch["conf"], strict=True
        ):
            info = infos[sid]
            u = plan_scene(sid, info.height, info.width, chunk=CHUNK, halo=HALO).unit(r, c)
            SceneWriter.open(str(out), sid).write_block(
                u.core.y0,
                u.core.x0,
                np.ascontiguousarray(crop_core(lab, u)),
                np.ascontiguousarray(crop_core(cf, u)),
            )
        return {"n": np.array([len(batch["scene"])])}

    t0 = time.perf_counter()
    with ray_session(None, num_cpus=cpus):
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        with PeakRss(ray_workers=True) as mem:
            ds = (
                ray.data.from_items(rows)
                .map_batches(read, batch_size=1, num_cpus=0.25)
                .map_batches(
                    _RayDataModel,
                    fn_constructor_args=(checkpoint,),
                    batch_size=1,
                    concurrency=cpus,
                    num_cpus=0.75,
                )
                .map_batches(write, batch_size=1, num_cpus=0.25)
            )
            done = sum(int(b["n"].sum()) for b in ds.iter_batches(batch_size=None))
            for s in cat.scenes:
                SceneWriter.open(str(out), s.scene_id).finalize()
        wall = time.perf_counter() - t0
    px = sum(s.height * s.width for s in cat.scenes)
    return {
        "wall_incl_start_s": wall,
        "mpx_s_incl_start": px / 1e6 / wall,
        "units": done,
        "peak_rss_mib": mem.peak_mib,
    }


class _WindowReader:
    """A Ray actor that reads every window of a plan one way (no model: reads only)."""

    def __init__(self, infos: dict) -> None:
        self.infos = infos

    def read_all(self, units: list, mode: str) -> float:
        from ray.util.dask import ray_dask_get

        from pipeline.io.readers import open_scene

        t = time.perf_counter()
        arrays = {}
        for u in units:
            info = self.infos[u.scene_id]
            w = u.window
            if mode == "actor":
                open_scene(info).read(w.y0, w.y1, w.x0, w.x1)
                continue
            if u.scene_id not in arrays:
                arrays[u.scene_id] = open_scene(info).to_dask(CHUNK)  # as read_path: dask
            graph = arrays[u.scene_id][:, w.y0 : w.y1, w.x0 : w.x1]
            graph.compute(scheduler=ray_dask_get if mode == "dask-ray" else "threads")
        return time.perf_counter() - t


def part_reads(archive: Path, out: Path, checkpoint: str, cpus: int) -> dict:
    """Window reads alone, from a worker: SceneReader.read vs a Dask graph (on Ray / threads).

    One actor holds 1 CPU; the others stay free for dask-on-ray's read tasks. Each way runs
    three times, interleaved; the best time counts (the machine is shared).
    """
    import ray

    from pipeline.execute import ray_session

    cat, plan = _units(archive)
    units = list(plan.units())
    mpx = sum(u.window.area for u in units) / 1e6
    best: dict[str, float] = {}
    with ray_session(None, num_cpus=cpus):
        reader = ray.remote(num_cpus=1)(_WindowReader).remote({s.scene_id: s for s in cat.scenes})
        ray.get(reader.read_all.remote(units[:1], "actor"))  # warm: imports, first open
        for _ in range(3):
            for mode in ("actor", "dask-ray", "dask-threads"):
                dt = ray.get(reader.read_all.remote(units, mode))
                best[mode] = min(best.get(mode, dt), dt)
    return {f"{m}_mpx_s": mpx / t for m, t in best.items()} | {
        "windows": len(units),
        "read_mpx": mpx,
    }


def part_overlap(archive: Path, out: Path, checkpoint: str, cpus: int) -> dict:
    """Read-ahead + write-behind on vs off, 2048 chunks, local disk and S3 (bench/_overlap)."""
    from bench._overlap import part_overlap as run

    return run(archive, out, checkpoint, cpus)


PARTS = {
    "overlap": part_overlap,
    "reads": part_reads,
    "model": part_model,
    "pipeline": part_pipeline,
    "dask": part_dask,
    "naive": part_naive,
    "raydata": part_raydata,
}


# ------------------------------------------------------------------------------ driver


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenes", type=int, default=2, help="scenes in the 1x archive")
    ap.add_argument("--size", type=int, default=2048, help="scene side (px)")
    ap.add_argument("--checkpoint", default=None, help="default: the shipped hgn checkpoint")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-pipeline")
    ap.add_argument(
        "--parts", default="reads,model,pipeline,dask,naive,raydata,pipeline4x,overlap",
        help="comma-separated; parts not run keep their result from the result file",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="rounds; the best run of each part counts"
    )
    ap.add_argument("--result", type=Path, default=REPO / "bench" / "results" / "pipeline.json")
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    ap.add_argument("--archive", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.part:  # child process: one measurement, JSON on the last stdout line
        load = os.getloadavg()[0]
        result = PARTS[args.part](args.archive, args.out, args.checkpoint, args.cpus)
        # The machine may be shared: the 1-minute load average says how much.
        result["loadavg_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        print(json.dumps(result, default=float))
        return 0

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

    def get(part: str, key: str) -> float | None:
        v = res.get(part, {}).get(key)
        return float(v) if isinstance(v, (int, float)) else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    p_incl = get("pipeline", "wall_incl_start_s")
    res["ratios"] = {
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
            res["ratios"][f"overlap_gain_{where}"] = o["wall_off_over_on"]
            for mode in ("on", "off"):
                runs = o[mode]
                res["ratios"][f"busy_{mode}_{where}"] = max(r["busy_fraction"] for r in runs)
                res["ratios"][f"busy_steady_{mode}_{where}"] = max(
                    r["busy_fraction_steady"] for r in runs)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(res, indent=2, default=float) + "\n")
    print(json.dumps(res, indent=2, default=float))
    print("\nratios:", file=sys.stderr)
    for k, v in res["ratios"].items():
        print(f"  {k:34s} {v}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The parts of bench/pipeline.py: one function per way of running the job, and the archive.

Each part runs in its own process (``python bench/pipeline.py --part NAME``) and returns one
JSON-ready dict; bench/pipeline.py compares them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._proc import PeakRss

CHUNK, HALO = 1024, 128  # 4 windows per 2048^2 scene; multiples of 128 (model phase)


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
    barrier.wait(timeout=600)  # start together (a share that failed breaks it, never a hang)
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
    procs = min(cpus, len(inputs))  # every process needs a share of at least one window
    del seg, inputs
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(procs, mp_context=ctx) as pool:
        barrier = manager.Barrier(procs)
        spans = list(
            pool.map(
                _forward_share, [(str(archive), checkpoint, i, procs, barrier)
                                 for i in range(procs)]
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


def _raydata_rows(cat: Any, out: Path, checkpoint: str) -> list[dict]:
    """Create every output scene (as the pipeline would), then one row per plan unit."""
    from hgn_model.checkpoint import read_config
    from pipeline.io.omezarr import SceneWriter
    from pipeline.plan import plan_scene

    ck = read_config(checkpoint)
    classes = [(c.name, c.color) for c in ck.classes]
    rows = []
    for s in cat.scenes:
        SceneWriter.create(
            str(out), s.scene_id, s.height, s.width, CHUNK, classes, {}, overwrite=True
        )
        for u in plan_scene(s.scene_id, s.height, s.width, chunk=CHUNK, halo=HALO):
            rows.append({"scene": s.scene_id, "row": u.row, "col": u.col})
    return rows


def _raydata_stages(infos: dict, out: Path) -> tuple[Any, Any]:
    """The read and write batch functions (closures over the scenes, shipped to Ray tasks)."""
    from pipeline.io.omezarr import SceneWriter
    from pipeline.plan import plan_scene

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

    return read, write


def part_raydata(archive: Path, out: Path, checkpoint: str, cpus: int) -> dict:
    """Ray Data's canonical shape: read tasks -> actor-pool map_batches -> write tasks.

    Pixels flow between stages through the object store. Reads/writes get 0.25 CPU and the
    model actors 0.75 each, so everything fits the same ``cpus`` as the pipeline.
    """
    import ray

    from pipeline.execute import ray_session
    from pipeline.io.omezarr import SceneWriter

    cat, _ = _units(archive)
    rows = _raydata_rows(cat, out, checkpoint)
    read, write = _raydata_stages({s.scene_id: s for s in cat.scenes}, out)
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


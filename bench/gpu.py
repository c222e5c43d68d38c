"""One prepared run for a lent GPU machine: inference, training and the pipeline, <= 9 minutes.

    python bench/gpu.py                     # on the GPU machine; results under $OUT
    python bench/gpu.py --smoke             # tiny sizes on CPU: proves the script runs
    python bench/gpu.py --download-wheels runs/gpu-wheels   # here: wheels it may lack

Sections, each time-boxed, each reporting why when it cannot run:

1. ``inference``: fp16 and bf16 images/s (batch 1 and 4) and peak GPU memory at 2448^2 for
   deep_only, isdnet_like and hgn (shipped checkpoints, ``Segmenter``).
2. ``training``: hgn with the shipped recipe (hgn_model/configs/shipped.yaml) on the GPU, bf16,
   64 detail crops per step; steps sized for 50x the CPU budget's crops (2000 steps x 2), cut
   to what fits the time box after a probe (the JSON says which multiple was reached). The
   checkpoint lands in ``$OUT/checkpoints/hgn_gpu.{safetensors,json}`` with its test metrics.
3. ``pipeline``: ``hgn-pipeline run --local`` on one GPU over 2 scenes of 4096^2 (2048 chunks +
   256 halo) vs model-only fp16 ``Segmenter.predict`` on the same windows: the executor's
   Mpx/s over the model's (needs zarr/dask etc.; skipped with the missing module named).

The GPU machine's python has torch; ``--wheels DIR`` installs the carried wheels of modules it
lacks first. Writes ``$OUT/gpu.json`` (``--out``), prints it. No assertions.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

MODELS = ["deep_only", "isdnet_like", "hgn"]
MODEL_ONLY_NEEDS = ["numpy", "scipy", "PIL", "safetensors", "pydantic", "yaml"]
PIPELINE_NEEDS = ["zarr", "numcodecs", "fsspec", "dask", "typer", "rich", "tifffile"]
WHEELS = ["safetensors", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
          "pyyaml", "scipy", "pillow"]
CPU_CROPS = 2000 * 2  # the shipped CPU budget: 2000 steps x 2 detail crops
TARGET_MULTIPLE = 50


def _missing(mods: list[str]) -> list[str]:
    out = []
    for m in mods:
        try:
            importlib.import_module(m)
        except ImportError:
            out.append(m)
    return out


def _install_wheels(folder: str) -> None:
    if _missing(MODEL_ONLY_NEEDS + PIPELINE_NEEDS):
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links",
                        folder, *os.listdir(folder)], cwd=folder, check=False)


def _sizes(smoke: bool) -> dict:
    if smoke:
        return {"size": 256, "repeats": 2, "device": "cpu", "precisions": ["fp32"],
                "batches": [1, 2], "train_s": 6, "crops": 4, "scene": 512, "archive": 512}
    return {"size": 2448, "repeats": 10, "device": "cuda", "precisions": ["fp16", "bf16"],
            "batches": [1, 4], "train_s": 300, "crops": 64, "scene": 2448, "archive": 4096}


def inference(sz: dict) -> dict:
    import numpy as np
    import torch

    from hgn_model.checkpoint import shipped_checkpoint
    from hgn_model.segmenter import Segmenter

    out: dict = {}
    img = np.random.default_rng(0).integers(0, 255, (3, sz["size"], sz["size"]), np.uint8)
    cuda = sz["device"] == "cuda"
    for name in MODELS:
        for precision in sz["precisions"]:
            seg = Segmenter.from_checkpoint(shipped_checkpoint(name), device=sz["device"],
                                            precision=precision)
            for batch in sz["batches"]:
                images = np.stack([img] * batch)
                seg.predict(images)  # warm-up: kernels, allocator
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                for _ in range(sz["repeats"]):
                    seg.predict(images)
                if cuda:
                    torch.cuda.synchronize()
                dt = (time.perf_counter() - t0) / sz["repeats"]
                peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
                out[f"{name}/{precision}/b{batch}"] = {
                    "images_per_s": round(batch / dt, 2),
                    "peak_mib": None if peak is None else round(peak, 1)}
            del seg
    return out


def training(sz: dict, out_dir: Path, smoke: bool) -> dict:
    """hgn on the GPU with the shipped recipe; steps sized from a probe to fit the time box."""
    from hgn_model.train import load_train_config, train

    over = {"batch_size": sz["crops"], "per_context": 2, "device": sz["device"],
            "amp": "bf16" if sz["device"] == "cuda" else "off", "eval_every": 0,
            "checkpoint_every": 0, "threads": None, "weights_dtype": "float16",
            "state_dir": str(out_dir / "gpu_train_state")}
    if smoke:
        over.update(model_cfg={"width": 0.125}, crop=128, context=256,
                    data={"kind": "synthetic", "train_seeds": [0], "val_seeds": [],
                          "test_seeds": [1000], "scene_size": sz["scene"]})
    config = ROOT / "hgn_model" / "configs" / "shipped.yaml"
    probe_steps = 3 if smoke else 25
    probe = load_train_config(config, **over, steps=probe_steps,
                              output=str(out_dir / "probe" / "hgn"))
    if not smoke:
        probe = probe.model_copy(update={"data": probe.data.model_copy(
            update={"test_seeds": []})})
    t0 = time.perf_counter()
    train(probe, log=lambda m: None)
    per_step = (time.perf_counter() - t0) / probe_steps  # an upper bound: includes set-up
    target = TARGET_MULTIPLE * CPU_CROPS // sz["crops"]
    steps = max(probe_steps, min(target, int(sz["train_s"] / per_step)))
    cfg = load_train_config(config, **over, steps=steps,
                            output=str(out_dir / "checkpoints" / "hgn_gpu"))
    t0 = time.perf_counter()
    _, final = train(cfg, log=lambda m: print(m, flush=True))
    wall = time.perf_counter() - t0
    return {"steps": steps, "crops_per_step": sz["crops"], "probe_s_per_step": round(per_step, 3),
            "wall_s": round(wall, 1), "cpu_budget_multiple": round(steps * sz["crops"]
                                                                   / CPU_CROPS, 1),
            "target_multiple": TARGET_MULTIPLE,
            "checkpoint": str(out_dir / "checkpoints" / "hgn_gpu.safetensors"),
            "metrics": {k: v for k, v in final.metrics.items()
                        if k not in ("confusion_matrix", "val")}}


def pipeline(sz: dict, out_dir: Path, checkpoint: str) -> dict:
    """Executor on one GPU vs model-only fp16 on the same windows (2048 chunks + 256 halo)."""
    missing = _missing(PIPELINE_NEEDS)
    if missing:
        return {"skipped": f"modules missing on this machine: {missing} (carry their wheels)"}
    import numpy as np

    from hgn_model.data.synthetic import generate_scene, write_scene_zarr
    from hgn_model.segmenter import Segmenter

    size, chunk, halo = sz["archive"], min(2048, sz["archive"] // 2), 256 if sz["archive"] > 1024 \
        else 32
    archive, labels = out_dir / "archive", out_dir / "labels"
    scenes = [generate_scene(s, size, size) for s in (7001, 7002)]
    for s in scenes:
        write_scene_zarr(archive / f"s{s.seed}.zarr", s, chunks=512)
    cmd = [sys.executable, "-c", "from pipeline.cli import app; app()", "run", "-i", str(archive),
           "-o", str(labels), "--local", "--set", f"checkpoint={checkpoint}",
           "--set", f"chunk={chunk}", "--set", f"halo={halo}", "--set", "overwrite=true",
           "--run-id", "gpu"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode:
        return {"failed": proc.stderr[-1500:]}
    from pipeline.run.report import read_manifest

    summary = read_manifest(str(labels / "_hgn" / "manifest-gpu.json"))["summary"]
    seg = Segmenter.from_checkpoint(checkpoint, device=sz["device"],
                                    precision=sz["precisions"][0])
    seg.predict(scenes[0].image[:, :chunk + 2 * halo, :chunk + 2 * halo])  # warm-up
    t0 = time.perf_counter()
    for s in scenes:
        for y in range(0, size, chunk):
            for x in range(0, size, chunk):
                y0, x0 = max(0, y - halo), max(0, x - halo)
                seg.predict(np.ascontiguousarray(
                    s.image[:, y0:min(size, y + chunk + halo), x0:min(size, x + chunk + halo)]))
    model_s = time.perf_counter() - t0
    mpx = len(scenes) * size * size / 1e6
    execute = float(summary["mpx_per_s_execute"])
    return {"scenes": len(scenes), "size": size, "chunk": chunk, "halo": halo,
            "run_wall_s": round(wall, 1), "executor_mpx_per_s": round(execute, 2),
            "model_only_mpx_per_s": round(mpx / model_s, 2),
            "executor_over_model_only": round(execute / (mpx / model_s), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "runs" / "gpu"))
    parser.add_argument("--wheels", default=None, help="folder of wheels to install first")
    parser.add_argument("--download-wheels", default=None, metavar="DIR")
    parser.add_argument("--python-version", default="3.11",
                        help="of the GPU machine's python, for --download-wheels")
    parser.add_argument("--sections", nargs="+", default=["inference", "training", "pipeline"])
    args = parser.parse_args()
    if args.download_wheels:
        # --no-deps: numpy comes with the machine's torch; the carry limit is 64 MiB
        subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary", ":all:",
                        "--no-deps", "--python-version", args.python_version, "--platform",
                        "manylinux2014_x86_64", "-d", args.download_wheels, *WHEELS], check=True)
        return
    if args.wheels:
        _install_wheels(args.wheels)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    import torch

    sz = _sizes(args.smoke)
    if sz["device"] == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; use --smoke to try the script on CPU")
    result: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                                "device": torch.cuda.get_device_name(0)
                                if sz["device"] == "cuda" else platform.processor() or "cpu"},
                    "smoke": args.smoke, "missing_modules": _missing(MODEL_ONLY_NEEDS)}
    checkpoint = str(ROOT / "hgn_model" / "checkpoints" / "hgn.safetensors")
    for section in args.sections:
        t0 = time.perf_counter()
        try:
            if section == "inference":
                result[section] = inference(sz)
            elif section == "training":
                result[section] = training(sz, out_dir, args.smoke)
                checkpoint = result[section]["checkpoint"]
            elif section == "pipeline":
                result[section] = pipeline(sz, out_dir, checkpoint)
        except Exception as exc:  # report and go on: the other sections still count
            result[section] = {"error": f"{type(exc).__name__}: {exc}",
                               "trace": traceback.format_exc()[-2000:]}
        result.setdefault("section_s", {})[section] = round(time.perf_counter() - t0, 1)
        (out_dir / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

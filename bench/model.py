"""Model benchmark: every registered model side by side at 2448 x 2448, in one run.

    python bench/model.py [--seeds 2000 ... 2007] [--repeats 5] [--size 2448]

For deep_only, isdnet_like, hgn, a second hgn training seed and the HGN ablations: parameters,
MACs (torch's FLOP counter / 2), CPU latency of one 2448^2 image through ``Segmenter.predict``
(median of ``--repeats`` after a warm-up; the models take turns in each round so machine noise
hits all of them alike), extra peak RSS of one predict (VmHWM reset through
/proc/self/clear_refs, Linux, a fresh process per model), IoU on benchmark seeds never used
for training, the training budget each checkpoint records (steps, crop / context, wall time,
machine), the issue's targets, the seed-to-seed spread, and hgn's windowed (the pipeline's
2048 + 256 halo windows) vs whole-scene labels and time on a 4096^2 scene. Checkpoints:
hgn_model/checkpoints (shipped) and bench/checkpoints (ablations, hgn_seed1), all trained
with one budget by bench/train_shipped.py. Prints JSON, writes bench/results/model.json and
refreshes the README table (bench/readme.py). No assertions.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from hgn_model.checkpoint import SHIPPED_DIR  # noqa: E402
from hgn_model.data.synthetic import CONTEXT_CLASSES, THIN_CLASSES, generate_scene  # noqa: E402
from hgn_model.evaluate import ConfusionMatrix  # noqa: E402
from hgn_model.segmenter import Segmenter  # noqa: E402

EVAL_SEEDS = list(range(2000, 2008))  # never trained on (tests/test_checkpoint.py checks)
MODELS = ["deep_only", "isdnet_like", "hgn", "hgn_seed1", "hgn_no_gsag", "hgn_no_lsag",
          "hgn_no_contrast", "hgn_laplacian"]
WINDOW_SIZE, WINDOW_CHUNK, WINDOW_HALO = 4096, 2048, 256  # the pipeline's default windows
ABLATION_DIR = ROOT / "bench" / "checkpoints"


def _checkpoint(name: str) -> Path | None:
    for folder in (SHIPPED_DIR, ABLATION_DIR):
        path = folder / f"{name}.safetensors"
        if path.exists():
            return path
    return None


def _peak_forward_mib(name: str, size: int) -> float | None:
    """Extra resident memory at the peak of one predict(), in a fresh process.

    A fresh process per model keeps the allocator's cached blocks from earlier models out of
    the figure: peak RSS during the call (VmHWM, reset just before it) minus RSS before it.
    """
    code = (
        "import sys, numpy as np; from pathlib import Path\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from hgn_model.segmenter import Segmenter\n"
        "import os; from bench.model import _checkpoint\n"
        "from bench._proc import rss_kib\n"
        f"seg = Segmenter.from_checkpoint(_checkpoint({name!r}), device='cpu')\n"
        f"img = np.zeros((seg.in_channels, {size}, {size}), np.uint8)\n"
        "Path('/proc/self/clear_refs').write_text('5')\n"
        "before = rss_kib(os.getpid()); seg.predict(img)\n"
        "print((rss_kib(os.getpid(), 'VmHWM') - before) / 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    if proc.returncode != 0:
        print(f"peak memory of {name} not measured: {proc.stderr.strip()[-300:]}",
              file=sys.stderr)
        return None
    return round(float(proc.stdout.split()[-1]), 1)


def _macs(seg: Segmenter, size: int) -> float:
    x = torch.zeros(1, seg.in_channels, size, size)
    pad = (-size) % seg.size_divisor
    x = torch.nn.functional.pad(x, (0, pad, 0, pad))
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        seg.model.forward_train(x)
    return counter.get_total_flops() / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=EVAL_SEEDS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=2448)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--no-readme", action="store_true", help="don't rewrite README.md")
    parser.add_argument("--no-windowed", dest="windowed", action="store_false",
                        help="skip the windowed-vs-whole-scene comparison")
    args = parser.parse_args()

    segs: dict[str, Segmenter] = {}
    missing = []
    for name in args.models:
        path = _checkpoint(name)
        if path is None:
            missing.append(name)
            continue
        segs[name] = Segmenter.from_checkpoint(path, device="cpu")
    image = generate_scene(args.seeds[0], args.size, args.size).image
    results: dict[str, dict] = {}
    for name, seg in segs.items():
        seg.predict(image)  # warm-up: oneDNN primitive caches, allocator
        results[name] = {
            "params_m": round(sum(p.numel() for p in seg.model.parameters()) / 1e6, 3),
            "gmacs": round(_macs(seg, args.size) / 1e9, 2),
            "peak_forward_mib": _peak_forward_mib(name, args.size),
            "latencies_s": [],
        }
    for _ in range(args.repeats):  # round-robin: noise spreads over every model alike
        for name, seg in segs.items():
            t0 = time.perf_counter()
            seg.predict(image)
            results[name]["latencies_s"].append(round(time.perf_counter() - t0, 3))
    cms = {name: ConfusionMatrix(seg.num_classes) for name, seg in segs.items()}
    for seed in args.seeds:
        scene = generate_scene(seed, args.size, args.size)
        for name, seg in segs.items():
            cms[name].update(scene.labels, seg.predict(scene.image).labels)
    for name, seg in segs.items():
        rep = cms[name].report([c.name for c in seg.config.classes])
        r = results[name]
        r["latency_s"] = statistics.median(r["latencies_s"])
        r.update({
            "miou": round(rep.miou * 100, 2),
            "miou_excl_0": round(rep.miou_fg * 100, 2),
            "thin_iou": round(rep.mean_of(THIN_CLASSES) * 100, 2),
            "context_iou": round(rep.mean_of(CONTEXT_CLASSES) * 100, 2),
            "per_class_iou": rep.to_dict()["per_class_iou"],
            "plantation_iou": rep.to_dict()["per_class_iou"].get("plantation"),
            **_training(seg.config.training),
        })
    targets = _targets(results)
    windowed = _windowed(segs["hgn"], args.seeds[0]) if "hgn" in segs and args.windowed else None
    out = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", torch {torch.__version__}, {torch.get_num_threads()} threads",
        "size": args.size,
        "eval_seeds": args.seeds,
        "models": results,
        "missing_checkpoints": missing,
        "targets": targets,
        "seed_spread": _spread(results),
        "windowed": windowed,
        "gpu": _gpu(),
    }
    text = json.dumps(out, indent=2)
    print(text)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "model.json").write_text(text + "\n")
    if not args.no_readme:
        from bench.readme import update_readme

        update_readme()


def _training(t: dict) -> dict:
    """The budget a checkpoint was trained with (steps, crops, wall time, machine)."""
    c = t.get("config", {})
    return {"train_steps": c.get("steps"), "train_crop": c.get("crop"),
            "train_context": t.get("context", c.get("crop")), "train_batch": c.get("batch_size"),
            "train_seconds": t.get("train_seconds"), "train_machine": t.get("machine", "")}


def _spread(r: dict[str, dict]) -> dict | None:
    """|hgn - hgn_seed1|: the seed-to-seed spread the ablation gaps are read against."""
    if not {"hgn", "hgn_seed1"} <= set(r):
        return None
    keys = ("miou_excl_0", "thin_iou", "context_iou", "plantation_iou")
    return {k: round(abs((r["hgn"][k] or 0) - (r["hgn_seed1"][k] or 0)), 2) for k in keys}


def _targets(r: dict[str, dict]) -> dict[str, dict]:
    """The issue's targets on held-out seeds (mIoU excl. class 0, IoU in %)."""
    if not {"hgn", "isdnet_like", "deep_only"} <= set(r):
        return {}
    h, i, d = r["hgn"], r["isdnet_like"], r["deep_only"]

    def check(value: float, bound: float, op: str = ">=") -> dict:
        ok = value >= bound if op == ">=" else value <= bound
        return {"value": round(value, 3), "bound": round(bound, 3), "met": bool(ok)}

    out = {
        "miou_vs_isdnet_plus_3": check(h["miou_excl_0"], i["miou_excl_0"] + 3),
        "miou_vs_deep_only_plus_8": check(h["miou_excl_0"], d["miou_excl_0"] + 8),
        "plantation_iou_ge_50": check(h["plantation_iou"] or 0.0, 50.0),
        "thin_vs_deep_only_plus_15": check(h["thin_iou"], d["thin_iou"] + 15),
        "latency_le_isdnet": check(h["latency_s"], i["latency_s"], "<="),
        "peak_memory_le_isdnet": check(h["peak_forward_mib"] or 0, i["peak_forward_mib"] or 0,
                                       "<="),
    }
    for name in ("hgn_no_gsag", "hgn_no_lsag", "hgn_no_contrast"):
        if name in r:
            out[f"{name}_below_hgn"] = check(r[name]["miou_excl_0"], h["miou_excl_0"], "<=")
    return out


def _windowed(seg: Segmenter, seed: int) -> dict:
    """Windowed (the pipeline's chunk + halo, cores stitched) vs one whole-scene forward."""
    import numpy as np

    scene = generate_scene(seed + 7, WINDOW_SIZE, WINDOW_SIZE)
    t0 = time.perf_counter()
    whole = seg.predict(scene.image).labels
    t_whole = time.perf_counter() - t0
    tiled = np.zeros_like(whole)
    t0 = time.perf_counter()
    for y in range(0, WINDOW_SIZE, WINDOW_CHUNK):
        for x in range(0, WINDOW_SIZE, WINDOW_CHUNK):
            y0, x0 = max(0, y - WINDOW_HALO), max(0, x - WINDOW_HALO)
            y1 = min(WINDOW_SIZE, y + WINDOW_CHUNK + WINDOW_HALO)
            x1 = min(WINDOW_SIZE, x + WINDOW_CHUNK + WINDOW_HALO)
            lab = seg.predict(scene.image[:, y0:y1, x0:x1]).labels
            tiled[y:y + WINDOW_CHUNK, x:x + WINDOW_CHUNK] = lab[y - y0:y - y0 + WINDOW_CHUNK,
                                                               x - x0:x - x0 + WINDOW_CHUNK]
    t_tiled = time.perf_counter() - t0
    return {"size": WINDOW_SIZE, "chunk": WINDOW_CHUNK, "halo": WINDOW_HALO,
            "label_agreement": round(float((whole == tiled).mean()), 4),
            "whole_s": round(t_whole, 2), "windowed_s": round(t_tiled, 2),
            "windowed_over_whole_time": round(t_tiled / t_whole, 2),
            "pixels_read_over_scene": round(sum(
                (min(WINDOW_SIZE, y + WINDOW_CHUNK + WINDOW_HALO) - max(0, y - WINDOW_HALO))
                * (min(WINDOW_SIZE, x + WINDOW_CHUNK + WINDOW_HALO) - max(0, x - WINDOW_HALO))
                for y in range(0, WINDOW_SIZE, WINDOW_CHUNK)
                for x in range(0, WINDOW_SIZE, WINDOW_CHUNK)) / WINDOW_SIZE**2, 3)}


def _gpu() -> str | dict:
    path = ROOT / "bench" / "results" / "gpu.json"
    if path.exists():
        return json.loads(path.read_text()).get("inference", {})
    return "not measured: no GPU machine was lent to this task (bench/gpu.py is ready for one)"


if __name__ == "__main__":
    main()

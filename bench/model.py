"""Model benchmark: every registered model side by side at 2448 x 2448, in one run.

    python bench/model.py [--seeds 2000 2001 2002 2003] [--repeats 5] [--size 2448]

For deep_only, isdnet_like, hgn and the HGN ablations: parameters, MACs (torch's FLOP counter
/ 2), CPU latency of one 2448^2 image through ``Segmenter.predict`` (median of ``--repeats``
after a warm-up; the models take turns in each round so machine noise hits all of them alike),
extra peak RSS of one forward (VmHWM reset through /proc/self/clear_refs, Linux), and mIoU on
benchmark seeds never used for training. Checkpoints: hgn_model/checkpoints (shipped) and
bench/checkpoints (ablations), all trained with one budget by bench/train_shipped.py.
Prints JSON, writes bench/results/model.json and refreshes the README table (bench/readme.py).
No assertions.
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

EVAL_SEEDS = [2000, 2001, 2002, 2003]  # never trained on (tests/test_checkpoint.py checks)
MODELS = ["deep_only", "isdnet_like", "hgn", "hgn_no_gsag", "hgn_no_lsag", "hgn_no_contrast"]
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
            "train_steps": seg.config.training.get("config", {}).get("steps"),
        })
    targets = _targets(results)
    out = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", torch {torch.__version__}, {torch.get_num_threads()} threads",
        "size": args.size,
        "eval_seeds": args.seeds,
        "models": results,
        "missing_checkpoints": missing,
        "targets": targets,
        "gpu_fp16_images_per_s": "not measured: no GPU machine was lent to this task",
    }
    text = json.dumps(out, indent=2)
    print(text)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "model.json").write_text(text + "\n")
    if not args.no_readme:
        from bench.readme import update_readme

        update_readme()


def _targets(r: dict[str, dict]) -> dict[str, dict]:
    if not {"hgn", "isdnet_like", "deep_only"} <= set(r):
        return {}
    h, i, d = r["hgn"], r["isdnet_like"], r["deep_only"]

    def check(value: float, bound: float, op: str = ">=") -> dict:
        ok = value >= bound if op == ">=" else value <= bound
        return {"value": round(value, 3), "bound": round(bound, 3), "met": bool(ok)}

    return {
        "miou_vs_isdnet_plus_1": check(h["miou_excl_0"], i["miou_excl_0"] + 1),
        "miou_vs_deep_only_plus_5": check(h["miou_excl_0"], d["miou_excl_0"] + 5),
        "thin_vs_deep_only_plus_10": check(h["thin_iou"], d["thin_iou"] + 10),
        "latency_le_isdnet": check(h["latency_s"], i["latency_s"], "<="),
        "peak_memory_le_isdnet": check(h["peak_forward_mib"] or 0, i["peak_forward_mib"] or 0,
                                       "<="),
    }


if __name__ == "__main__":
    main()

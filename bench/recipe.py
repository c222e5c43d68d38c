"""The training recipe's cost and the effect of each of its choices, side by side.

    python bench/recipe.py                          # step cost only (a few minutes)
    python bench/recipe.py --quality-steps 300      # + short trainings of the variants

Cost: seconds per optimisation step (data loading included, 1 torch thread, AdamW), the
models taking turns step by step so machine noise hits all alike; median of ``--repeats``.
"today" is the format-1 recipe: the format-1 architecture on 2 plain 512^2 crops; "recipe" is
a 2048^2 context (deep branch, aux head) with 2 detail crops of 512^2 (shallow branch,
decoder, main loss). Quality: val mIoU / thin / context IoU after ``--quality-steps`` steps of
each variant (full recipe, and one choice switched back at a time), same seeds and budget.
Prints JSON and writes bench/results/recipe.json. No assertions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import torch  # noqa: E402

from hgn_model.registry import format1_settings  # noqa: E402
from hgn_model.training.config import validate_train_config  # noqa: E402

BASE = {
    "model_cfg": {"width": 0.5},
    "data": {"kind": "synthetic", "train_seeds": [0, 1, 2, 3], "val_seeds": [500, 501],
             "test_seeds": [], "scene_size": 2448},
    "crop": 512, "context": 2048, "per_context": 2, "batch_size": 2, "threads": 1,
    "output": str(ROOT / "runs" / "recipe" / "model"),
}
VARIANTS = {  # quality runs: the recipe, and one choice switched back at a time
    "recipe": {},
    "no_context": {"context": 512},
    "uniform_crops": {"class_aware": 0.0},
    "old_contrast": {"loss": {"contrast_sampling": "uniform", "contrast_protos": "all",
                              "bank_momentum": 0.0}},
    "no_contrast": {"loss": {"contrast": 0.0}},
    "laplacian": {"model_cfg": {"laplacian": True}},
}


def _cfg(**over):
    raw = json.loads(json.dumps(BASE))
    for k, v in over.items():
        raw[k] = {**raw[k], **v} if isinstance(v, dict) and isinstance(raw.get(k), dict) else v
    return validate_train_config(raw)


def cost(models: list[str], repeats: int) -> dict[str, dict]:
    from hgn_model.training.loop import Rank, _Run

    runs = {}
    for name in models:
        legacy = format1_settings(name)
        runs[f"{name}/today"] = _Run(_cfg(model=name, context=512, model_cfg={
            "width": 0.5, **legacy}), Rank(), lambda m: None)
        runs[f"{name}/recipe"] = _Run(_cfg(model=name), Rank(), lambda m: None)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for run in runs.values():
        run.step()  # warm-up
    for _ in range(repeats):
        for key, run in runs.items():
            t0 = time.perf_counter()
            run.step()
            times[key].append(time.perf_counter() - t0)
    out = {}
    for name in models:
        today = statistics.median(times[f"{name}/today"])
        recipe = statistics.median(times[f"{name}/recipe"])
        out[name] = {"today_s": round(today, 3), "recipe_s": round(recipe, 3),
                     "ratio": round(recipe / today, 2)}
    return out


def quality(steps: int, variants: list[str]) -> dict[str, dict]:
    from hgn_model.train import train

    out = {}
    for name in variants:
        over = VARIANTS[name]
        cfg = _cfg(steps=steps, **over)
        t0 = time.perf_counter()
        _, final = train(cfg, log=lambda m: None)
        val = final.metrics
        out[name] = {"val_miou": val.get("miou"), "val_miou_excl_0": val.get("miou_excl_0"),
                     "thin_iou": val.get("thin_miou"), "context_iou": val.get("context_miou"),
                     "plantation_iou": (val.get("per_class_iou") or {}).get("plantation"),
                     "wall_s": round(time.perf_counter() - t0, 1)}
        print(json.dumps({name: out[name]}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["hgn", "isdnet_like", "deep_only"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quality-steps", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result: dict = {"threads": 1, "repeats": args.repeats}
    if not args.skip_cost:
        result["cost"] = cost(args.models, args.repeats)
        print(json.dumps({"cost": result["cost"]}), flush=True)
    if args.quality_steps:  # "steps" goes with the quality rows it describes
        result["quality"] = quality(args.quality_steps, args.variants)
        result["steps"] = args.quality_steps
    out = ROOT / "bench" / "results" / "recipe.json"
    prev = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**prev, **result}, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

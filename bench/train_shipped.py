"""Reproduce the shipped checkpoints: every model trained with one shared budget.

    python bench/train_shipped.py                       # hgn, isdnet_like, deep_only
    python bench/train_shipped.py --models hgn_no_gsag hgn_no_lsag hgn_no_contrast

Reads hgn_model/configs/shipped.yaml, sets `model` and `output` per model, writes
hgn_model/checkpoints/<model>.safetensors + .json (fp16 weights, metrics on held-out seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hgn_model.train import load_train_config, train  # noqa: E402

DEFAULT_MODELS = ["hgn", "isdnet_like", "deep_only"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--config", default=str(ROOT / "hgn_model/configs/shipped.yaml"))
    parser.add_argument("--out-dir", default=str(ROOT / "hgn_model/checkpoints"))
    parser.add_argument("--steps", type=int, default=None, help="override the shared budget")
    args = parser.parse_args()
    summary = {}
    for name in args.models:
        cfg = load_train_config(args.config, model=name, output=f"{args.out_dir}/{name}",
                                steps=args.steps)
        print(f"== training {name} ({cfg.steps} steps, crop {cfg.crop}, batch {cfg.batch_size})",
              flush=True)
        _, final = train(cfg, log=lambda m: print(m, flush=True))
        summary[name] = final.metrics
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

"""Reproduce the shipped checkpoints: every model trained with one shared budget.

    python bench/train_shipped.py                       # all eight, 2 at a time
    python bench/train_shipped.py --models hgn deep_only --jobs 1
    python bench/train_shipped.py --out-dir runs/out    # everything into one folder

Reads hgn_model/configs/shipped.yaml and sets ``model``, ``seed`` and ``output`` per model:
hgn, isdnet_like and deep_only go to hgn_model/checkpoints/, the HGN ablations and a second
HGN training seed (``hgn_seed1``, for the seed-to-seed spread) and HGN with the Laplacian
inputs it dropped (``hgn_laplacian``, a design check) to bench/checkpoints/ (fp16
weights + JSON with metrics on held-out seeds). With ``--jobs N`` each model trains in its own
process (one torch thread each, as the config says), longest first, N at a time, its log in
``--log-dir``; a job that fails is reported and the others go on. A rerun resumes each model
from its last training checkpoint (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHIPPED = ROOT / "hgn_model" / "checkpoints"
ABLATIONS = ROOT / "bench" / "checkpoints"
# name -> (registered arch, training seed, default folder, relative step cost: longest first,
# model_cfg on top of the config's)
MODELS = {
    "isdnet_like": ("isdnet_like", 0, SHIPPED, 1.8, {}),
    "hgn": ("hgn", 0, SHIPPED, 1.0, {}),
    "hgn_seed1": ("hgn", 1, ABLATIONS, 1.0, {}),
    "hgn_no_gsag": ("hgn_no_gsag", 0, ABLATIONS, 0.95, {}),
    "hgn_no_lsag": ("hgn_no_lsag", 0, ABLATIONS, 0.95, {}),
    "hgn_no_contrast": ("hgn_no_contrast", 0, ABLATIONS, 0.95, {}),
    # the design choice of dropping the Laplacian inputs, at the full budget
    "hgn_laplacian": ("hgn", 0, ABLATIONS, 1.05, {"laplacian": True}),
    "deep_only": ("deep_only", 0, SHIPPED, 0.5, {}),
}


def train_one(name: str, config: str, out_dir: str | None, state_root: Path, steps: int | None,
              fresh: bool) -> dict:
    from hgn_model.train import load_train_config, train, validate_train_config

    arch, seed, folder, _, extra = MODELS[name]
    out = Path(out_dir) if out_dir else folder
    cfg = load_train_config(config, model=arch, seed=seed, output=str(out / name),
                            state_dir=str(state_root / f"{name}_train"), steps=steps)
    if extra:
        cfg = validate_train_config({**cfg.model_dump(mode="json"),
                                     "model_cfg": {**cfg.model_cfg, **extra}}, config)
    print(f"== training {name} ({arch}, seed {seed}): {cfg.steps} steps, context "
          f"{cfg.context}, crop {cfg.crop}, batch {cfg.batch_size}", flush=True)
    _, final = train(cfg, log=lambda m: print(m, flush=True), resume=not fresh)
    return {name: final.metrics}


def run_jobs(names: list[str], args: argparse.Namespace) -> int:
    """Each model in its own niced process, ``args.jobs`` at a time, longest first."""
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    queue = sorted(names, key=lambda n: -MODELS[n][3])
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    failed = []
    while queue or running:
        while queue and len(running) < args.jobs:
            name = queue.pop(0)
            cmd = [sys.executable, __file__, "--models", name, "--jobs", "1",
                   "--config", args.config, "--state-root", args.state_root]
            cmd += ["--out-dir", args.out_dir] if args.out_dir else []
            cmd += ["--steps", str(args.steps)] if args.steps else []
            cmd += ["--fresh"] if args.fresh else []
            fh = (log_dir / f"{name}.log").open("a")
            running[name] = (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT),
                             time.time())
            print(f"started {name} (pid {running[name][0].pid}), log {log_dir / name}.log",
                  flush=True)
        time.sleep(5)
        for name, (proc, t0) in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
                print(f"{name} {state} after {(time.time() - t0) / 60:.1f} min", flush=True)
                if proc.returncode:
                    failed.append(name)
    if failed:
        print(f"failed: {failed}; see their logs in {log_dir}", flush=True)
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--config", default=str(ROOT / "hgn_model/configs/shipped.yaml"))
    parser.add_argument("--out-dir", default=None, help="one folder for every checkpoint")
    parser.add_argument("--state-root", default=str(ROOT / "runs" / "shipped"),
                        help="training checkpoints and metrics (gitignored runs/)")
    parser.add_argument("--log-dir", default=str(ROOT / "runs" / "shipped" / "logs"))
    parser.add_argument("--steps", type=int, default=None, help="override the shared budget")
    parser.add_argument("--jobs", type=int, default=2, help="models trained at once")
    parser.add_argument("--fresh", action="store_true", help="ignore earlier training state")
    args = parser.parse_args()
    if args.jobs > 1 and len(args.models) > 1:
        raise SystemExit(run_jobs(args.models, args))
    summary = {}
    for name in args.models:
        summary.update(train_one(name, args.config, args.out_dir, Path(args.state_root),
                                 args.steps, args.fresh))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

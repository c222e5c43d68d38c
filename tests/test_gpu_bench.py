"""bench/gpu.py --smoke: the prepared GPU run works end to end (tiny sizes, on CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_smoke_mode_runs_every_section(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    for name in ("deep_only", "isdnet_like", "hgn"):
        assert result["inference"][f"{name}/fp32/b1"]["images_per_s"] > 0
    train = result["training"]
    assert "error" not in train, train
    from hgn_model.checkpoint import load_checkpoint

    _, cfg = load_checkpoint(train["checkpoint"])  # the checkpoint that comes back via $OUT
    assert cfg.arch == "hgn" and cfg.training["steps_done"] == train["steps"]
    assert cfg.weights_dtype == "float16" and "miou" in cfg.metrics
    pipe = result["pipeline"]
    assert pipe["executor_over_model_only"] > 0, pipe

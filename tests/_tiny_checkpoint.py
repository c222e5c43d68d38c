"""Test-only: a real, tiny HGN-package checkpoint (deep_only at width 0.125, ~0.9 MB).

For tests that go through ``hgn-pipeline`` itself (CLI, ``ray job submit``), where the model
is loaded from a checkpoint path rather than injected. Random weights, seeded.
"""

from __future__ import annotations

from pathlib import Path

CLASSES = [("background", (0, 0, 0, 0)), ("a", (255, 0, 0, 255)), ("b", (0, 255, 0, 255)),
           ("c", (0, 0, 255, 255))]


def tiny_checkpoint(stem: Path, seed: int = 0) -> Path:
    """Write ``<stem>.safetensors`` + ``<stem>.json``; returns the .safetensors path."""
    import torch

    from hgn_model import create_model, save_checkpoint
    from hgn_model.checkpoint import CheckpointConfig, ClassInfo, InputSpec

    torch.manual_seed(seed)
    model = create_model("deep_only", len(CLASSES), in_channels=3, width=0.125)
    cfg = CheckpointConfig(
        arch="deep_only",
        model_cfg={"width": 0.125},
        classes=[ClassInfo(name=n, color=c) for n, c in CLASSES],
        input=InputSpec(bands=3, mean=[0.5] * 3, std=[0.25] * 3),
    )
    save_checkpoint(model, cfg, stem)
    return stem.with_suffix(".safetensors")

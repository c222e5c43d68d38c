"""The model and recipe tables the README shows are rendered from the benchmark JSON as is."""

from __future__ import annotations

from bench.readme import render_model, render_recipe


def test_model_table_carries_budget_targets_spread_and_windowing() -> None:
    row = {"params_m": 3.9, "gmacs": 30.1, "latency_s": 1.234, "peak_forward_mib": 480.0,
           "miou_excl_0": 50.0, "miou": 52.0, "thin_iou": 40.0, "context_iou": 55.0,
           "plantation_iou": 51.5, "train_steps": 2000, "train_crop": 512,
           "train_context": 2048, "train_seconds": 4200.0, "train_machine": "x86_64, cpu"}
    text = render_model({
        "size": 2448, "eval_seeds": [2000], "machine": "m", "models": {"hgn": row},
        "targets": {"plantation_iou_ge_50": {"value": 51.5, "bound": 50.0, "met": True},
                    "latency_le_isdnet": {"value": 1.3, "bound": 1.2, "met": False}},
        "seed_spread": {"miou_excl_0": 0.8},
        "windowed": {"chunk": 2048, "halo": 256, "size": 4096, "label_agreement": 0.98,
                     "windowed_over_whole_time": 1.3, "pixels_read_over_scene": 1.56},
        "gpu": "not measured"})
    assert "| hgn | 3.9 | 30.1 | 1.23 | 480.0 | 50.0 | 52.0 | 40.0 | 55.0 | 51.5 | 2000 | " \
           "512 / 2048 | 70.0 |" in text
    assert "`plantation_iou_ge_50`: 51.5 vs bound 50.0: **met**" in text
    assert "`latency_le_isdnet`: 1.3 vs bound 1.2: **missed**" in text
    assert "miou_excl_0 0.8" in text and "label agreement 0.98" in text
    assert "trained on x86_64, cpu" in text


def test_recipe_table_lists_cost_ratios_and_variants() -> None:
    text = render_recipe({"threads": 1, "repeats": 7, "steps": 300,
                          "cost": {"hgn": {"today_s": 0.4, "recipe_s": 0.7, "ratio": 1.75}},
                          "quality": {"recipe": {"val_miou": 36.6, "val_miou_excl_0": 31.4,
                                                 "thin_iou": 0.1, "context_iou": 43.2,
                                                 "plantation_iou": 17.9}}})
    assert "| hgn | 0.4 | 0.7 | 1.75 |" in text
    assert "| recipe | 36.6 | 31.4 | 0.1 | 43.2 | 17.9 |" in text

"""bench/readme.py copies benchmark results into the README's marked sections, and only there."""

from __future__ import annotations

import json
from pathlib import Path

from bench.readme import update_readme


def test_sections_are_rewritten_from_results_and_the_rest_is_kept(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "faults.json").write_text(json.dumps({
        "config": {"scenes": 2, "size": 1024, "rate": 0.05, "repeats": 2},
        "median_wall_s": {"clean": 10.0, "flaky": 12.5},
        "ratios": {"wall_flaky_over_clean": 1.25},
        "runs": {"flaky": [{"storage_retries": 7, "io_retries": 1}]},
        "all_runs_ok": True, "flaky_bit_identical_to_clean": True,
    }))
    (results / "scaling.json").write_text(json.dumps({
        "runs": {"1x": {"scenes": 2, "wall_s": 10, "mpx_s": 1.0, "peak_rss_driver_mib": 160,
                        "peak_rss_actors_mib": 900, "peak_rss_total_mib": 1500}},
        "ratios": {"wall_4x_over_1x": 4.9}, "targets_met": {"wall_4x_over_1x <= 4.4": False},
    }))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench-faults:start -->\nold\n<!-- bench-faults:end -->\n"
                      "middle\n<!-- bench-scaling:start -->\n<!-- bench-scaling:end -->\n"
                      "<!-- bench-model:start -->\nkept: no model.json\n<!-- bench-model:end -->\n")
    assert update_readme(readme, results) == ["scaling", "faults"]
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and "middle" in text
    assert "ratio **1.25**" in text and "retries counted in the flaky manifests: 8" in text
    assert "| 1x | 2 | 10 | 1.0 | 160 / 900 / 1500 |" in text
    assert "target `wall_4x_over_1x <= 4.4`: **missed**" in text
    assert "kept: no model.json" in text


def test_the_elastic_section_reports_every_actor_and_the_loss(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "elastic.json").write_text(json.dumps({
        "config": {"node": "1 CPU + 1 logical GPU", "units": 256, "batch_size": 2,
                   "delay_s_per_batch": 0.25},
        "growth": {"wall_s": 17.5, "executor_busy_fraction": 0.92, "actors": [
            {"joined_mid_run": False, "units": 128, "busy_fraction": 0.92,
             "node_join_to_first_unit_s": 0.46},
            {"joined_mid_run": True, "units": 30, "busy_fraction": 0.93,
             "node_join_to_first_unit_s": 1.97}]},
        "loss": {"loss_seen_after_s": 0.011, "recovered_after_s": 1.0, "units_redone": 4,
                 "wall_with_loss_s": 26.2, "wall_clean_s": 16.4,
                 "wall_loss_over_ideal_one_actor_left": 1.02, "bit_identical_to_clean": True},
    }))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench-elastic:start -->\n<!-- bench-elastic:end -->\n")
    assert update_readme(readme, results) == ["elastic"]
    text = readme.read_text()
    assert "| 2 | yes | 30 | 0.93 | 1.97 |" in text
    assert "4 units redone" in text and "bit-identical to the clean run: True" in text

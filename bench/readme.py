"""Refresh the README's benchmark sections from bench/results/*.json (last step of make bench).

    python bench/readme.py

Each section sits between ``<!-- bench-NAME:start -->`` and ``<!-- bench-NAME:end -->``; a
missing result file leaves its section as it is. Figures are copied, never edited by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render_pipeline(r: dict) -> str:
    ratios, cfg = r.get("ratios", {}), r.get("config", {})

    def row(label: str, key: str, target: str, ok: Callable[[float], bool] | None) -> str:
        v = ratios.get(key)
        verdict = "-" if ok is None or v is None else _met(ok(v))
        return f"| {label} | {target} | {v if v is not None else 'n/a'} | {verdict} |"

    lines = [
        f"_{cfg.get('scenes_1x')} scenes of {cfg.get('size')}^2 (4x = 4 times the scenes), "
        f"chunk {cfg.get('chunk')} + halo {cfg.get('halo')}, {cfg.get('cpus')} CPUs, "
        f"repeat {cfg.get('repeat', 1)}._",
        "",
        "| ratio | target | measured | |",
        "|---|---|---|---|",
        row("pipeline / model-only forward (Mpx/s)", "pipeline_vs_model_mpx_s", ">= 0.85",
            lambda v: v >= 0.85),
        row("pipeline vs Ray Data map_batches (speed, start-up incl.)",
            "pipeline_vs_raydata_speed", ">= 1.2", lambda v: v >= 1.2),
        row("pipeline vs naive tile loop (speed, start-up incl.)", "pipeline_vs_naive_speed",
            "-", None),
        row("wall time 4x / 1x archive", "wall_4x_over_1x", "<= 4.4", lambda v: v <= 4.4),
        row("peak RSS 4x / 1x (driver + workers)", "peak_rss_4x_over_1x", "<= 1.2",
            lambda v: v <= 1.2),
        row("Dask-graph reads / in-actor reads (end to end)", "dask_reads_vs_actor_reads_speed",
            "-", None),
    ]
    if "busy_on_local" in ratios:  # the overlap part (2048 chunks, one 1-thread actor)
        for where, label in (("local", "local disk"), ("s3", "S3 server")):
            lines += [
                row(f"model busy fraction, overlap on, {label} (whole run)", f"busy_on_{where}",
                    ">= 0.9", lambda v: v >= 0.9),
                row(f"model busy fraction, overlap on, {label} (steady state)",
                    f"busy_steady_on_{where}", ">= 0.9", lambda v: v >= 0.9),
                row(f"model busy fraction, overlap off, {label} (steady state)",
                    f"busy_steady_off_{where}", "-", None),
                row(f"overlap gain, {label} (wall off / on)", f"overlap_gain_{where}", "-", None),
            ]
    return "\n".join(lines)


def render_scaling(r: dict) -> str:
    lines = ["| archive | scenes | wall (s) | Mpx/s | peak RSS driver / actors / total (MiB) |",
             "|---|---|---|---|---|"]
    for name, run in r.get("runs", {}).items():
        if "error" in run:
            lines.append(f"| {name} | failed | | | |")
            continue
        lines.append(
            f"| {name} | {run.get('scenes')} | {run.get('wall_s')} | {run.get('mpx_s')} | "
            f"{run.get('peak_rss_driver_mib')} / {run.get('peak_rss_actors_mib')} / "
            f"{run.get('peak_rss_total_mib')} |")
    lines.append("")
    lines += [f"- `{k}`: {v}" for k, v in r.get("ratios", {}).items()]
    lines += [f"- target `{k}`: {_met(ok)}" for k, ok in r.get("targets_met", {}).items()]
    return "\n".join(lines)


def render_faults(r: dict) -> str:
    med, cfg = r.get("median_wall_s", {}), r.get("config", {})
    retries = sum(x.get("storage_retries", 0) + x.get("io_retries", 0)
                  for x in r.get("runs", {}).get("flaky", []))
    return (
        f"Same job ({cfg.get('scenes')} scenes of {cfg.get('size')}^2 on a real S3 server), "
        f"clean vs {100 * cfg.get('rate', 0):.0f}% injected S3 faults, alternating "
        f"{cfg.get('repeats')} times: median wall {med.get('clean')} s vs {med.get('flaky')} s, "
        f"ratio **{r.get('ratios', {}).get('wall_flaky_over_clean')}**; retries counted in the "
        f"flaky manifests: {retries}; every run ok: {r.get('all_runs_ok')}; flaky outputs "
        f"bit-identical to clean: {r.get('flaky_bit_identical_to_clean')}."
    )


def render_model(r: dict) -> str:
    rows = ["| model | params (M) | GMACs | CPU latency (s) | peak fwd mem (MiB) | mIoU excl. 0 "
            "| mIoU all | thin IoU | context IoU | plantation IoU | steps | crop / context "
            "| train wall (min) |", "|" + "---|" * 13]
    for name, m in r["models"].items():
        wall = m.get("train_seconds")
        rows.append(
            f"| {name} | {m['params_m']} | {m['gmacs']} | {m['latency_s']:.2f} | "
            f"{m['peak_forward_mib']} | {m['miou_excl_0']} | {m['miou']} | {m['thin_iou']} | "
            f"{m['context_iou']} | {m.get('plantation_iou')} | {m.get('train_steps')} | "
            f"{m.get('train_crop')} / {m.get('train_context')} | "
            f"{'-' if wall is None else round(wall / 60, 1)} |")
    machines = sorted({m.get("train_machine") for m in r["models"].values()
                       if m.get("train_machine")})
    lines = [f"_{r['size']}x{r['size']}, eval seeds {r['eval_seeds']}, {r['machine']}; trained "
             f"on {', '.join(machines) or 'n/a'}._", "", *rows, "", "Targets (held-out seeds):",
             ""]
    for key, t in r.get("targets", {}).items():
        lines.append(f"- `{key}`: {t['value']} vs bound {t['bound']}: "
                     + ("**met**" if t["met"] else "**missed**"))
    if r.get("seed_spread"):
        spread = ", ".join(f"{k} {v}" for k, v in r["seed_spread"].items())
        lines.append(f"- seed-to-seed spread of hgn (|seed 0 - seed 1|): {spread}")
    w = r.get("windowed")
    if w:
        lines.append(f"- windowed ({w['chunk']} + {w['halo']} halo) vs whole-scene hgn on "
                     f"{w['size']}^2: label agreement {w['label_agreement']}, time ratio "
                     f"{w['windowed_over_whole_time']} ({w['pixels_read_over_scene']}x the "
                     "scene's pixels read)")
    gpu = r.get("gpu")
    lines.append(f"- GPU fp16/bf16: {gpu if isinstance(gpu, str) else json.dumps(gpu)}")
    return "\n".join(lines)


def render_recipe(r: dict) -> str:
    lines = []
    if r.get("cost"):
        lines += [f"_Seconds per training step, {r.get('threads')} thread, median of "
                  f"{r.get('repeats')}, data loading included._", "",
                  "| model | format-1 recipe (2 x 512^2) | context recipe (2048^2 + 2 x 512^2) "
                  "| ratio |", "|---|---|---|---|"]
        for name, c in r["cost"].items():
            lines.append(f"| {name} | {c['today_s']} | {c['recipe_s']} | {c['ratio']} |")
    if r.get("quality"):
        lines += ["", f"_HGN after {r.get('steps')} steps on 4 benchmark scenes, val seeds "
                  "500/501 (IoU %); one choice switched back per row._", "",
                  "| variant | val mIoU | excl. 0 | thin | context | plantation |",
                  "|---|---|---|---|---|---|"]
        for name, q in r["quality"].items():
            lines.append(f"| {name} | {q['val_miou']} | {q['val_miou_excl_0']} | "
                         f"{q['thin_iou']} | {q['context_iou']} | {q['plantation_iou']} |")
    return "\n".join(lines)


def render_elastic(r: dict) -> str:
    cfg, g, lo = r.get("config", {}), r.get("growth", {}), r.get("loss", {})
    lines = [
        f"_Fake cluster (head 0 CPU, nodes of {cfg.get('node')}), {cfg.get('units')} units "
        f"in batches of {cfg.get('batch_size')}, a stand-in model sleeping "
        f"{cfg.get('delay_s_per_batch')} s per batch (no CPU): the pool, not the machine._",
        "",
        f"Growth 1 -> 2 -> 4 nodes during one run (max_actors 4), wall {g.get('wall_s')} s, "
        f"busy {g.get('executor_busy_fraction')}:",
        "",
        "| actor | joined mid-run | units | busy fraction | node up -> first unit (s) |",
        "|---|---|---|---|---|",
    ]
    for k, a in enumerate(g.get("actors", []), 1):
        lines.append(f"| {k} | {'yes' if a['joined_mid_run'] else 'no'} | {a['units']} | "
                     f"{a['busy_fraction']} | {a['node_join_to_first_unit_s']} |")
    lines += [
        "",
        f"Node lost after 40 % of the units (2 nodes): seen after {lo.get('loss_seen_after_s')} "
        f"s, its in-flight batches written by the other actor {lo.get('recovered_after_s')} s "
        f"after the loss; {lo.get('units_redone')} units redone; wall "
        f"{lo.get('wall_with_loss_s')} s vs {lo.get('wall_clean_s')} s clean "
        f"({lo.get('wall_loss_over_ideal_one_actor_left')}x the ideal with one actor left); "
        f"bit-identical to the clean run: {lo.get('bit_identical_to_clean')}.",
    ]
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[dict], str]] = {
    "elastic": render_elastic,
    "model": render_model,
    "recipe": render_recipe,
    "pipeline": render_pipeline,
    "scaling": render_scaling,
    "faults": render_faults,
}


def update_readme(readme: Path = ROOT / "README.md", results: Path = RESULTS) -> list[str]:
    """Rewrite every section whose results exist; returns the names refreshed."""
    text = readme.read_text()
    done = []
    for name, render in SECTIONS.items():
        path = results / f"{name}.json"
        start, end = f"<!-- bench-{name}:start -->", f"<!-- bench-{name}:end -->"
        if not path.exists() or start not in text or end not in text:
            continue
        pre, rest = text.split(start, 1)
        _, post = rest.split(end, 1)
        text = f"{pre}{start}\n{render(json.loads(path.read_text()))}\n{end}{post}"
        done.append(name)
    readme.write_text(text)
    return done


if __name__ == "__main__":
    print("refreshed README sections:", ", ".join(update_readme()) or "none")

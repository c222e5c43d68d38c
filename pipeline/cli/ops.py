"""CLI commands of the operations side: ``hgn-pipeline nightly`` and ``hgn-pipeline query``.

Mounted on the main app in :mod:`pipeline.cli.main`. Thin: parse options, call
:mod:`pipeline.query`, print. Storage credentials come from the ``s3`` section of
``--config`` or the usual AWS_* environment variables, never from the command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli._common import (
    AddressOpt,
    AllowOpt,
    BboxOpt,
    BoxOpt,
    ClipOpt,
    ConfigOpt,
    InputOpt,
    LevelOpt,
    LocalOpt,
    NumCpusOpt,
    OutputOpt,
    ProgressOpt,
    RunConfigOpt,
    RunIdOpt,
    SceneOpt,
    SetOpt,
    command_errors,
    numbers,
    run_body,
    session_factory,
    storage_options,
    store,
)
from pipeline.lifecycle import handle_signals
from pipeline.parsing import check_num_cpus

__all__ = ["nightly_cmd", "query_app", "verify_cmd"]

query_app = typer.Typer(
    name="query",
    help="Inspect an output root: scenes, metadata, windows, class areas, previews.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@query_app.command("scenes")
def scenes_cmd(output: OutputOpt, config: ConfigOpt = None,
               as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False
               ) -> None:
    """List scenes with status and provenance."""

    def body() -> None:
        rows = store(output, config).list_scenes()
        if as_json:
            for r in rows:
                typer.echo(json.dumps(r.to_dict()))
            return
        table = Table("scene", "status", "size", "levels", "arch", "checkpoint", "input fp",
                      "finished", "geo")
        for r in rows:
            size = f"{r.height} x {r.width}" if r.height else "-"
            table.add_row(r.scene_id, r.status + (f" ({r.error})" if r.error else ""), size,
                          str(r.levels or "-"), r.arch or "-", (r.checkpoint_sha256 or "-")[:12],
                          (r.input_fingerprint or "-")[:12], r.finished or "-",
                          "yes" if r.georeferenced else "no")
        Console().print(table)

    run_body(body)


@query_app.command("show")
def show_cmd(output: OutputOpt, scene: SceneOpt, config: ConfigOpt = None) -> None:
    """One scene's metadata (shape, levels, classes, georeference, provenance) as JSON."""
    run_body(lambda: typer.echo(
        json.dumps(store(output, config).scene(scene).metadata(), indent=1)))


@query_app.command("read")
def read_cmd(
    output: OutputOpt,
    scene: SceneOpt,
    out: Annotated[Path, typer.Option("--out", help="Write .npy (numpy) or .nc (xarray).")],
    box: BoxOpt = None,
    bbox: BboxOpt = None,
    level: LevelOpt = 0,
    layer: Annotated[str, typer.Option(help="segmentation | confidence")] = "segmentation",
    clip: ClipOpt = False,
    allow_incomplete: AllowOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Read a window at any pyramid level into a .npy or a .nc (with coordinates) file."""

    def body() -> None:
        view = store(output, config).scene(scene)
        kw = dict(box=numbers(box, "--box", int), bbox=numbers(bbox, "--bbox", float),
                  level=level, layer=layer, clip=clip, allow_incomplete=allow_incomplete)
        if out.suffix == ".npy":
            data = view.read(**kw)
            out.parent.mkdir(parents=True, exist_ok=True)
            import numpy as np

            np.save(out, data)
        elif out.suffix == ".nc":
            da = view.read_xarray(**kw)
            out.parent.mkdir(parents=True, exist_ok=True)
            da.to_netcdf(out, engine="scipy")
            data = da.values
        else:
            raise typer.BadParameter(f"--out {str(out)!r}: use a .npy or .nc file name")
        typer.echo(f"{out}: {layer} level {level}, {data.shape[0]} x {data.shape[1]} {data.dtype}")

    run_body(body)


@query_app.command("stats")
def stats_cmd(
    output: OutputOpt,
    scene: SceneOpt,
    box: BoxOpt = None,
    bbox: BboxOpt = None,
    level: Annotated[
        int, typer.Option("--level", "-l", help="0: exact; k > 0: fast estimate from level k.")
    ] = 0,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | csv")] = "table",
    clip: ClipOpt = False,
    allow_incomplete: AllowOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Pixel counts and areas per class for a scene or a window.

    Refused when chunks of the window are missing, damaged or not computed yet (the error
    names them); --allow-incomplete counts the others and reports the coverage.
    """

    def body() -> None:
        if fmt not in ("table", "json", "csv"):
            raise typer.BadParameter(f"--format {fmt!r}: use table, json or csv")
        st = store(output, config).scene(scene).class_stats(
            box=numbers(box, "--box", int), bbox=numbers(bbox, "--bbox", float),
            level=level, clip=clip, allow_incomplete=allow_incomplete)
        if fmt == "json":
            typer.echo(st.to_json())
        elif fmt == "csv":
            typer.echo(st.to_csv(), nl=False)
        else:
            kind = "exact" if st.exact else f"estimate from level {st.level}"
            geo = st.area_unit is not None
            cov = [] if st.coverage is None else ["coverage %"]
            cols = ["label", "class", "pixels", *(["area (ha)", "area (km2)"] if geo else []),
                    "%", *cov]
            title = f"{st.scene_id} box {list(st.box)} ({kind}" + (
                "; geodesic areas on the ellipsoid)" if geo else "; pixels only)")
            if st.coverage is not None:
                title += (f", {100 * st.coverage:.2f}% of the window counted, "
                          f"{len(st.left_out)} chunk(s) left out")
            table = Table(*cols, title=title)
            for r in st.rows:
                area = [f"{r.area / 1e4:,.4f}", f"{r.area / 1e6:,.6f}"] if geo and r.area \
                    is not None else []
                extra = [] if r.coverage is None else [f"{100 * r.coverage:.2f}"]
                table.add_row(str(r.label), r.name, f"{r.pixels:,.0f}", *area,
                              f"{100 * r.fraction:.2f}", *extra)
            Console().print(table)
            if st.note:
                Console(stderr=True).print(st.note, highlight=False)

    run_body(body)


@query_app.command("preview")
def preview_cmd(
    output: OutputOpt,
    scene: SceneOpt,
    png: Annotated[Path, typer.Option("--png", help="PNG file to write.")],
    box: BoxOpt = None,
    bbox: BboxOpt = None,
    max_size: Annotated[int, typer.Option(help="Longest side of the PNG in pixels.")] = 1024,
    source: Annotated[bool, typer.Option(help="Blend the labels over the input image.")] = False,
    alpha: Annotated[float, typer.Option(help="Label opacity over the source (0..1).")] = 0.5,
    clip: ClipOpt = False,
    config: ConfigOpt = None,
) -> None:
    """PNG preview coloured by the class colours, optionally over the source image."""

    def body() -> None:
        path = store(output, config).scene(scene).preview(
            png, box=numbers(box, "--box", int), bbox=numbers(bbox, "--bbox", float),
            max_size=max_size, source=source, alpha=alpha, clip=clip)
        typer.echo(str(path))

    run_body(body)


# ------------------------------------------------------------------------------- nightly


def nightly_cmd(
    input: InputOpt,
    output: Annotated[str, typer.Option("--output", "-o", help="Output root of earlier runs.")],
    config: RunConfigOpt = None,
    set_: SetOpt = None,
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    local: LocalOpt = False,
    run_id: RunIdOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Process only new or changed scenes since the last run; append to the run history.

    Exit code 0: all good or nothing to do; 1: a scene failed or is unreadable; 2: refused
    (output locked by another run, other model/settings without --set overwrite=true, bad
    config).
    """
    console = Console(stderr=True)
    from pipeline.config import load_config
    from pipeline.ops.nightly import nightly
    from pipeline.parsing import parse_overrides

    with command_errors(console):
        check_num_cpus(num_cpus)
        cfg = load_config(config, parse_overrides(set_))
        session = session_factory(local, address, num_cpus, cfg.connect_timeout_s)
        with handle_signals():
            report = nightly(input, output, cfg, run_id=run_id, session=session,
                             progress=progress, console=console, summary=True)
    console.print(report.line(), highlight=False)
    raise typer.Exit(report.exit_code)


# -------------------------------------------------------------------------------- verify


def verify_cmd(
    output: OutputOpt,
    scene: Annotated[str | None, typer.Option("--scene", "-s", help="Only this scene.")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Recompute exactly the missing or "
                                         "damaged chunks (bit-identical to a clean run).")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Run config YAML: its "
                                                "s3 section; with --repair also overrides "
                                                "(e.g. a moved checkpoint).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="With --repair: override one "
                                                   "config field, FIELD=VALUE.")] = None,
    address: Annotated[str | None, typer.Option("--address", help="With --repair: Ray cluster "
                                                "(default: a private local Ray).")] = None,
    num_cpus: Annotated[int | None, typer.Option("--num-cpus", help="CPUs of the private "
                                                 "local Ray.")] = None,
    local: Annotated[bool, typer.Option("--local", help="With --repair: no Ray, recompute in "
                                        "this process.")] = False,
) -> None:
    """Re-hash every chunk the ledger recorded; report missing or damaged chunks by name.

    Exit code 0: every chunk holds what was recorded (or was repaired); 1: missing or damaged
    chunks remain; 2: refused (no such output or scene, bad config).
    """
    console = Console(stderr=True)
    from pipeline.ops.verify import repair as repair_scenes
    from pipeline.ops.verify import verify
    from pipeline.parsing import load_yaml_mapping, parse_overrides

    with command_errors(console):
        check_num_cpus(num_cpus)
        so = storage_options(config)
        report = verify(output, so, scene=scene)
        if repair and report.damaged:
            overrides = {**(load_yaml_mapping(config) if config else {}),
                         **parse_overrides(set_)}
            timeout = float(overrides.get("connect_timeout_s") or 30.0)
            session = session_factory(local, address, num_cpus, timeout)
            with handle_signals():
                fixed = repair_scenes(output, report.damaged, so, overrides=overrides,
                                      session=session)
            after = verify(output, so, scene=scene)
            after.repaired, after.not_repaired = fixed.repaired, fixed.not_repaired
            report = after
    for line in report.lines():
        typer.echo(line)
    if report.damaged and not repair:
        typer.echo(f"repair with: hgn-pipeline verify --output {output}"
                   + (f" --scene {scene}" if scene else "") + " --repair")
    raise typer.Exit(report.exit_code)

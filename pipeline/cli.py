"""``hgn-pipeline``: the command line. Thin: each command parses options and calls a module.

Commands: ``run`` (segment an archive), ``export`` (labels as a COG). Other commands
(``train``, ``evaluate``, ``nightly``, ``query``) are added by their owners as small functions
in their own section below.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from pipeline.cliparse import OneLineErrors
from pipeline.errors import PipelineError, RunInterrupted
from pipeline.lifecycle import handle_signals, interrupted
from pipeline.parsing import check_num_cpus, one_line, parse_overrides

__all__ = ["app", "parse_overrides"]

app = typer.Typer(
    cls=OneLineErrors,  # click's usage errors: one `error:` line naming the option
    name="hgn-pipeline",
    help="Archive-scale segmentation of ultra-high-resolution imagery with HGN "
    "(Ray + Dask + OME-Zarr).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Archive-scale segmentation of ultra-high-resolution imagery with HGN."""


def _fail(console: Console, exc: BaseException, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/] {one_line(exc)}", highlight=False, soft_wrap=True,
                  markup=True)
    return typer.Exit(code)


# ------------------------------------------------------------------------------------ run


@app.command("run")
def run_cmd(
    input: Annotated[
        str, typer.Option("--input", "-i", help="Archive URL: local path, file:// or s3://b/p.")
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Output root: one <scene>.ome.zarr per scene + _hgn/manifest."
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Run config YAML (fields: see pipeline/config.py)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one config field, FIELD=VALUE (repeatable)."),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Ray cluster: auto | HOST:PORT | ray://HOST:PORT. Omitted: a private local Ray "
            "on 127.0.0.1, stopped at the end.",
        ),
    ] = None,
    num_cpus: Annotated[
        int | None,
        typer.Option("--num-cpus", help="CPUs of the private local Ray (default: all cores)."),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="No Ray: run in this process (small jobs, debugging), with threads_per_actor "
            "torch threads: the same bytes as Ray actors at that setting.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (scenes, windows, bytes, time estimate); write nothing.",
        ),
    ] = False,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Run id (default: time-based).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Segment every scene of an archive into OME-Zarr label mosaics.

    Resumable: the output's ledger records every finished chunk, so re-running the same command
    after a crash redoes only what is missing; a second run on the same output is refused while
    the first holds its lock.
    """
    console = Console(stderr=True)
    from pipeline.config import load_config
    from pipeline.dryrun import dry_run as plan_only
    from pipeline.execute import ray_session
    from pipeline.resume import ResumableRun
    from pipeline.run import RunRequest

    try:
        check_num_cpus(num_cpus)
        cfg = load_config(config, parse_overrides(set_))
        if dry_run:
            if address is None:
                ctx: Any = contextlib.nullcontext()
            else:
                ctx = ray_session(address, connect_timeout_s=cfg.connect_timeout_s)
            with ctx:
                plan_only(input, cfg).render(console)
            return
        # Ray starts only when there is work to do (a no-op rerun costs no cluster).
        session = None if local else (lambda: ray_session(
            address, num_cpus=num_cpus, connect_timeout_s=cfg.connect_timeout_s))
        request = RunRequest(input, output, cfg, run_id=run_id, progress=progress,
                             console=console, summary=True, session=session)
        with handle_signals(), ResumableRun(request) as rr:
            rr.plan()
            result = rr.result(rr.execute())
        console.print(result.describe(), highlight=False, soft_wrap=True)
    except (PipelineError, ValueError, OSError) as e:
        raise _fail(console, e) from None
    except RunInterrupted as e:
        raise _fail(console, interrupted(e), 128 + e.signum) from None
    raise typer.Exit(result.exit_code)


# ------------------------------------------------------------------------- export (formats)


@app.command("export")
def export_cmd(
    output: Annotated[str, typer.Option("--output", "-o", help="Output root (path or s3://).")],
    scene: Annotated[str, typer.Option("--scene", "-s", help="Scene id (see `query scenes`).")],
    path: Annotated[str, typer.Option("--path", "-p", help="File to write (path or s3://).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: cog.")] = "cog",
    what: Annotated[
        str, typer.Option("--what", help="segmentation (labels) | confidence")
    ] = "segmentation",
    box: Annotated[
        str | None, typer.Option("--box", help="Level-0 pixel window: y0,y1,x0,x1 (half-open).")
    ] = None,
    bbox: Annotated[
        str | None,
        typer.Option("--bbox", help="Geographic window in the scene's CRS: xmin,ymin,xmax,ymax."),
    ] = None,
    clip: Annotated[bool, typer.Option("--clip", help="Clip a window that sticks out.")] = False,
    compress: Annotated[str, typer.Option(help="deflate | zstd")] = "deflate",
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Run config YAML; only its `s3` section is used."),
    ] = None,
) -> None:
    """Write a scene's labels (or confidence) as a Cloud-Optimized GeoTIFF for GIS tools.

    The COG keeps the input's CRS and pixel grid, nodata 0, the class colours as a colour
    table and class names in its metadata, 512 px tiles and mode-resampled overviews.
    """
    from pipeline.export import FORMATS, export_cog
    from pipeline.ops_cli import _numbers, _storage_options
    from pipeline.query import OutputStore

    console = Console(stderr=True)
    try:
        if fmt not in FORMATS:
            raise typer.BadParameter(f"--format {fmt!r}: supported: {', '.join(FORMATS)}")
        so = _storage_options(config)
        view = OutputStore(output, so).scene(scene)
        result = export_cog(view, path, what=what, box=_numbers(box, "--box", int),
                            bbox=_numbers(bbox, "--bbox", float), clip=clip,
                            compress=compress, storage_options=so)
    except (PipelineError, ValueError, OSError) as e:
        raise _fail(console, e) from None
    console.print(result.describe(), highlight=False, soft_wrap=True)
    from pipeline.stac import record_export

    try:  # the COG becomes an asset of the scene's STAC item
        record_export(output, scene, result, so)
    except (PipelineError, OSError) as e:  # a read-only output: the export itself is fine
        console.print(f"[yellow]warning:[/] the STAC catalog was not updated: {e}",
                      highlight=False, soft_wrap=True)


# ------------------------------------------------------------------- query, nightly (ops)
# Owned by the ops helper; the commands live in pipeline/ops_cli.py.
from pipeline.ops_cli import nightly_cmd, query_app, verify_cmd  # noqa: E402

app.command("nightly")(nightly_cmd)
app.command("verify")(verify_cmd)
app.add_typer(query_app, name="query")


# ------------------------------------------------------------- serve, diff, query changes
# The results side (web viewer, change maps); the commands live in pipeline/viewer_cli.py.
from pipeline.viewer_cli import changes_cmd, diff_cmd, serve_cmd, stac_cmd  # noqa: E402

app.command("serve")(serve_cmd)
app.command("diff")(diff_cmd)
app.command("stac")(stac_cmd)
query_app.command("changes")(changes_cmd)


# ------------------------------------------------------------------- train, evaluate (model)
# The model package owns these; see hgn_model/cli.py.
from hgn_model.cli import evaluate_cmd, train_cmd  # noqa: E402

app.command("train")(train_cmd)
app.command("evaluate")(evaluate_cmd)


if __name__ == "__main__":  # pragma: no cover
    app()

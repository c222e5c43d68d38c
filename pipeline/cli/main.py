"""``hgn-pipeline``: the command line. Thin: each command parses options and calls a module.

Commands here: ``run`` (segment an archive), ``export`` (labels as a COG). The others are
mounted at the end from their modules: :mod:`pipeline.cli.ops` (``nightly``, ``verify``,
``query``), :mod:`pipeline.cli.results` (``serve``, ``diff``, ``stac``, ``query changes``) and
:mod:`hgn_model.cli` (``train``, ``evaluate``).
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import typer
from rich.console import Console

from pipeline.cli._common import (
    AddressOpt,
    BboxOpt,
    BoxOpt,
    ClipOpt,
    ConfigOpt,
    InputOpt,
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
    session_factory,
    storage_options,
)
from pipeline.cli._usage import OneLineErrors
from pipeline.errors import PipelineError
from pipeline.lifecycle import handle_signals
from pipeline.parsing import check_num_cpus, parse_overrides

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


# ------------------------------------------------------------------------------------ run


@app.command("run")
def run_cmd(
    input: InputOpt,
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Output root: one <scene>.ome.zarr per scene + _hgn/manifest."
        ),
    ],
    config: RunConfigOpt = None,
    set_: SetOpt = None,
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    local: LocalOpt = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (scenes, windows, bytes, time estimate); write nothing.",
        ),
    ] = False,
    run_id: RunIdOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Segment every scene of an archive into OME-Zarr label mosaics.

    Resumable: the output's ledger records every finished chunk, so re-running the same command
    after a crash redoes only what is missing; a second run on the same output is refused while
    the first holds its lock.
    """
    console = Console(stderr=True)
    from pipeline.config import load_config
    from pipeline.run import RunRequest
    from pipeline.run.resume import ResumableRun

    with command_errors(console):
        check_num_cpus(num_cpus)
        cfg = load_config(config, parse_overrides(set_))
        if dry_run:
            _dry_run(input, cfg, address, console)
            return
        request = RunRequest(input, output, cfg, run_id=run_id, progress=progress,
                             console=console, summary=True,
                             session=session_factory(local, address, num_cpus,
                                                     cfg.connect_timeout_s))
        with handle_signals(), ResumableRun(request) as rr:
            rr.plan()
            result = rr.result(rr.execute())
        console.print(result.describe(), highlight=False, soft_wrap=True)
    raise typer.Exit(result.exit_code)


def _dry_run(input: str, cfg: Any, address: str | None, console: Console) -> None:
    """Render the plan; a cluster is joined only when ``--address`` names one (its sizes)."""
    from pipeline.execute import ray_session
    from pipeline.run.dryrun import dry_run as plan_only

    ctx: Any = contextlib.nullcontext()
    if address is not None:
        ctx = ray_session(address, connect_timeout_s=cfg.connect_timeout_s)
    with ctx:
        plan_only(input, cfg).render(console)


# ------------------------------------------------------------------------- export (formats)


@app.command("export")
def export_cmd(
    output: OutputOpt,
    scene: SceneOpt,
    path: Annotated[str, typer.Option("--path", "-p", help="File to write (path or s3://).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: cog.")] = "cog",
    what: Annotated[
        str, typer.Option("--what", help="segmentation (labels) | confidence")
    ] = "segmentation",
    box: BoxOpt = None,
    bbox: BboxOpt = None,
    clip: ClipOpt = False,
    compress: Annotated[str, typer.Option(help="deflate | zstd")] = "deflate",
    config: ConfigOpt = None,
) -> None:
    """Write a scene's labels (or confidence) as a Cloud-Optimized GeoTIFF for GIS tools.

    The COG keeps the input's CRS and pixel grid, nodata 0, the class colours as a colour
    table and class names in its metadata, 512 px tiles and mode-resampled overviews.
    """
    from pipeline.io.export import FORMATS, export_cog
    from pipeline.query import OutputStore

    console = Console(stderr=True)
    with command_errors(console):
        if fmt not in FORMATS:
            raise typer.BadParameter(f"--format {fmt!r}: supported: {', '.join(FORMATS)}")
        so = storage_options(config)
        view = OutputStore(output, so).scene(scene)
        result = export_cog(view, path, what=what, box=numbers(box, "--box", int),
                            bbox=numbers(bbox, "--bbox", float), clip=clip,
                            compress=compress, storage_options=so)
    console.print(result.describe(), highlight=False, soft_wrap=True)
    from pipeline.ops.stac import record_export

    try:  # the COG becomes an asset of the scene's STAC item
        record_export(output, scene, result, so)
    except (PipelineError, OSError) as e:  # a read-only output: the export itself is fine
        console.print(f"[yellow]warning:[/] the STAC catalog was not updated: {e}",
                      highlight=False, soft_wrap=True)


# ---------------------------------------------------------- query, nightly, verify (ops)
from pipeline.cli.ops import nightly_cmd, query_app, verify_cmd  # noqa: E402

app.command("nightly")(nightly_cmd)
app.command("verify")(verify_cmd)
app.add_typer(query_app, name="query")


# ------------------------------------------------------------- serve, diff, query changes
# The results side (web viewer, change maps, STAC).
from pipeline.cli.results import changes_cmd, diff_cmd, serve_cmd, stac_cmd  # noqa: E402

app.command("serve")(serve_cmd)
app.command("diff")(diff_cmd)
app.command("stac")(stac_cmd)
query_app.command("changes")(changes_cmd)


# ------------------------------------------------------------------- train, evaluate (model)
# The model package owns these; see hgn_model/cli.py.
from hgn_model.cli import evaluate_cmd, train_cmd  # noqa: E402

app.command("train")(train_cmd)
app.command("evaluate")(evaluate_cmd)



"""CLI commands of the results side: ``serve`` (web viewer), ``diff`` and ``query changes``.

Mounted on the main app in :mod:`pipeline.cli.main`. Thin: parse options, call
:mod:`pipeline.serve`, :mod:`pipeline.ops.diff`, print. Credentials come from the ``s3`` section of
``--config`` or AWS_* variables, as for ``query``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli._common import ConfigOpt, OutputOpt, SceneOpt, run_body, storage_options

if TYPE_CHECKING:
    from pipeline.change import ChangeMatrix

__all__ = ["changes_cmd", "diff_cmd", "serve_cmd", "stac_cmd"]


def _print_matrix(m: ChangeMatrix) -> None:
    s = m.summary()
    geo = m.area_unit is not None
    table = Table("from", "to", "pixels", *(["area (ha)"] if geo else []), "changed",
                  title=f"{m.scene_id} against {m.against}")
    for p in m.pairs()[:40]:
        area = [f"{p['area'] / 1e4:,.4f}"] if geo else []
        table.add_row(p["from_name"], p["to_name"], f"{p['pixels']:,.0f}", *area,
                      "yes" if p["changed"] else "")
    Console().print(table)
    area = f", {s['area_changed'] / 1e4:,.4f} ha" if geo else ""
    typer.echo(f"{m.scene_id}: {s['pixels_changed']:,.0f} of {s['pixels_valid']:,.0f} valid "
               f"pixels changed ({100 * s['changed_fraction']:.2f} %{area}) against "
               f"{m.against}")
    if m.note:
        Console(stderr=True).print(m.note, highlight=False)


def _show_matrix(get: Callable[[], ChangeMatrix], fmt: str) -> None:
    """Print the change matrix ``get()`` returns as a table or as JSON, errors as one line."""

    def body() -> None:
        if fmt not in ("table", "json"):
            raise typer.BadParameter(f"--format {fmt!r}: use table or json")
        m = get()
        if fmt == "json":
            typer.echo(m.to_json())
        else:
            _print_matrix(m)

    run_body(body)


def diff_cmd(
    output: OutputOpt,
    scene: SceneOpt,
    against: Annotated[str, typer.Option(
        "--against", help="A run id whose labels were kept (`query changes` lists them) or "
        "another output root holding the same scene.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json")] = "table",
    config: ConfigOpt = None,
) -> None:
    """Change map of a scene against earlier labels: writes labels/change, prints the matrix.

    The layer lands beside the labels in the scene's OME-Zarr (uint16: 0 = no data on either
    side, else previous * 256 + current); the from -> to matrix (pixels, m2) is recorded
    with it and printed.
    """
    from pipeline.ops.diff import diff_scene

    _show_matrix(lambda: diff_scene(output, scene, against, storage_options(config)), fmt)


def changes_cmd(
    output: OutputOpt,
    scene: SceneOpt,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json")] = "table",
    config: ConfigOpt = None,
) -> None:
    """The from -> to change matrix (pixels, m2) recorded with a scene's change layer."""
    from pipeline.ops.diff import read_changes
    from pipeline.query import OutputStore

    def matrix() -> ChangeMatrix:
        so = storage_options(config)
        return read_changes(OutputStore(output, so).scene(scene), so)

    _show_matrix(matrix, fmt)


def serve_cmd(
    output: OutputOpt,
    host: Annotated[str, typer.Option(help="Interface to bind (127.0.0.1: this machine only).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port, printed).")] = 8000,
    config: ConfigOpt = None,
) -> None:
    """Read-only web viewer over an output root: scenes on a map, legend, changes, history.

    Also serves the STAC catalog (/catalog.json) and the stores' zarr files, read-only.
    """
    from pipeline.serve import serve

    run_body(lambda: serve(output, host=host, port=port, storage_options=storage_options(config)))


def stac_cmd(output: OutputOpt, config: ConfigOpt = None) -> None:
    """Rebuild <output>/catalog.json and every scene's STAC item from the stores.

    Runs update the items of the scenes they write; this rebuilds all of them (outputs
    written before the catalog existed, or after scenes were deleted by hand).
    """
    from pipeline.ops.stac import update_catalog

    run_body(lambda: typer.echo(update_catalog(output, storage_options(config))))

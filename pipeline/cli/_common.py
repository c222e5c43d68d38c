"""What every ``hgn-pipeline`` command shares: option types, storage options, one error line."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from pipeline.errors import PipelineError
from pipeline.parsing import one_line

__all__ = [
    "AddressOpt", "AllowOpt", "BboxOpt", "BoxOpt", "ClipOpt", "ConfigOpt", "InputOpt",
    "LevelOpt", "LocalOpt", "NumCpusOpt", "OutputOpt", "ProgressOpt", "RunConfigOpt",
    "RunIdOpt", "SceneOpt", "SetOpt", "command_errors", "fail", "numbers", "run_body",
    "session_factory", "storage_options", "store",
]

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="Output root (path or s3://).")]
SceneOpt = Annotated[str, typer.Option("--scene", "-s", help="Scene id (see `query scenes`).")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Run config YAML; only its `s3` section is used."),
]
BoxOpt = Annotated[
    str | None, typer.Option("--box", help="Level-0 pixel box: y0,y1,x0,x1 (half-open).")
]
BboxOpt = Annotated[
    str | None,
    typer.Option("--bbox", help="Geographic box in the scene's CRS: xmin,ymin,xmax,ymax."),
]
LevelOpt = Annotated[int, typer.Option("--level", "-l", help="Pyramid level (0 = full res).")]
ClipOpt = Annotated[bool, typer.Option("--clip", help="Clip a box that sticks out of the scene.")]
AllowOpt = Annotated[bool, typer.Option(
    "--allow-incomplete", help="Answer from the chunks that are there when some are missing, "
    "damaged or not computed yet (reports their coverage); default: refuse, naming them.")]


# The options of the commands that run the model (run, nightly).
InputOpt = Annotated[
    str, typer.Option("--input", "-i", help="Archive URL: local path, file:// or s3://b/p.")
]
RunConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Run config YAML (fields: see pipeline/config.py)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one config field, FIELD=VALUE (repeatable)."),
]
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster: auto | HOST:PORT | ray://HOST:PORT. Omitted: "
                 "a private local Ray on 127.0.0.1, started only if there is work, stopped at "
                 "the end."),
]
NumCpusOpt = Annotated[
    int | None, typer.Option("--num-cpus", help="CPUs of the private local Ray (default: all).")
]
LocalOpt = Annotated[bool, typer.Option(
    "--local", help="No Ray: run in this process (small jobs, debugging), with "
    "threads_per_actor torch threads: the same bytes as Ray actors at that setting.")]
RunIdOpt = Annotated[str | None, typer.Option("--run-id", help="Run id (default: time-based).")]
ProgressOpt = Annotated[bool, typer.Option(help="Show progress bars.")]


def storage_options(config: Path | None) -> dict[str, Any]:
    from pydantic import ValidationError

    from pipeline.errors import ConfigError
    from pipeline.parsing import load_yaml_mapping
    from pipeline.storage import S3Options, storage_options_from

    s3 = None
    if config is not None:
        data = load_yaml_mapping(config)  # duplicate keys refused, as for `run`
        if data.get("s3") is not None:
            try:
                s3 = S3Options.model_validate(data["s3"])
            except ValidationError as exc:
                # Field and reason only: the input values may be credentials.
                why = "; ".join(
                    f"s3.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                )
                raise ConfigError(f"config file {str(config)!r}: {why}") from None
    return dict(storage_options_from(s3))


def numbers(text: str | None, what: str, cast: type) -> list[Any] | None:
    if text is None:
        return None
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = [cast(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise typer.BadParameter(f"{what}={text!r}: expected 4 comma-separated numbers")
    return values


def store(output: str, config: Path | None) -> Any:
    from pipeline.query import OutputStore

    return OutputStore(output, storage_options(config))


def run_body(fn: Callable[[], Any]) -> None:
    """Run a command body under :func:`command_errors` (one red line, exit code 2)."""
    with command_errors(Console(stderr=True)):
        fn()


def fail(console: Console, exc: BaseException, code: int = 2) -> typer.Exit:
    """Print ``exc`` as one red ``error:`` line; the ``typer.Exit`` to raise with ``code``."""
    console.print(f"[red]error:[/] {one_line(exc)}", highlight=False, soft_wrap=True,
                  markup=True)
    return typer.Exit(code)


@contextlib.contextmanager
def command_errors(console: Console) -> Iterator[None]:
    """A command body: pipeline errors exit 2 with one line; a signal exits 128 + its number."""
    from pipeline.errors import RunInterrupted
    from pipeline.lifecycle import interrupted

    try:
        yield
    except (PipelineError, ValueError, OSError) as exc:
        raise fail(console, exc) from None
    except RunInterrupted as exc:
        raise fail(console, interrupted(exc), 128 + exc.signum) from None


def session_factory(local: bool, address: str | None, num_cpus: int | None,
                    connect_timeout_s: float) -> Callable[[], Any] | None:
    """How a run gets its Ray: none with ``--local``; else connected (or started) on first use.

    A callable, so that Ray starts only when there is work (a no-op rerun costs no cluster).
    """
    if local:
        return None
    from pipeline.execute import ray_session

    return lambda: ray_session(address, num_cpus=num_cpus, connect_timeout_s=connect_timeout_s)

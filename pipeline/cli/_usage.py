"""The click group class of ``hgn-pipeline``: usage errors as one ``error:`` line.

Click's usage errors (bad option values, unknown or missing options, ``typer.BadParameter``
raised by a command) become one line naming the option and pointing at the command's
``--help``, exit code 2; see :mod:`pipeline.parsing` for config and ``--set`` errors.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from pipeline.parsing import one_line

__all__ = ["OneLineErrors"]


class OneLineErrors(TyperGroup):
    """Click group whose usage errors print as one ``error:`` line naming the option and fix."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:  # click's exceptions (typer vendors click)
            code = int(getattr(exc, "exit_code", 1))
            ctx = getattr(exc, "ctx", None)
            text = one_line(exc.format_message())
            if code == 2:  # a usage error: name the command whose --help lists the options
                where = ctx.command_path if ctx is not None else "hgn-pipeline"
                text = f"{text.rstrip('.')}. Run `{where} --help` for the options."
            typer.echo(f"error: {text}", err=True)
            sys.exit(code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

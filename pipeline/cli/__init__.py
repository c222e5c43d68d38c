"""``hgn-pipeline``, the command line: one Typer app, thin commands that call the library.

- ``main``: the app, ``run`` and ``export``; it mounts the others;
- ``ops``: ``nightly``, ``verify`` and ``query`` (scenes, show, read, stats, preview);
- ``results``: ``serve`` (web viewer), ``diff``, ``stac``, ``query changes``;
- ``_common``: shared option types, storage options from ``--config``, one error line;
- ``_usage``: click's usage errors as one ``error:`` line naming the option.
"""

from pipeline.cli.main import app
from pipeline.parsing import parse_overrides

__all__ = ["app", "parse_overrides"]

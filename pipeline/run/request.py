"""What a run is asked to do (:class:`RunRequest`) and what it did (:class:`RunResult`)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from pipeline.config import RunConfig
from pipeline.run.report import RunManifest

__all__ = ["RunRequest", "RunResult", "new_run_id"]


def new_run_id() -> str:
    """Sortable, unique: UTC time + 6 random hex digits."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class RunRequest:
    """One run, stated once: where from, where to, with which settings and how.

    ``run_pipeline``, ``run_resumable`` and ``nightly`` all take one (or build one from
    ``(input_url, output_url, config, **options)`` with :meth:`of`).

    Attributes:
        input_url, output_url: archive and output root (local path, file:// or s3://).
        config: the validated run settings.
        executor: where batches run; None: a :class:`RayExecutor` when Ray is connected,
            else in-process. One passed in is started if needed and left open (its owner
            closes it).
        run_id: None: time-based.
        progress, console, summary: progress bars, where messages go, the final table.
        session: entered around the work only when there is work (e.g. starting Ray).
    """

    input_url: str
    output_url: str
    config: RunConfig
    executor: Any | None = None
    run_id: str | None = None
    progress: bool = False
    console: Console | None = field(default=None, repr=False)
    summary: bool = False
    session: Callable[[], AbstractContextManager[Any]] | None = field(default=None, repr=False)

    @classmethod
    def of(
        cls,
        request: RunRequest | str,
        output_url: str | None = None,
        config: RunConfig | None = None,
        **options: Any,
    ) -> RunRequest:
        """``request`` itself (with ``options`` applied), or a new one from the three parts."""
        if isinstance(request, RunRequest):
            if output_url is not None or config is not None:
                raise TypeError("pass a RunRequest alone, or input_url, output_url and config")
            return request.evolve(**options) if options else request
        if output_url is None or config is None:
            raise TypeError("input_url, output_url and config are all required")
        return cls(str(request), str(output_url), config, **options)

    def evolve(self, **changes: Any) -> RunRequest:
        """A copy with some fields replaced (the request itself is immutable)."""
        return dataclasses.replace(self, **changes)


@dataclass
class RunResult:
    manifest: RunManifest
    manifest_url: str | None
    workers: list[Any] = field(default_factory=list)  # WorkerInfo of the actors at the end

    @property
    def ok(self) -> bool:
        return not self.manifest.failed

    @property
    def exit_code(self) -> int:
        """0: every scene ok; 1: some scene failed."""
        return 0 if self.ok else 1

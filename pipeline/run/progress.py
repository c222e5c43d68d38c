"""Progress on the terminal: scenes, windows, Mpx/s and the actor pool, with rich."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["RunProgress"]


class RunProgress:
    """Two bars (scenes, windows) with the rate and the pool's state; or nothing when off."""

    def __init__(self, enabled: bool, console: Console, scenes: int, units: int) -> None:
        self.console = console
        self.p: Progress | None = None
        self.t0 = time.perf_counter()
        self.pixels = 0
        if enabled:
            self.p = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=console,
            )
            self.scenes = self.p.add_task("scenes", total=scenes, rate="")
            self.windows = self.p.add_task("windows", total=units, rate="")
            self.p.start()

    def advance(self, windows: int = 0, pixels: int = 0, scenes: int = 0) -> None:
        if self.p is None:
            return
        self.pixels += pixels
        rate = self.pixels / 1e6 / max(time.perf_counter() - self.t0, 1e-9)
        self.p.update(self.windows, advance=windows, rate=f"{rate:.2f} Mpx/s")
        if scenes:
            self.p.update(self.scenes, advance=scenes)

    def pool(self, text: str) -> None:
        """Show the pool's state ("actors 3 live, 1 joined, 1 lost") beside the scenes bar."""
        if self.p is not None:
            self.p.update(self.scenes, rate=text)

    def say(self, message: str) -> None:
        """A line for the user (above the bars when they are on): an actor joined or was lost."""
        console = self.p.console if self.p is not None else self.console
        console.print(message, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self.p is not None:
            self.p.stop()

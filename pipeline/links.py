"""The symlink policy of archives, the same for every format (zarr stores, rasters, folders).

A symbolic link in a local archive is **followed when its real target lies inside the
archive** (the real path of the archive root; the scene id is the link's own path), and
never otherwise:

- a link whose target is outside the archive is not read: the scene it would be fails with
  the reason (``symlink to /data/x leads outside the archive ...: not followed``), so a link
  can never make the pipeline read, and write labels of, data the archive does not hold;
- a link to a folder already read (a loop back to a parent, or a second way to the same
  folder) and a link to a file read under its own name are skipped, named, not read twice;
- a broken link is skipped, named.

Links are decided after the plain entries of the walk, so a folder reachable both directly
and through a link keeps its direct path as scene id. Object stores have no links.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["LinkDecision", "LinkPolicy"]


@dataclass(frozen=True)
class LinkDecision:
    """What to do with one link: ``follow`` (a ``dir`` or ``file``), ``fail`` or ``skip``."""

    action: str  # "follow" | "fail" | "skip"
    kind: str  # "dir" | "file" | "" (not followed)
    reason: str = ""


@dataclass
class LinkPolicy:
    """Real paths already read below one archive root, and the decision for each link."""

    root: str  # the archive root as walked (local path)
    real_root: str = ""
    dirs: set[str] = field(default_factory=set)  # real paths of folders read
    files: set[str] = field(default_factory=set)  # real paths of files read

    def __post_init__(self) -> None:
        self.real_root = os.path.realpath(self.root)
        self.dirs.add(self.real_root)

    def inside(self, real: str) -> bool:
        return real == self.real_root or real.startswith(self.real_root.rstrip("/") + "/")

    def saw_dir(self, path: str) -> None:
        self.dirs.add(os.path.realpath(path))

    def saw_file(self, path: str) -> None:
        self.files.add(os.path.realpath(path))

    def decide(self, path: str) -> LinkDecision:
        target = os.readlink(path)
        real = os.path.realpath(path)
        if not os.path.exists(real):
            return LinkDecision("skip", "", f"broken symlink (its target {target} does not "
                                            "exist): not read")
        if not self.inside(real):
            return LinkDecision("fail", "", (
                f"symlink to {real} leads outside the archive {self.real_root}: not followed "
                "(links may only point inside the archive); point --input at that data, or "
                "copy it into the archive"))
        rel = os.path.relpath(real, self.real_root)
        if os.path.isdir(real):
            if real in self.dirs:
                return LinkDecision("skip", "", f"symlink to {rel}/, a folder already read "
                                                "(a loop or a second path to it): not read again")
            self.dirs.add(real)
            return LinkDecision("follow", "dir")
        if real in self.files:
            return LinkDecision("skip", "", f"symlink to {rel}, which is read under its own "
                                            "name: not read twice")
        self.files.add(real)
        return LinkDecision("follow", "file")

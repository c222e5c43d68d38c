"""The one rule for every name that becomes part of a path: run ids, scene ids, export files.

A name reaches the filesystem or an S3 key in many places (``<output>/<scene>.ome.zarr``,
``_hgn/manifest-<run>.json``, ``_hgn/history/<run>.json``, exported files), so it is checked
here, once, before anything is written:

- a **run id** is one path segment: 1-128 characters from ``A-Z a-z 0-9 . _ -``, starting
  with a letter or digit (so never ``.``, ``..`` or a hidden name);
- a **scene id** is a relative path of ``/``-separated segments (the scene's place in its
  archive). Refused: an empty id or segment, ``.`` / ``..`` segments, a leading ``/``,
  backslashes, control characters (newline, tab, NUL...), and a segment longer than
  :data:`MAX_SEGMENT_BYTES` once the store suffix is added (filesystems allow 255 bytes);
- an **export path** ends in a file name by the same segment rule, with a ``.tif`` suffix,
  outside every scene store and ``_hgn/``.

Violations raise :class:`~pipeline.errors.NameRefusedError` naming the value, the rule broken
and the fix; :func:`scene_id_problem` returns the reason instead, so the catalog can fail one
scene alone.
"""

from __future__ import annotations

import re

from pipeline.errors import NameRefusedError

__all__ = [
    "MAX_RUN_ID",
    "MAX_SEGMENT_BYTES",
    "check_export_path",
    "check_run_id",
    "check_scene_id",
    "scene_id_problem",
]

MAX_RUN_ID = 128
MAX_SEGMENT_BYTES = 255  # NAME_MAX of ext4/xfs/APFS; S3 keys allow more, local copies do not
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LONGEST_SUFFIX = ".ome.zarr"  # what the output layout appends to a scene id's last segment


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a safe single path segment; else :class:`NameRefusedError`."""
    if (
        not isinstance(run_id, str)
        or len(run_id) > MAX_RUN_ID
        or _RUN_ID.fullmatch(run_id) is None
    ):
        raise NameRefusedError(
            f"run id {run_id!r} is refused: it becomes a file name under <output>/_hgn/, so it "
            f"must be 1-{MAX_RUN_ID} characters of A-Z, a-z, 0-9, '.', '_' or '-', starting "
            "with a letter or digit (e.g. --run-id nightly-2026-12-01); omit --run-id for a "
            "time-based one"
        )
    return run_id


def scene_id_problem(scene_id: object, suffix: str = _LONGEST_SUFFIX) -> str | None:
    """Why ``scene_id`` cannot name a path below an output root (None: it can)."""
    if not isinstance(scene_id, str) or not scene_id.strip():
        return "it is empty"
    bad = sorted({f"U+{ord(ch):04X}" for ch in scene_id if ord(ch) < 32 or ord(ch) == 127})
    if bad:
        return f"it contains control characters ({', '.join(bad)})"
    if scene_id.startswith("/"):
        return "it is an absolute path"
    if "\\" in scene_id:
        return "it contains a backslash"
    parts = scene_id.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "it has an empty, '.' or '..' path segment"
    for i, part in enumerate(parts):
        size = len(part.encode()) + (len(suffix.encode()) if i == len(parts) - 1 else 0)
        if size > MAX_SEGMENT_BYTES:
            return (f"its segment {part[:40]!r}... is {size} bytes with the store suffix; "
                    f"filesystems allow {MAX_SEGMENT_BYTES}")
    return None


def check_scene_id(scene_id: str, suffix: str = _LONGEST_SUFFIX) -> str:
    """``scene_id`` if it can name ``<root>/<scene_id><suffix>``; else NameRefusedError."""
    why = scene_id_problem(scene_id, suffix)
    if why is not None:
        raise NameRefusedError(
            f"scene id {scene_id!r} is refused: {why}. Scene ids are archive-relative paths and "
            "become output paths, so they must be relative, without '..', '.', empty segments, "
            "backslashes or control characters: rename the scene in the archive"
        )
    return scene_id


def check_export_path(path: str) -> str:
    """``path`` if it may receive an exported file; else :class:`NameRefusedError`.

    Its file name follows the segment rule and ends in ``.tif`` / ``.tiff``; it may not lie
    inside a scene's store (``*.ome.zarr``) or the pipeline's ``_hgn`` folder, whose contents
    the ledger and the checksums describe.
    """
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    name = parts[-1] if parts else ""
    why = scene_id_problem(name, "") if name not in (".", "..") else "it is '.' or '..'"
    if why is None and not name.lower().endswith((".tif", ".tiff")):
        why = "it does not end in .tif or .tiff (a Cloud-Optimized GeoTIFF)"
    if why is None and any(p.endswith(".ome.zarr") or p == "_hgn" for p in parts[:-1]):
        why = "it lies inside an output store or _hgn/, which only the pipeline writes"
    if why is not None:
        raise NameRefusedError(
            f"export path {str(path)!r} is refused: {why}; write the file beside the output, "
            "e.g. --path exports/tile-042.tif"
        )
    return str(path)

"""Which chunks a query may trust: queries refuse incomplete or damaged data by default.

Before :class:`~pipeline.query.SceneView` answers from a window, :func:`untrusted` asks
:func:`pipeline.state.checks.inspect_scene` (the cheap check: one listing against the
ledger's checksums) which chunks of the queried level inside the window are missing,
damaged or never computed. Without ``allow_incomplete`` any such chunk makes the query fail
with :class:`~pipeline.errors.DamagedOutputError` naming them and the fix; with it, the query
skips them and reports the share of the window it could use (:func:`coverage`).

A chunk that does not decode while a query reads it is damaged too (:func:`decode_failure`).
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import DamagedOutputError
from pipeline.state.integrity import SceneIntegrity, chunk_key, listing

__all__ = [
    "DecodingArray",
    "chunk_tiles",
    "decode_failure",
    "tile_key",
    "trusted_tiles",
    "untrusted",
]

_SHOWN = 8  # chunk keys named in one message; the count says how many more
_Box = tuple[int, int, int, int]


def tile_key(array_path: str, chunks: tuple[int, int], tile: tuple[int, int, int, int]) -> str:
    """Store key of the chunk a chunk-aligned tile ``(y0, y1, x0, x1)`` lies in."""
    return chunk_key(array_path, tile[0] // chunks[0], tile[2] // chunks[1])


def _fix(view: Any, kind: str) -> str:
    out = view.output_url
    if kind == "incomplete":
        how = "rerun the same `hgn-pipeline run` to finish it"
    else:
        how = (f"`hgn-pipeline verify --output {out} --scene {view.scene_id} --repair` "
               "recomputes them")
    return (f"{how}, or pass --allow-incomplete (allow_incomplete=True) for figures over the "
            "chunks that are there, with their coverage")


def _refuse(view: Any, keys: list[str], problems: dict[str, str], level: int) -> None:
    kinds = sorted({problems[k] for k in keys})
    kind = "incomplete" if kinds == ["not computed"] else "damaged"
    shown = ", ".join(f"{k} ({problems[k]})" for k in keys[:_SHOWN])
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    raise DamagedOutputError(
        f"scene {view.scene_id!r} is {kind}: {len(keys)} chunk(s) of level {level} in the "
        f"queried window are missing or damaged ({shown}{more}), so the answer would be wrong; "
        + _fix(view, kind),
        tuple(keys),
    )


def untrusted(view: Any, integrity: SceneIntegrity, array_path: str, level: int,
              tiles: list[tuple[int, int, int, int]], chunks: tuple[int, int],
              allow_incomplete: bool) -> set[str]:
    """Keys of the window's chunks that must not be read (raise unless ``allow_incomplete``)."""
    wanted = {tile_key(array_path, chunks, t) for t in tiles}
    problems = {p.key: p.problem for p in integrity.problems}
    if level > 0 and view.hgn.get("status") != "complete":
        # The pyramid is built once every unit is done: none of this level exists yet.
        for key in wanted:
            problems[key] = "not computed"
    if not integrity.tracked and view.hgn.get("status") != "complete":
        listed = set(listing(view.url, view._so))
        for key in wanted - listed:  # unknown: only what is stored can be counted
            problems.setdefault(key, "not computed")
    bad = sorted(k for k in wanted if k in problems)
    if bad and not allow_incomplete:
        _refuse(view, bad, problems, level)
    return set(bad)


def decode_failure(view: Any, key: str, exc: BaseException) -> DamagedOutputError:
    """The error for a chunk whose stored bytes do not decode."""
    return DamagedOutputError(
        f"scene {view.scene_id!r}: chunk {key} is damaged (it does not decode: "
        f"{type(exc).__name__}); " + _fix(view, "damaged"),
        (key,),
    )


def chunk_tiles(chunks: tuple[int, int], lbox: _Box) -> list[_Box]:
    """``lbox`` cut along the array's chunk grid (one read per chunk)."""
    ch, cw = chunks
    y0, y1, x0, x1 = lbox
    return [(ty, min((ty // ch + 1) * ch, y1), tx, min((tx // cw + 1) * cw, x1))
            for ty in [y0, *range((y0 // ch + 1) * ch, y1, ch)]
            for tx in [x0, *range((x0 // cw + 1) * cw, x1, cw)]]


def trusted_tiles(view: Any, array_path: str, level: int, lbox: _Box, chunks: tuple[int, int],
                  allow_incomplete: bool) -> tuple[list[_Box], set[str]]:
    """(chunk tiles of ``lbox``, keys not to read) of array ``array_path`` of ``view``;
    refuses unless ``allow_incomplete`` (see :func:`untrusted`)."""
    tiles = chunk_tiles(chunks, lbox)
    skip = untrusted(view, view.integrity(), array_path, level, tiles, chunks, allow_incomplete)
    return tiles, skip


class DecodingArray:
    """A label array whose reads name the chunk that does not decode (DamagedOutputError)."""

    def __init__(self, arr: Any, view: Any, path: str) -> None:
        self._arr, self._view, self._path = arr, view, path
        self.chunks = arr.chunks

    def __getitem__(self, key: tuple[slice, slice]) -> Any:
        try:
            return self._arr[key]
        except Exception as exc:
            tile = (key[0].start or 0, 0, key[1].start or 0, 0)
            raise decode_failure(self._view, tile_key(self._path, self.chunks, tile),
                                 exc) from None

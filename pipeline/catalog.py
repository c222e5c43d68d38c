"""Catalog: walk an archive and hand every file or store to the format that claims it.

The catalog only walks and dispatches; what a scene is, and how it is read, is the business
of the formats (:mod:`pipeline.io.formats`). Metadata reads only, never pixels.

Walk: directory by directory (one listing each), never descending into a zarr store once
found. Every entry ends up in exactly one of three lists:

- ``scenes``: a :class:`SceneInfo` per scene (a zarr store, a raster file, or the files of a
  multi-file scene declared by ``band_files``);
- ``failures``: a :class:`SceneFailure` per scene that cannot be used (corrupt metadata,
  unsupported dtype, truncated file, band files on different grids, duplicate ids...);
- ``skipped``: a :class:`SkippedFile` per file or folder that is not a scene, with its reason
  (``README.txt: not a raster``, GDAL sidecars, hidden entries, ``_hgn`` bookkeeping).

Scene id = path relative to the archive root without its extension, ``/`` kept; for band
files, the ``{scene}`` part of the pattern. Two entries mapping to the same id both fail,
each naming the other: neither is picked silently.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.errors import ConfigError, StorageError
from pipeline.io.formats import (
    FORMATS,
    BandFile,
    Format,
    Target,
    format_for_file,
    format_for_kind,
    is_zarr_store,
)
from pipeline.links import LinkPolicy
from pipeline.names import scene_id_problem
from pipeline.scene import (
    LAYOUTS,
    SUPPORTED_DTYPES,
    Georef,
    SceneFailure,
    SceneInfo,
    Skip,
    SkippedFile,
    Unreadable,
)
from pipeline.storage import get_fs, is_remote, join_url, redact, resolve_url, strip_protocol

__all__ = [
    "LAYOUTS",
    "SUPPORTED_DTYPES",
    "Catalog",
    "Georef",
    "SceneFailure",
    "SceneInfo",
    "SkippedFile",
    "catalog",
]

SKIP_DIRS = ("_hgn",)  # pipeline bookkeeping under an output root
META_WORKERS = 16  # parallel metadata reads: S3 latency-bound, a few KB each
# Files GDAL reads beside a raster: reported as belonging to it, not as stray files.
SIDECAR_SUFFIXES = (".aux.xml", ".ovr", ".msk", ".tfw", ".tifw", ".pgw", ".pngw", ".jgw",
                    ".jpgw", ".j2w", ".wld", ".prj", ".imd", ".rpb", ".xml")
STORE_SUFFIXES = (".ome.zarr", ".zarr", ".zr")


@dataclass(frozen=True)
class Catalog:
    scenes: list[SceneInfo]
    failures: list[SceneFailure] = field(default_factory=list)
    url: str = ""
    skipped: list[SkippedFile] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scenes)

    def get(self, scene_id: str) -> SceneInfo:
        for scene in self.scenes:
            if scene.scene_id == scene_id:
                return scene
        raise KeyError(f"scene {scene_id!r} is not in the catalog of {self.url}")


@dataclass(frozen=True)
class _Job:
    fmt: Format
    target: Target


@dataclass
class _Walk:
    """What the walk found: store/file jobs, listing failures, skipped entries, plain files."""

    jobs: list[_Job] = field(default_factory=list)
    failures: list[SceneFailure] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    files: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # rel, path, entry


def catalog(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    layout: str = "CHW",
    *,
    nodata: float | None = None,
    band_files: Any = None,
) -> Catalog:
    """List every scene under ``url`` (see module docstring). Metadata reads only.

    ``layout``: axis order of plain 3-D zarr arrays (``CHW`` or ``HWC``). ``nodata``: the run
    config's override of every scene's nodata value. ``band_files``: a
    :class:`pipeline.config.BandFiles` (or its dict) declaring multi-file scenes.
    Raises StorageError when the archive root itself cannot be listed; per-scene problems
    become ``Catalog.failures``, non-scenes ``Catalog.skipped``.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout={layout!r} is not one of {LAYOUTS}")
    spec = _band_spec(band_files)
    root = resolve_url(url)
    fs = get_fs(root, storage_options)
    root_path = strip_protocol(root).rstrip("/") or "/"
    if is_remote(root):
        fs.invalidate_cache()  # listings are cached per filesystem instance, across runs
    ctx = _Context(fs, root, root_path, dict(storage_options or {}), layout, nodata)
    walk = _walk(ctx)
    _dispatch_files(ctx, walk, spec)

    def analyse(job: _Job) -> SceneInfo | SceneFailure | SkippedFile:
        t = job.target
        try:
            result = job.fmt.probe(t)
        except Exception as exc:  # storage errors, anything a library raises on bad bytes
            reason = f"{type(exc).__name__}: {redact(str(exc), storage_options)}"
            return SceneFailure(t.scene_id, t.url, f"cannot read metadata: {reason}")
        if isinstance(result, Unreadable):
            return SceneFailure(t.scene_id, t.url, result.reason)
        if isinstance(result, Skip):
            return SkippedFile(ctx.rel(t.path), t.url, result.reason)
        return result if nodata is None else replace(result, nodata=nodata)

    workers = max(1, min(META_WORKERS, len(walk.jobs)))
    with ThreadPoolExecutor(workers, thread_name_prefix="catalog") as pool:
        results = list(pool.map(analyse, walk.jobs))
    scenes = [r for r in results if isinstance(r, SceneInfo)]
    failures = walk.failures + [r for r in results if isinstance(r, SceneFailure)]
    skipped = walk.skipped + [r for r in results if isinstance(r, SkippedFile)]
    scenes, failures = _no_duplicates(*_usable_ids(scenes, failures))
    return Catalog(
        scenes=sorted(scenes, key=lambda s: s.scene_id),
        failures=sorted(failures, key=lambda f: (f.scene_id, f.url)),
        url=root,
        skipped=sorted(skipped, key=lambda s: s.path),
    )


def _usable_ids(scenes: list[SceneInfo], failures: list[SceneFailure]
                ) -> tuple[list[SceneInfo], list[SceneFailure]]:
    """A scene whose id cannot name an output path (pipeline.names) fails alone."""
    kept = []
    for s in scenes:
        why = scene_id_problem(s.scene_id)
        if why is None:
            kept.append(s)
        else:
            failures = [*failures, SceneFailure(
                s.scene_id, s.url, f"its id cannot name an output path: {why}; rename it in "
                "the archive")]
    return kept, failures


# --------------------------------------------------------------------------- walking


@dataclass(frozen=True)
class _Context:
    fs: Any
    root: str
    root_path: str
    storage_options: dict[str, Any]
    layout: str
    nodata: float | None

    def rel(self, path: str) -> str:
        return posixpath.relpath(path, self.root_path) if path != self.root_path else ""

    def url_of(self, path: str) -> str:
        rel = self.rel(path)
        return join_url(self.root, rel) if rel not in ("", ".") else self.root

    def target(self, path: str, scene_id: str, **kw: Any) -> Target:
        return Target(self.url_of(path), path, scene_id, self.fs, self.storage_options,
                      self.layout, nodata=self.nodata, **kw)


def _scene_id(rel: str) -> str:
    lower = rel.lower()
    suffixes = sorted({*STORE_SUFFIXES, *_file_suffixes()}, key=len, reverse=True)
    for suffix in suffixes:
        if lower.endswith(suffix) and len(rel) > len(suffix):
            return rel[: -len(suffix)]
    return rel


def _file_suffixes() -> tuple[str, ...]:
    return tuple(s for fmt in FORMATS for s in fmt.suffixes)


def _root_error(ctx: _Context, exc: Exception, what: str) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"archive {ctx.root} does not exist: check the URL (and the S3 "
                            "endpoint/bucket)")
    return StorageError(f"cannot {what} archive {ctx.root}: {type(exc).__name__}: "
                        f"{redact(str(exc), ctx.storage_options)}")


def _walk(ctx: _Context) -> _Walk:
    walk = _Walk()
    try:
        top = ctx.fs.info(ctx.root_path)
    except Exception as exc:
        raise _root_error(ctx, exc, "access") from None
    base = posixpath.basename(ctx.root_path.rstrip("/")) or ctx.root_path
    if top.get("type") != "directory":  # the archive is one file
        walk.files.append((base, ctx.root_path, top))
        return walk
    queue: deque[str] = deque([ctx.root_path])
    links = None if is_remote(ctx.root) else LinkPolicy(ctx.root_path)  # pipeline.links
    pending: list[tuple[str, str, dict[str, Any]]] = []  # links, decided after plain entries
    while queue or pending:
        if not queue:
            _decide_links(ctx, walk, links, pending, queue)
            continue
        path = queue.popleft()
        try:
            listing = ctx.fs.ls(path, detail=True)
        except Exception as exc:
            if path == ctx.root_path:
                raise _root_error(ctx, exc, "list") from None
            detail = redact(str(exc), ctx.storage_options)
            walk.failures.append(SceneFailure(_scene_id(ctx.rel(path)), ctx.url_of(path),
                                              f"cannot list folder: {type(exc).__name__}: "
                                              f"{detail}"))
            continue
        entries = {posixpath.basename(e["name"].rstrip("/")): e for e in listing}
        entries = {k: v for k, v in entries.items() if v["name"].rstrip("/") != path}
        if is_zarr_store(posixpath.basename(path) if path != ctx.root_path else base, entries):
            rel = ctx.rel(path)
            scene_id = _scene_id(rel) if rel else _scene_id(base)
            walk.jobs.append(_Job(format_for_kind("zarr"),
                                  ctx.target(path, scene_id, entries=entries)))
            continue  # never descend into a zarr store (one without metadata fails, named)
        for name in sorted(entries):
            entry, child = entries[name], posixpath.join(path, name)
            is_dir = entry.get("type") == "directory"
            if name.startswith(".") or (name in SKIP_DIRS and is_dir):
                why = ("hidden (its name starts with '.'): not read" if name.startswith(".")
                       else "pipeline bookkeeping folder: not read")
                walk.skipped.append(SkippedFile(ctx.rel(child) + ("/" if is_dir else ""),
                                                ctx.url_of(child), why))
            elif links is not None and entry.get("islink"):
                pending.append((name, child, entry))
            elif is_dir:
                queue.append(child)
                if links is not None:
                    links.saw_dir(child)
            else:
                walk.files.append((ctx.rel(child), child, entry))
                if links is not None:
                    links.saw_file(child)
    return walk


def _decide_links(ctx: _Context, walk: _Walk, links: LinkPolicy | None,
                  pending: list[tuple[str, str, dict[str, Any]]], queue: deque[str]) -> None:
    """Apply the symlink policy (:mod:`pipeline.links`) to the links the walk met."""
    assert links is not None  # links are only collected on local archives
    todo, pending[:] = list(pending), []
    for _name, child, _entry in todo:
        decision = links.decide(child)
        rel = ctx.rel(child)
        if decision.action == "follow" and decision.kind == "dir":
            queue.append(child)
        elif decision.action == "follow":
            walk.files.append((rel, child, ctx.fs.info(child)))
        elif decision.action == "fail":
            walk.failures.append(SceneFailure(_scene_id(rel), ctx.url_of(child),
                                              decision.reason))
        else:
            slash = "/" if os.path.isdir(child) else ""
            walk.skipped.append(SkippedFile(rel + slash, ctx.url_of(child), decision.reason))


# --------------------------------------------------------------------------- dispatch


@dataclass(frozen=True)
class _BandSpec:
    pattern: str
    bands: tuple[str, ...]
    regex: re.Pattern[str]


def _band_spec(band_files: Any) -> _BandSpec | None:
    if band_files is None:
        return None
    from pipeline.config import BandFiles

    try:
        spec = band_files if isinstance(band_files, BandFiles) else BandFiles.model_validate(
            band_files)
    except Exception as exc:
        raise ConfigError(f"band_files={band_files!r}: {exc}") from None
    parts = [re.escape(p) for p in re.split(r"(\{scene\}|\{band\})", spec.pattern)]
    regex = "".join({re.escape("{scene}"): "(?P<scene>.+)",
                     re.escape("{band}"): "(?P<band>[^/]+?)"}.get(p, p) for p in parts)
    return _BandSpec(spec.pattern, tuple(spec.bands), re.compile(regex))


def _dispatch_files(ctx: _Context, walk: _Walk, spec: _BandSpec | None) -> None:
    """Turn the walk's plain files into jobs (formats, band-file groups) or skipped entries."""
    groups: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {}
    rasters: set[str] = set()
    leftovers: list[tuple[str, str, dict[str, Any]]] = []
    for rel, path, entry in walk.files:
        match = spec.regex.fullmatch(rel) if spec is not None else None
        if match is not None and spec is not None:
            if match["band"] in spec.bands:
                groups.setdefault(match["scene"], {})[match["band"]] = (path, entry)
            else:
                walk.skipped.append(SkippedFile(rel, ctx.url_of(path), (
                    f"band {match['band']!r} of scene {match['scene']!r} is not in "
                    f"band_files.bands {list(spec.bands)}")))
            continue
        fmt = format_for_file(rel)
        if fmt is None:
            leftovers.append((rel, path, entry))
            continue
        rasters.add(rel)
        walk.jobs.append(_Job(fmt, ctx.target(path, _scene_id(rel), entry=entry)))
    for scene_id, found in sorted(groups.items()):
        assert spec is not None  # groups only fill when band_files is given
        _band_group(ctx, walk, spec, scene_id, found)
        rasters.update(ctx.rel(p) for p, _ in found.values())
    for rel, path, _entry in leftovers:
        walk.skipped.append(SkippedFile(rel, ctx.url_of(path), _why_not(rel, rasters)))


def _band_group(ctx: _Context, walk: _Walk, spec: _BandSpec, scene_id: str,
                found: dict[str, tuple[str, dict[str, Any]]]) -> None:
    missing = [b for b in spec.bands if b not in found]
    first_path = next(iter(found.values()))[0]
    if missing:
        expected = [spec.pattern.replace("{scene}", scene_id).replace("{band}", b)
                    for b in missing]
        walk.failures.append(SceneFailure(scene_id, ctx.url_of(first_path), (
            f"band files missing for bands {missing} (expected {', '.join(expected)}); "
            f"found bands {sorted(found)}")))
        return
    files = tuple(BandFile(b, found[b][0], ctx.url_of(found[b][0]), found[b][1])
                  for b in spec.bands)
    walk.jobs.append(_Job(format_for_kind("bandfiles"),
                          ctx.target(files[0].path, scene_id, files=files)))


def _why_not(rel: str, rasters: set[str]) -> str:
    """The reason a file that no format claims is not a scene."""
    lower = rel.lower()
    for suffix in SIDECAR_SUFFIXES:
        if lower.endswith(suffix):
            stem = rel[: -len(suffix)]
            owners = [r for r in rasters if r == stem or _scene_id(r) == stem
                      or posixpath.splitext(r)[0] == stem]
            if owners:
                return f"sidecar of {sorted(owners)[0]} (GDAL reads it with that raster)"
    ext = posixpath.splitext(rel)[1] or "(no extension)"
    known = ", ".join(s.lstrip(".") for s in _file_suffixes())
    return f"not a raster: {ext} is not a raster file type read here ({known}, zarr stores)"


def _no_duplicates(scenes: list[SceneInfo], failures: list[SceneFailure]
                   ) -> tuple[list[SceneInfo], list[SceneFailure]]:
    """Scenes sharing an id all fail, each naming the others (nothing picked silently)."""
    urls: dict[str, list[str]] = {}
    for item in [*scenes, *failures]:
        urls.setdefault(item.scene_id, []).append(item.url)
    dupes = {sid for sid, u in urls.items() if len(u) > 1}
    if not dupes:
        return scenes, failures
    kept = [s for s in scenes if s.scene_id not in dupes]
    out = [f for f in failures if f.scene_id not in dupes]
    for item in [*scenes, *failures]:
        if item.scene_id not in dupes:
            continue
        sid = item.scene_id
        reason = (f"duplicate scene id {sid!r}: {', '.join(sorted(urls[sid]))} all map to it "
                  "(ids drop the extension); rename all but one of them")
        if isinstance(item, SceneFailure):
            reason += f" (this one also fails on its own: {item.reason})"
        out.append(SceneFailure(sid, item.url, reason))
    return kept, out

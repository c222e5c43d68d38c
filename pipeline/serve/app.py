"""The Starlette app: pages, JSON API, tiles, the STAC catalog and the stores' files, read-only.

Routes (every one GET/HEAD; any other method is answered 405 before routing)::

    /                                   the viewer page (static/index.html)
    /static/...                         its JS/CSS and the vendored Leaflet
    /api/scenes                         scene list (status, size, model, run, time)
    /api/scene?scene=ID                 grid, zooms, layers, classes, georeference
    /api/legend?scene=ID                classes with pixels and areas (m2, ha)
    /api/point?scene=ID&x=X&y=Y         class / confidence / change at a level-0 pixel
    /api/changes?scene=ID               the change matrix (404 when there is none)
    /api/history[?scene=ID]             nightly history, run manifests, kept versions
    /tiles/{layer}/{z}/{x}/{y}.png?scene=ID
    /catalog.json, /_hgn/stac/NAME.json the STAC catalog and items
    /<scene>.ome.zarr/<key>             the stores' zarr objects (for zarr/OME-Zarr clients)

Unknown scenes, tiles and files, and any path that tries to leave the output root, are 404.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline.errors import ChangeError, NotFoundError, OutputNotFoundError
from pipeline.query import QueryError
from pipeline.serve import api
from pipeline.serve.scenes import SceneRegistry, legend
from pipeline.serve.tiles import render_tile

__all__ = ["create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
READ_METHODS = frozenset({"GET", "HEAD"})
_KEY_PART = re.compile(r"^[A-Za-z0-9_.-]+$")  # one zarr key segment ("0", "zarr.json", "c")
_ITEM_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.json$")  # stac._item_rel names
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
     b"frame-ancestors 'none'"),
]


class ReadOnly:
    """ASGI middleware: anything but GET/HEAD is 405; security headers on every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in READ_METHODS:
            resp = JSONResponse({"error": f"{scope['method']} is not allowed: this viewer is "
                                 "read-only (GET and HEAD only)"}, 405,
                                headers={"Allow": "GET, HEAD"})
            await resp(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, with_headers)


def _json(data: Any, status: int = 200) -> Response:
    return Response(api.dumps(data), status, media_type="application/json",
                    headers={"Cache-Control": "no-cache"})


def _not_found(_: Request, exc: Exception) -> Response:
    return _json({"error": str(exc)}, 404)


def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return _json({"error": f"{type(exc).__name__}: {exc}"}, 500)


def _routes(reg: SceneRegistry) -> list[Any]:
    def scene_of(request: Request) -> Any:
        return reg.get(request.query_params.get("scene"))

    async def index(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    def scenes(_: Request) -> Response:
        return _json({"output": reg.store.url, "scenes": api.scene_list(reg)})

    def scene(request: Request) -> Response:
        return _json(api.scene_meta(scene_of(request)))

    def legend_(request: Request) -> Response:
        return _json(legend(scene_of(request)))

    def point(request: Request) -> Response:
        try:
            x, y = float(request.query_params["x"]), float(request.query_params["y"])
        except (KeyError, ValueError):
            return _json({"error": "give the level-0 pixel as ?x=COL&y=ROW (numbers)"}, 400)
        return _json(api.point(scene_of(request), x, y))

    def changes(request: Request) -> Response:
        from pipeline.ops.diff import read_changes

        sc = scene_of(request)
        return _json(read_changes(sc.view, reg.so).to_dict())

    def history(request: Request) -> Response:
        sid = request.query_params.get("scene")
        if sid is not None:
            reg.get(sid)  # 404 for an unknown scene
        return _json(api.history(reg, sid))

    def tile(request: Request) -> Response:
        p = request.path_params
        try:  # Leaflet's zooms are <= 0 here (one level-0 pixel per map unit at zoom 0)
            z = int(p["z"])
        except ValueError:
            raise NotFoundError(f"zoom {p['z']!r} is not an integer") from None
        png = render_tile(scene_of(request), p["layer"], z, p["x"], p["y"])
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "public, max-age=3600"})

    def stored(request: Request) -> Response:
        return _stored_file(reg, request.path_params["path"])

    return [
        Route("/", index), Route("/api/scenes", scenes), Route("/api/scene", scene),
        Route("/api/legend", legend_), Route("/api/point", point),
        Route("/api/changes", changes), Route("/api/history", history),
        Route("/tiles/{layer}/{z}/{x:int}/{y:int}.png", tile),
        Mount("/static", app=StaticFiles(directory=STATIC)),
        Route("/{path:path}", stored),
    ]


def _stored_file(reg: SceneRegistry, path: str) -> Response:
    """``catalog.json``, STAC items, or one object of a scene store (else 404)."""
    from pipeline.storage import get_fs, join_url, strip_protocol

    rel = None
    item = path.startswith("_hgn/stac/") and _ITEM_NAME.match(path[len("_hgn/stac/"):])
    if path == "catalog.json" or item:
        rel = path
    elif ".ome.zarr" in path:
        sid, _, key = path.partition(".ome.zarr")
        parts = [p for p in key.split("/") if p]
        if (sid in reg.ids() and (not key or key.startswith("/"))
                and all(_KEY_PART.match(p) and p not in (".", "..") for p in parts)):
            rel = "/".join([f"{sid}.ome.zarr", *parts] if parts else [f"{sid}.ome.zarr",
                                                                        "zarr.json"])
    if rel is None:
        raise NotFoundError(f"/{path}: no such page, scene store or catalog file")
    fs = get_fs(reg.store.url, reg.so)
    try:
        data = fs.cat_file(join_url(strip_protocol(reg.store.url), rel))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFoundError(f"/{path}: not found in the output") from None
    kind = "application/json" if rel.endswith(".json") else "application/octet-stream"
    return Response(data, media_type=kind, headers={"Cache-Control": "no-cache"})


def create_app(output_url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The viewer over ``output_url`` (local path or ``s3://``), wrapped read-only."""
    reg = SceneRegistry(output_url, storage_options)
    app = Starlette(routes=_routes(reg), exception_handlers={
        NotFoundError: _not_found, LookupError: _not_found, OutputNotFoundError: _not_found,
        ChangeError: _not_found, QueryError: _not_found, 404: _not_found,
        Exception: _server_error,
    })
    app.state.registry = reg
    return ReadOnly(app)

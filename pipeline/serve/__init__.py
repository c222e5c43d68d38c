"""``hgn-pipeline serve``: a read-only web viewer over an output root (local or ``s3://``).

A scene list (status, size, model, run, time) and a map per scene: the source image (when
its input is readable) under the label pyramid as tiles read window by window from the
OME-Zarr levels, an opacity slider, confidence and change layers, the class legend with
areas in m2/ha, the class at a clicked point and the run history from ``<output>/_hgn/``.
Leaflet is vendored in ``static/vendor/leaflet`` (``tools/vendor-leaflet.sh``): nothing is
loaded from outside. The app also serves the STAC catalog and the stores' zarr objects, so a
STAC browser or a zarr client can read the outputs over HTTP. Nothing can be written: every
method but GET/HEAD is answered 405.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from typing import Any

from pipeline.serve.app import create_app

__all__ = ["create_app", "serve"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(output_url: str, host: str = "127.0.0.1", port: int = 8000,
          storage_options: Mapping[str, Any] | None = None) -> None:
    """Serve the viewer until interrupted; prints the URL (``port=0``: a free port)."""
    import uvicorn

    from pipeline.errors import ConfigError
    from pipeline.storage import get_fs, resolve_url, strip_protocol

    url = resolve_url(output_url)
    if not get_fs(url, storage_options).exists(strip_protocol(url)):
        raise ConfigError(f"--output {output_url!r}: {url} does not exist; give the output "
                          "root of a run (the folder or s3:// prefix with the *.ome.zarr stores)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--host {host!r} --port {port}: cannot listen there ({exc}); pick "
                          "another port (--port 0 takes any free one)") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"hgn-pipeline serve: http://{shown}:{bound}/ over {url} (read-only; Ctrl+C stops)",
          flush=True)
    if host not in LOOPBACK:
        print(f"warning: listening on {host}: anyone who can reach it can browse the outputs "
              "(there is no authentication)", file=sys.stderr, flush=True)
    config = uvicorn.Config(create_app(url, storage_options), log_level="warning",
                            access_log=False)
    uvicorn.Server(config).run(sockets=[sock])

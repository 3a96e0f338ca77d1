"""The demo's two ports on 127.0.0.1: moto's S3 server (9100) and Airflow's UI (8080).

A port set explicitly (LIFECYCLE_DEMO_S3_PORT, LIFECYCLE_DEMO_API_PORT) is used or the demo stops
at once, naming it. Unset, the default is used when it is free, and a free port otherwise: a
busy 9100 or 8080 never stops (nor hangs) the demo.

`make airflow` writes the ports it serves on to .demo/serving.json while it runs, so that
`make env` in another shell prints the ports in use, and `make demo` knows not to run beside it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

HOST = "127.0.0.1"
S3_PORT_ENV = "LIFECYCLE_DEMO_S3_PORT"
API_PORT_ENV = "LIFECYCLE_DEMO_API_PORT"
DEFAULT_S3_PORT = 9100
DEFAULT_API_PORT = 8080
SERVING_FILE = "serving.json"

T = TypeVar("T")


class PortError(RuntimeError):
    """A port the demo cannot use; the message says which and what to do."""


def configured_port(variable: str, default: int) -> int:
    """The port named by `variable`, or the default (no check that it is free)."""
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    try:
        port = int(value)
    except ValueError:
        raise PortError(f"{variable}={value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise PortError(f"{variable}={value!r} is not a port number (1-65535)")
    return port


def configured_s3_port() -> int:
    return configured_port(S3_PORT_ENV, DEFAULT_S3_PORT)


def configured_api_port() -> int:
    return configured_port(API_PORT_ENV, DEFAULT_API_PORT)


def _in_use(exc: OSError) -> bool:
    return exc.errno in (errno.EADDRINUSE, errno.EACCES)


def listen(variable: str, default: int, start: Callable[[int], T], what: str) -> T:
    """`start(port)` on the port set in `variable`, or on `default`, or on a free port.

    `start` binds the port (0: any free one) or raises OSError at once. A port set explicitly
    and in use raises PortError; the default in use falls back to a free port, with a line
    saying so.
    """
    explicit = bool(os.environ.get(variable, "").strip())
    port = configured_port(variable, default)
    try:
        return start(port)
    except OSError as exc:
        if not _in_use(exc):
            raise
        if explicit:
            raise PortError(
                f"{HOST}:{port} ({variable}, {what}) is in use by another program: stop it, "
                f"or set {variable} to a free port (unset, the demo picks a free one)"
            ) from None
    result = start(0)
    print(f"{HOST}:{default} is in use: {what} listens on {HOST}:{_port_of(result)} instead "
          f"(set {variable} to choose)")  # fmt: skip
    return result


def _port_of(result) -> int:
    return result if isinstance(result, int) else result.port


def probe(port: int) -> int:
    """Bind and release `port` (0: a free one): a port another process (airflow standalone)
    will listen on. Raises OSError when it is in use."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do (an old connection in TIME_WAIT does not make a port busy).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        return sock.getsockname()[1]


def api_port() -> int:
    """The port for Airflow's UI of `make airflow`: checked free now, bound by Airflow later."""
    return listen(API_PORT_ENV, DEFAULT_API_PORT, probe, "the Airflow UI")


@dataclass(frozen=True)
class Serving:
    pid: int
    s3_port: int
    api_port: int


def write_serving(directory: Path, serving: Serving) -> Path:
    path = directory / SERVING_FILE
    path.write_text(json.dumps(serving.__dict__), encoding="utf-8")
    return path


def read_serving(directory: Path) -> Serving | None:
    """The running `make airflow`'s ports, or None when none runs (a file left by a killed one
    is ignored: its process is gone or its S3 port no longer answers)."""
    try:
        serving = Serving(**json.loads((directory / SERVING_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    try:
        os.kill(serving.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    try:
        with socket.create_connection((HOST, serving.s3_port), timeout=1):
            pass
    except OSError:
        return None
    return serving

"""Listeners the CLI starts on loopback: a port already taken is one line and exit 2."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from perkflow.cli.context import exit_with
from perkflow.errors import ValidationFailed

_TAKEN = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)


def _refusal(host: str, port: int, exc: OSError) -> ValidationFailed:
    why = "is in use by another process" if exc.errno == errno.EADDRINUSE else "cannot be used"
    return ValidationFailed(
        f"port {port} on {host} {why}; choose another with --port", field="--port"
    )


@contextmanager
def listening(*, port: int, host: str = "127.0.0.1") -> Iterator[None]:
    """Around a listener's start: a port that cannot be bound exits 2 naming it, no traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _TAKEN:
            raise
        raise exit_with(_refusal(host, port, exc)) from None


def require_free(*, port: int, host: str = "127.0.0.1") -> None:
    """Before handing a port to a server that would report it its own way (uvicorn)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # As the server binds: SO_REUSEADDR, so a port in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno not in _TAKEN:
            raise
        raise exit_with(_refusal(host, port, exc)) from None
    finally:
        probe.close()

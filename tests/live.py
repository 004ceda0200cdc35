"""A perkflow app served by real uvicorn on a free loopback port, in a thread, for page tests."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from tests.pg import free_port


class LiveServer:
    """Started when made (waits until it listens); `stop()` ends it."""

    def __init__(self, app: Any, *, start_timeout_s: float = 20) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + start_timeout_s
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

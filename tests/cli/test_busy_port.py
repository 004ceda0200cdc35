"""A listener the CLI starts on a port another process holds: one line naming the port, exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    yield holder.getsockname()[1]
    holder.close()


@pytest.mark.parametrize(
    "command", [["channels", "smtp-sink"], ["channels", "smsc-sim"], ["partner-sim"]]
)
def test_a_busy_port_is_one_line_naming_it_and_exit_2(
    command: list[str], taken_port: int, tmp_path: Path
) -> None:
    perkflow = Path(sys.executable).with_name("perkflow")
    env = {**os.environ, "PERKFLOW_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [str(perkflow), *command, "--port", str(taken_port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"port {taken_port} on 127.0.0.1 is in use" in lines[0] and "--port" in lines[0]


def test_serve_on_a_busy_port_is_one_line_naming_it_and_exit_2(
    taken_port: int, tmp_path: Path
) -> None:
    perkflow = Path(sys.executable).with_name("perkflow")
    env = {**os.environ, "PERKFLOW_HOME": str(tmp_path / "home")}
    env.pop("PERKFLOW_DATABASE_URL", None)
    subprocess.run([str(perkflow), "db", "upgrade"], env=env, check=True, timeout=120)
    out = subprocess.run(
        [str(perkflow), "serve", "--port", str(taken_port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error [--port]: port {taken_port} on 127.0.0.1 is in use by another process; "
        "choose another with --port"
    ]

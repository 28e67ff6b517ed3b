"""`dev.py up` as a script runs it: stopped by SIGTERM even when started in the background with
SIGINT ignored (every part stops, no traceback); a part that dies is named and up exits 1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devhost.envfile import read_env_file

ROOT = Path(__file__).resolve().parents[2]
READY = "Ctrl-C (or SIGTERM) stops everything."
pytestmark = pytest.mark.slow


def _start(cmd: list[str], out: Path, *, ignore_sigint: bool) -> subprocess.Popen[bytes]:
    def background() -> None:  # what a shell does for `cmd &` in a script
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=background if ignore_sigint else None,  # noqa: PLW1509 - before exec, no threads
        start_new_session=True,
    )


def _wait_ready(proc: subprocess.Popen[bytes], out: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while READY not in out.read_text(errors="replace"):
        assert proc.poll() is None, out.read_text()
        assert time.monotonic() < deadline, out.read_text()
        time.sleep(0.2)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _ports(env_file: Path) -> list[int]:
    env = read_env_file(env_file)
    ports = []
    for name in ("ServiceBusConnection", "ServiceBusAdminConnection"):
        ports.append(int(env[name].split("sb://127.0.0.1:")[1].split(";")[0]))
    for name in ("AZURITE_BLOB_ENDPOINT", "AZURE_OPENAI_ENDPOINT", "FUNCTIONS_HTTP", "REDIS_URL"):
        ports.append(int(env[name].split("127.0.0.1:")[1].split("/")[0]))
    return ports


def test_sigterm_to_a_background_dev_py_stops_every_part(tmp_path: Path) -> None:
    out = tmp_path / "up.out"
    data = tmp_path / "data"
    proc = _start(
        [sys.executable, "dev.py", "up", "--data-dir", str(data)], out, ignore_sigint=True
    )
    try:
        _wait_ready(proc, out)
        ports = _ports(data / "devhost.env")
        assert all(_listening(p) for p in ports)
        proc.send_signal(signal.SIGTERM)  # to dev.py alone, not its group
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.read_text()
    assert "stopped." in text
    assert "Traceback" not in text
    assert not [p for p in ports if _listening(p)]
    assert not (data / "devhost.env").exists()  # no stale endpoints for tools to wait on


def test_a_dead_part_is_named_and_up_exits_non_zero(tmp_path: Path) -> None:
    out = tmp_path / "up.out"
    data = tmp_path / "data"
    proc = _start(
        [sys.executable, "-m", "devhost", "up", "--data-dir", str(data)], out, ignore_sigint=False
    )
    try:
        _wait_ready(proc, out)
        ports = _ports(data / "devhost.env")
        broker = _pid_of(f"--data-dir {data / 'servicebus'}")
        os.kill(broker, signal.SIGKILL)
        assert proc.wait(30) == 1
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.read_text()
    assert "Service Bus broker exited with status -9" in text
    assert "Traceback" not in text
    assert not [p for p in ports if _listening(p)]


def _pid_of(fragment: str) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "devhost.servicebus" in cmdline and fragment in cmdline:
            return int(entry.name)
    raise AssertionError(f"no broker process with {fragment}")

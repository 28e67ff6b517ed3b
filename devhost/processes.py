"""Starting the local stand-ins as child processes and stopping them for sure.

Tests, `python -m devhost up` and the benchmarks all start servers the same way: a free loopback
port, a readiness check on that port, SIGTERM on the way out and SIGKILL if that is ignored.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout_s}s")


def wait_for_text(
    log_path: Path, text: str, timeout_s: float, proc: subprocess.Popen[bytes], start: int = 0
) -> None:
    """For servers whose readiness is more than a listening port (a host with triggers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}; see {log_path}")
        if log_path.exists():
            with open(log_path, "rb") as f:
                f.seek(start)
                if text.encode() in f.read():
                    return
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} did not appear in {log_path} within {timeout_s}s")


class ChildProcess:
    """A server process that listens on one port; `stop()` is safe to call twice."""

    def __init__(
        self,
        args: Sequence[str],
        port: int,
        *,
        log_path: Path | None = None,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        ready_timeout_s: float = 30.0,
        ready_text: str | None = None,
    ) -> None:
        self.args = list(args)
        self.host = host
        self.port = port
        self.log_path = log_path
        self._env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        self._ready_timeout_s = ready_timeout_s
        self._ready_text = ready_text
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        offset = self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        # A session of its own: a terminal's Ctrl-C reaches only whoever started it (`devhost
        # up`), which stops its parts in order instead of watching them all die at once.
        self.proc = subprocess.Popen(
            self.args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=ROOT,
            start_new_session=True,
        )
        if self.log_path:
            out.close()  # type: ignore[union-attr]
        try:
            if self._ready_text is not None and self.log_path is not None:
                wait_for_text(
                    self.log_path, self._ready_text, self._ready_timeout_s, self.proc, offset
                )
            else:
                wait_for_port(self.host, self.port, self._ready_timeout_s, self.proc)
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to the process's data."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class DataDirServer:
    """A server child process on a loopback port with a data folder of its own: a temporary one
    (removed on stop) unless one is given. Subclasses say how to start it (`command`). `stop()`
    sends SIGTERM, then SIGKILL after `stop_timeout_s`; it is safe to call twice."""

    temp_prefix = "server-"

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        ready_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._own_data_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix=self.temp_prefix))
        self._log_path = log_path
        self._ready_timeout_s = ready_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: ChildProcess | None = None

    def command(self) -> list[str]:
        """The command line that serves on `host:port` from `data_dir`."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        proc = self._process.proc if self._process else None
        return proc is not None and proc.poll() is None

    def start(self) -> Self:
        args = self.command()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = ChildProcess(
            args,
            self.port,
            host=self.host,
            log_path=self._log_path,
            ready_timeout_s=self._ready_timeout_s,
        )
        try:
            self._process.start()
        except BaseException:
            self._remove_data_dir()
            raise
        return self

    def stop(self) -> None:
        """Stop the process (safe to call twice) and remove a temporary data folder."""
        if self._process is not None:
            self._process.stop(self._stop_timeout_s)
            self._process = None
        self._remove_data_dir()

    def kill(self) -> None:
        """SIGKILL: what a lost node looks like to its clients."""
        if self._process is not None:
            self._process.kill()

    def _remove_data_dir(self) -> None:
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]

"""The model simulator in a process of its own, and its admin API, for the resilience benchmarks.

The simulator runs as `python -m devhost.models` (so its CPU is not the client's), on a free
loopback port; its admin API (`/admin/stats`, `/admin/reset`, `/admin/faults`) is called with the
standard library only. Times are `time.monotonic()`, which is one clock for every process of the
machine (CLOCK_MONOTONIC), so a driver's records and the simulator's fault windows line up.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_KEY = "sim-key"
API_VERSION = "2024-10-21"
ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on (http://\S+)")
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SimDeployment:
    name: str
    tpm: int = 0
    rpm: int = 0
    latency_base_ms: float = 0.0
    latency_per_token_ms: float = 0.0

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "azure_openai",
            "model": "gpt-4o-mini",
            "tpm": self.tpm,
            "rpm": self.rpm,
            "latency_ms": {"base": self.latency_base_ms, "per_token": self.latency_per_token_ms},
        }


@dataclass
class SimulatorProcess:
    """`with SimulatorProcess(deployments) as sim:` starts it; `sim.url` is where it serves."""

    deployments: list[SimDeployment]
    default_max_tokens: int = 256
    url: str = ""
    _process: subprocess.Popen[bytes] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    log_path: Path = field(default_factory=Path)

    def __enter__(self) -> SimulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-sim-")
        tmp = Path(self._tmp.name)
        config = tmp / "models.json"
        config.write_text(
            json.dumps(
                {
                    "api_keys": [API_KEY],
                    "default_max_tokens": self.default_max_tokens,
                    "deployments": [d.config() for d in self.deployments],
                }
            )
        )
        self.log_path = tmp / "simulator.log"
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "devhost.models", "--port", "0", "--config", str(config)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            found = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        text = self.log_path.read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"the models simulator did not start:\n{text}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ---- admin API ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"} if data else {},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/admin/stats")  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Clear the stats and every limiter (a fresh minute for the next client)."""
        self._call("POST", "/admin/reset")

    def add_fault(self, deployment: str, **spec: Any) -> None:
        self._call("POST", "/admin/faults", {"deployment": deployment, **spec})

    def clear_faults(self) -> None:
        self._call("DELETE", "/admin/faults")


def deployment_counts(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{deployment: {requests, ok, throttled, faults}} from an /admin/stats report."""
    return {
        name: {k: int(v.get(k, 0)) for k in ("requests", "ok", "throttled", "faults")}
        for name, v in stats.get("deployments", {}).items()
    }

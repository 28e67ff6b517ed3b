"""What the resilience benchmarks share: running `bench._driver` in its own process (ours and the
bare SDK under this interpreter, LiteLLM under bench/.venv-litellm), the request they send, and
small statistics."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from bench._sim import API_KEY, API_VERSION, ROOT
from devhost.models.tokens import estimate_prompt_tokens

LITELLM_PYTHON = ROOT / "bench" / ".venv-litellm" / "bin" / "python"
LITELLM_SETUP = (
    ".venv/bin/python -m venv bench/.venv-litellm && "
    "bench/.venv-litellm/bin/pip install -r bench/requirements.txt"
)
# About 240 characters: 60 prompt tokens by the 4-characters-a-token estimate Azure's limiter
# (and the simulator's) uses, 66 with the chat format's overhead.
DEFAULT_PROMPT = (
    "Summarise our refund policy for a customer who bought an annual plan eleven months ago, "
    "paid by card, never used the premium features, and now asks whether a partial refund is "
    "possible; answer in two short paragraphs, polite and precise."
)
# The LiteLLM Router as its docs set it up for Azure deployments with limits: usage-based routing
# (v2) over the deployments' tpm/rpm, three retries, cooldowns at their defaults (a 429 cools a
# deployment down for its retry-after; other failures by the failure ratio, 5 s by default).
LITELLM_ROUTER = {"routing_strategy": "usage-based-routing-v2", "num_retries": 3}


def litellm_available() -> bool:
    return LITELLM_PYTHON.exists()


def request_charge(prompt: str, max_tokens: int) -> int:
    """What a deployment charges the request when it admits it: prompt estimate + max_tokens."""
    return estimate_prompt_tokens([{"role": "user", "content": prompt}]) + max_tokens


def base_spec(
    client: str, url: str, deployments: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    return {
        "client": client,
        "url": url,
        "api_key": API_KEY,
        "api_version": API_VERSION,
        "deployments": deployments,
        "router": dict(LITELLM_ROUTER),
        "timeout_s": 60.0,
        **fields,
    }


@dataclass
class Driver:
    """One `bench._driver` process; `result()` waits for it and returns its JSON."""

    spec: dict[str, Any]
    process: subprocess.Popen[bytes] = field(init=False)
    _stderr: Any = field(init=False)
    _spec_file: Any = field(init=False)
    _stdout: Any = field(init=False)

    def __post_init__(self) -> None:
        python = str(LITELLM_PYTHON) if self.spec["client"] == "litellm" else sys.executable
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONHASHSEED": "0"}
        # Files that outlive this call; result() closes them.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._spec_file = tempfile.NamedTemporaryFile(prefix="bench-spec-", suffix=".json")  # noqa: SIM115
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115
        self._spec_file.write(json.dumps(self.spec).encode())
        self._spec_file.flush()
        self.process = subprocess.Popen(
            [python, "-m", "bench._driver", self._spec_file.name],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
        )

    def result(self, timeout_s: float | None = None) -> dict[str, Any]:
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        self._stdout.seek(0)
        out = self._stdout.read()
        self._stdout.close()
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace")
        self._stderr.close()
        self._spec_file.close()
        if code != 0 or not out.strip():
            raise RuntimeError(
                f"the {self.spec['client']} driver failed (exit {code}):\n{err[-4000:]}"
            )
        return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (nearest rank); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def print_json(figures: dict[str, Any]) -> None:
    print(json.dumps(figures, indent=2, sort_keys=False))

"""The simulator's config file: a JSON document validated with pydantic.

```json
{"api_keys": ["sim-key"],
 "deployments": [{"name": "gpt-4o-mini-pool-a", "kind": "azure_openai", "model": "gpt-4o-mini",
                  "tpm": 200000, "rpm": 0, "latency_ms": {"base": 5, "per_token": 0.2},
                  "quality": 0.8, "faults": []}]}
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from devhost.models.faults import FaultSpec

DeploymentKind = Literal["azure_openai", "ai_inference"]

# Azure deployment names: letters, digits, '-', '_', '.'; we keep them URL-safe.
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ConfigError(ValueError):
    """The config file is missing, not JSON, or does not match the schema."""


class LatencyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base: Annotated[float, Field(ge=0, description="ms added to every served request")] = 0.0
    per_token: Annotated[float, Field(ge=0, description="ms added per completion token")] = 0.0

    def seconds_for(self, completion_tokens: int) -> float:
        return (self.base + self.per_token * completion_tokens) / 1000.0


class DeploymentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=_NAME_PATTERN)]
    kind: DeploymentKind = "azure_openai"
    model: Annotated[str, Field(min_length=1)] = "gpt-4o-mini"
    tpm: Annotated[int, Field(ge=0, description="tokens per minute; 0 = unlimited")] = 0
    rpm: Annotated[
        int, Field(ge=0, description="requests per minute; 0 = 6 per 1,000 TPM, or unlimited")
    ] = 0
    latency_ms: LatencyConfig = LatencyConfig()
    quality: Annotated[float, Field(ge=0.0, le=1.0)] = 0.8
    faults: list[FaultSpec] = []


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    deployments: list[DeploymentConfig] = []
    default_max_tokens: Annotated[
        int,
        Field(ge=1, description="what a request without max_tokens is charged for, as Azure does"),
    ] = 256
    accept_any_bearer: Annotated[
        bool, Field(description="accept any non-empty Bearer token (stands in for Entra ID)")
    ] = False

    @model_validator(mode="after")
    def _unique_names(self) -> SimulatorConfig:
        seen: set[str] = set()
        for d in self.deployments:
            if d.name in seen:
                raise ValueError(f"deployment name {d.name!r} appears more than once")
            seen.add(d.name)
        return self

    def deployment(self, name: str) -> DeploymentConfig | None:
        return next((d for d in self.deployments if d.name == name), None)


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: object, source: str = "<config>") -> SimulatorConfig:
    """Validate an already-decoded JSON document; raise ConfigError naming each bad field."""
    try:
        return SimulatorConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid models simulator config:\n{_describe(err)}") from err


def load_config(path: str | Path) -> SimulatorConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{p}: cannot read models simulator config: {err.strerror}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{p}: not valid JSON: {err.msg} (line {err.lineno})") from err
    return parse_config(data, str(p))

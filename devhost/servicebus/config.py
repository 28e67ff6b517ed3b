"""The broker's configuration, read from a file shaped like the official emulator's Config.json.

Only `UserConfig.Namespaces[].Queues[]` matters here; topics and logging sections are accepted and
ignored, so a user's existing file works unchanged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration_ms(text: str) -> int:
    """ISO-8601 durations as Service Bus writes them (`PT1M`, `P14D`, `PT0.5S`) in milliseconds."""
    match = _DURATION.match(text.strip().upper())
    if not match or text.strip().upper() in {"P", "PT"}:
        raise ValueError(f"not an ISO-8601 duration: {text!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    seconds = (
        parts.get("days", 0) * 86400
        + parts.get("hours", 0) * 3600
        + parts.get("minutes", 0) * 60
        + parts.get("seconds", 0)
    )
    return int(seconds * 1000)


class QueueProperties(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    lock_duration_ms: int = Field(default=60_000, alias="LockDuration")
    max_delivery_count: int = Field(default=10, alias="MaxDeliveryCount", ge=1)
    default_ttl_ms: int = Field(default=14 * 86_400_000, alias="DefaultMessageTimeToLive")
    dead_letter_on_expiry: bool = Field(default=False, alias="DeadLetteringOnMessageExpiration")
    requires_duplicate_detection: bool = Field(default=False, alias="RequiresDuplicateDetection")
    duplicate_window_ms: int = Field(
        default=10 * 60_000, alias="DuplicateDetectionHistoryTimeWindow"
    )
    requires_session: bool = Field(default=False, alias="RequiresSession")

    @field_validator("lock_duration_ms", "default_ttl_ms", "duplicate_window_ms", mode="before")
    @classmethod
    def _durations(cls, value: object) -> object:
        return parse_duration_ms(value) if isinstance(value, str) else value


class QueueConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    Name: str = Field(min_length=1)
    Properties: QueueProperties = Field(default_factory=QueueProperties)


class NamespaceConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    Name: str = "sbemulatorns"
    Queues: list[QueueConfig] = Field(default_factory=list)


class UserConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    Namespaces: list[NamespaceConfig] = Field(default_factory=list)


class BrokerConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    UserConfig: UserConfig

    def queues(self) -> dict[str, QueueProperties]:
        """Queue name (lower case: Service Bus names are case-insensitive) → its properties."""
        return {
            q.Name.lower(): q.Properties for ns in self.UserConfig.Namespaces for q in ns.Queues
        }


class ConfigError(ValueError):
    pass


def load_config(path: Path) -> BrokerConfig:
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
        return BrokerConfig.model_validate(raw)
    except (OSError, ValueError) as exc:  # JSON, Unicode and pydantic errors are ValueErrors
        raise ConfigError(f"bad broker config {path}: {exc}") from exc

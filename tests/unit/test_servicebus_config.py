"""The broker's Config.json: ISO-8601 durations, the official emulator's shape, clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devhost.servicebus.config import ConfigError, load_config, parse_duration_ms
from devhost.servicebus.launcher import DEFAULT_CONFIG

# The shape of the official emulator's Config.json (github.com/Azure/azure-service-bus-emulator-
# installer, ServiceBus-Emulator/Config/Config.json): topics, subscriptions with rules, forwarding
# and a Logging section sit next to the queues, and must be accepted as they are.
OFFICIAL_SHAPE: dict[str, Any] = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [
                    {
                        "Name": "Queue.1",
                        "Properties": {
                            "DeadLetteringOnMessageExpiration": False,
                            "DefaultMessageTimeToLive": "PT1H",
                            "DuplicateDetectionHistoryTimeWindow": "PT20S",
                            "ForwardDeadLetteredMessagesTo": "",
                            "ForwardTo": "",
                            "LockDuration": "PT1M",
                            "MaxDeliveryCount": 3,
                            "RequiresDuplicateDetection": False,
                            "RequiresSession": False,
                        },
                    }
                ],
                "Topics": [
                    {
                        "Name": "topic.1",
                        "Properties": {
                            "DefaultMessageTimeToLive": "PT1H",
                            "DuplicateDetectionHistoryTimeWindow": "PT20S",
                            "RequiresDuplicateDetection": False,
                        },
                        "Subscriptions": [
                            {
                                "Name": "subscription.1",
                                "Properties": {
                                    "DeadLetteringOnMessageExpiration": False,
                                    "DefaultMessageTimeToLive": "PT1H",
                                    "LockDuration": "PT1M",
                                    "MaxDeliveryCount": 3,
                                    "ForwardDeadLetteredMessagesTo": "",
                                    "ForwardTo": "",
                                    "RequiresSession": False,
                                },
                                "Rules": [
                                    {
                                        "Name": "app-prop-filter-1",
                                        "Properties": {
                                            "FilterType": "Correlation",
                                            "CorrelationFilter": {
                                                "ContentType": "application/text",
                                                "Properties": {"prop3": "value3"},
                                            },
                                        },
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
        "Logging": {"Type": "File"},
    }
}


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "Config.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("PT1M", 60_000),
        ("PT30S", 30_000),
        ("PT0.5S", 500),
        ("PT1H", 3_600_000),
        ("P14D", 14 * 86_400_000),
        ("P1DT2H3M4.5S", 93_784_500),
        ("pt5m", 300_000),
        (" PT2S ", 2_000),
        # TimeSpan.MaxValue: what Azure reports for "never expires", so exported configs hold it.
        ("P10675199DT2H48M5.4775807S", 922_337_203_685_477),
    ],
)
def test_iso8601_durations_in_milliseconds(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "P", "PT", "1M", "PT-1S", "P1W", "60", "PTM", "PT1X"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_duration_ms(text)


def test_the_shipped_config_loads_with_its_queues() -> None:
    queues = load_config(DEFAULT_CONFIG).queues()
    assert {"inference-requests", "inference-results", "feedback", "finetune-jobs"} <= set(queues)
    jobs = queues["finetune-jobs"]
    assert jobs.lock_duration_ms == 5 * 60_000
    assert jobs.max_delivery_count == 3
    assert jobs.default_ttl_ms == 7 * 86_400_000
    assert jobs.duplicate_window_ms == 3_600_000
    assert jobs.requires_duplicate_detection is True
    assert jobs.dead_letter_on_expiry is True


def test_the_official_emulator_shape_loads_and_extra_sections_are_ignored(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, OFFICIAL_SHAPE))
    queues = config.queues()
    # Service Bus entity names are case-insensitive: the broker keys them in lower case.
    assert list(queues) == ["queue.1"]
    props = queues["queue.1"]
    assert props.lock_duration_ms == 60_000
    assert props.default_ttl_ms == 3_600_000
    assert props.duplicate_window_ms == 20_000
    assert props.max_delivery_count == 3
    assert props.dead_letter_on_expiry is False
    assert props.requires_duplicate_detection is False
    assert props.requires_session is False


def test_missing_properties_take_the_service_defaults(tmp_path: Path) -> None:
    doc = {"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [{"Name": "bare"}]}]}}
    props = load_config(_write(tmp_path, doc)).queues()["bare"]
    assert props.lock_duration_ms == 60_000
    assert props.max_delivery_count == 10
    assert props.default_ttl_ms == 14 * 86_400_000
    assert props.duplicate_window_ms == 10 * 60_000
    assert props.dead_letter_on_expiry is False
    assert props.requires_duplicate_detection is False


def test_queues_of_every_namespace_are_served(tmp_path: Path) -> None:
    doc = {
        "UserConfig": {
            "Namespaces": [
                {"Name": "a", "Queues": [{"Name": "one"}]},
                {"Name": "b", "Queues": [{"Name": "Two", "Properties": {"LockDuration": "PT5S"}}]},
            ]
        }
    }
    queues = load_config(_write(tmp_path, doc)).queues()
    assert sorted(queues) == ["one", "two"]
    assert queues["two"].lock_duration_ms == 5_000


def _queue_doc(props: dict[str, Any]) -> dict[str, Any]:
    return {"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [{"Name": "q", **props}]}]}}


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        ({}, "UserConfig"),
        ({"UserConfig": None}, "UserConfig"),
        ([], "BrokerConfig"),
        (_queue_doc({"Properties": {"LockDuration": "1 minute"}}), "LockDuration"),
        (_queue_doc({"Properties": {"MaxDeliveryCount": 0}}), "MaxDeliveryCount"),
        (_queue_doc({"Properties": {"RequiresDuplicateDetection": "maybe"}}), "Requires"),
        ({"UserConfig": {"Namespaces": [{"Queues": [{"Name": ""}]}]}}, "Name"),
        ({"UserConfig": {"Namespaces": [{"Queues": [{}]}]}}, "Name"),
    ],
)
def test_invalid_documents_give_a_config_error_naming_the_field(
    tmp_path: Path, doc: object, names: str
) -> None:
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError, match="bad broker config") as err:
        load_config(path)
    assert names in str(err.value)
    assert str(path) in str(err.value)


def test_a_file_that_is_not_json_gives_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "Config.json"
    path.write_text('{"UserConfig": {', encoding="utf-8")
    with pytest.raises(ConfigError, match="bad broker config"):
        load_config(path)


def test_a_missing_file_gives_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bad broker config"):
        load_config(tmp_path / "nope.json")


def test_a_file_that_is_not_utf8_gives_a_config_error(tmp_path: Path) -> None:
    # Notepad's "Unicode" is UTF-16 with a BOM; reading it as UTF-8 fails with a
    # UnicodeDecodeError, which must surface as a ConfigError like any other bad file.
    path = tmp_path / "Config.json"
    path.write_bytes(json.dumps(OFFICIAL_SHAPE).encode("utf-16"))
    with pytest.raises(ConfigError, match="bad broker config"):
        load_config(path)


def test_a_utf8_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    # Windows editors often save UTF-8 with a BOM; the emulator's own (.NET) reader accepts it.
    path = tmp_path / "Config.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(OFFICIAL_SHAPE).encode("utf-8"))
    assert list(load_config(path).queues()) == ["queue.1"]

"""The simulator's config file: the shipped one loads, bad ones give a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devhost.models import ConfigError, load_config, parse_config
from tests.fixtures.models import STACK_CONFIG, make_models_config, model_deployment


def test_the_local_stack_config_has_the_registry_deployments() -> None:
    config = load_config(STACK_CONFIG)
    assert config.api_keys == ["sim-key"]
    by_name = {d.name: d for d in config.deployments}
    assert set(by_name) == {
        "gpt-4o-mini-pool-a",
        "gpt-4o-mini-pool-b",
        "phi-4-pool",
        "contoso-gpt-4o",
        "fabrikam-ft-v1",
        "judge",
    }
    assert by_name["judge"].judge
    assert by_name["gpt-4o-mini-pool-a"].tpm == 200_000
    assert by_name["gpt-4o-mini-pool-b"].tpm == 100_000
    assert by_name["phi-4-pool"].kind == "ai_inference"
    assert by_name["phi-4-pool"].tpm == 100_000
    assert by_name["contoso-gpt-4o"].tpm == 50_000
    pooled = by_name["gpt-4o-mini-pool-a"].quality
    assert by_name["fabrikam-ft-v1"].quality > pooled
    assert all(d.latency_ms.base < 20 for d in config.deployments)


def test_defaults_fill_a_minimal_deployment() -> None:
    config = parse_config({"api_keys": ["k"], "deployments": [{"name": "d"}]})
    [d] = config.deployments
    assert (d.kind, d.tpm, d.rpm, d.latency_ms.base, d.faults) == ("azure_openai", 0, 0, 0.0, [])
    assert config.default_max_tokens == 256


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"deployments": []}, "api_keys"),
        ({"api_keys": []}, "api_keys"),
        ({"api_keys": ["k"], "deployments": [{"name": "d", "kind": "openai"}]}, "kind"),
        ({"api_keys": ["k"], "deployments": [{"name": "d", "tpm": -5}]}, "tpm"),
        ({"api_keys": ["k"], "deployments": [{"name": "d", "quality": 2}]}, "quality"),
        ({"api_keys": ["k"], "deployments": [{"name": "a b"}]}, "name"),
        ({"api_keys": ["k"], "deployments": [{"name": "d", "tmp": 5}]}, "tmp"),
        ({"api_keys": ["k"], "deployments": [{"name": "d"}, {"name": "d"}]}, "more than once"),
        (
            {"api_keys": ["k"], "deployments": [{"name": "d", "faults": [{"kind": "x"}]}]},
            "faults.0.kind",
        ),
    ],
)
def test_bad_configs_name_the_bad_field(doc: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match="invalid models simulator config") as err:
        parse_config(doc, "cfg.json")
    assert expected in str(err.value)
    assert str(err.value).startswith("cfg.json")


def test_unreadable_or_non_json_files_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"not valid JSON.*line 1"):
        load_config(bad)


def test_make_models_config_builds_test_configs(tmp_path: Path) -> None:
    default = make_models_config()
    assert {d.name for d in default.deployments} >= {"gpt-4o-mini-pool-a", "phi-4-pool"}
    assert all(d.tpm == 0 and d.latency_ms.base == 0 for d in default.deployments)
    custom = make_models_config(
        model_deployment("x", tpm=10), {"name": "y", "kind": "ai_inference"}, default_max_tokens=8
    )
    assert [d.name for d in custom.deployments] == ["x", "y"]
    assert custom.default_max_tokens == 8
    path = tmp_path / "c.json"
    path.write_text(json.dumps(custom.model_dump()))
    assert load_config(path) == custom

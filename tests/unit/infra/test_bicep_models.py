"""The model deployments infra/ creates by default (and the README's example) use models and
versions open to new deployments, chosen by parameters with a documented default."""

from __future__ import annotations

import json
import re

import pytest

from tests.unit.infra import bicep_model as bicep
from tests.unit.infra.bicep_model import INFRA, MAIN

# (model, version) -> when and where it stopped taking new deployments, from the Azure OpenAI
# "model deprecations and retirements" page as read for issue 14 (November 2026). Add a line when
# a version is retired; a default found here would fail the first `azd up`.
RETIRED = {
    ("gpt-4o-mini", "2024-07-18"): "Global Standard retired 2026-10-01",
    ("gpt-4o", "2024-05-13"): "retired",
    ("gpt-4o", "2024-08-06"): "retired",
    ("gpt-4o", "2024-11-20"): "retired with gpt-4o-mini (issue 14)",
    ("gpt-35-turbo", "0125"): "retired",
    ("gpt-35-turbo", "1106"): "retired",
    ("gpt-35-turbo", "0613"): "retired 2025-02-13",
    ("gpt-4", "0613"): "retired 2025-06-06",
    ("gpt-4", "turbo-2024-04-09"): "retired",
}
# Preview data-plane API versions are not a default; GA versions from 2024-10-21 on serve the
# chat completions parameters the app sends (max_tokens, temperature) on the default model.
OLDEST_API_VERSION = "2024-10-21"


def _default_deployments() -> list[dict[str, object]]:
    default = bicep.section(MAIN, "parameters")["pooledDeployments"]["default"]
    resolved = bicep.resolve(default, bicep.Scope(MAIN))
    assert isinstance(resolved, list)
    return resolved


def _retired(deployments: list[dict[str, object]]) -> list[str]:
    return [
        f"{d['model']} {d['version']}: {RETIRED[(str(d['model']), str(d['version']))]}"
        for d in deployments
        if (str(d["model"]), str(d["version"])) in RETIRED
    ]


def test_default_pooled_deployment_is_not_retired() -> None:
    deployments = _default_deployments()
    assert deployments
    assert not _retired(deployments)


def test_the_retirement_check_fails_on_the_old_default() -> None:
    old = [{"name": "gpt-4o-mini", "model": "gpt-4o-mini", "version": "2024-07-18"}]
    assert _retired(old) == ["gpt-4o-mini 2024-07-18: Global Standard retired 2026-10-01"]


def test_readme_example_deployments_are_not_retired() -> None:
    readme = (INFRA / "README.md").read_text()
    (example,) = re.findall(r"```json\n(.*?)```", readme, flags=re.DOTALL)
    tenants = json.loads("{" + example + "}")["tenants"]["value"]
    deployments = [d for tenant in tenants for d in tenant["deployments"]]
    assert deployments
    assert not _retired(deployments)


@pytest.mark.parametrize(
    "param", ["pooledModelName", "pooledModelVersion", "pooledModelSku", "pooledModelCapacity"]
)
def test_model_version_sku_and_capacity_are_parameters_with_a_default(param: str) -> None:
    declaration = bicep.section(MAIN, "parameters")[param]
    assert declaration.get("default") is not None
    assert bicep.decorator(declaration, "description")
    (deployment,) = bicep.section(MAIN, "parameters")["pooledDeployments"]["default"]
    assert param in deployment.values(), f"pooledDeployments does not use {param}"


def test_the_default_api_version_is_ga_and_matches_the_app() -> None:
    from shared.settings import Settings

    infra_default = bicep.section(MAIN, "parameters")["openAiApiVersion"]["default"]
    assert "preview" not in infra_default
    assert infra_default >= OLDEST_API_VERSION
    assert Settings.model_fields["azure_openai_api_version"].default == infra_default

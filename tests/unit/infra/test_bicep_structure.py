"""The Bicep parses, its modules fit together, and it follows the azd conventions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.unit.infra import bicep_model as bicep
from tests.unit.infra.bicep_model import INFRA, MAIN, REPO

UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(INFRA)) for path in paths]


def test_infra_has_main_and_modules() -> None:
    assert MAIN.is_file()
    assert len(list((INFRA / "modules").glob("*.bicep"))) >= 5


@pytest.mark.parametrize("path", bicep.bicep_files(), ids=_ids(bicep.bicep_files()))
def test_every_bicep_file_parses(path: Path) -> None:
    parsed = bicep.parse(path)
    assert parsed.get("resources") or parsed.get("modules"), f"{path.name} declares nothing"


def _module_calls() -> list[bicep.Module]:
    return [call for path in bicep.bicep_files() for call in bicep.modules(path)]


@pytest.mark.parametrize(
    "call", _module_calls(), ids=[f"{c.file.name}:{c.symbol}" for c in _module_calls()]
)
def test_module_exists_and_gets_exactly_its_params(call: bicep.Module) -> None:
    assert call.path.is_file(), f"{call.symbol}: {call.path} does not exist"
    declared = set(bicep.section(call.path, "parameters"))
    passed = set(call.params)
    assert passed <= declared, f"{call.symbol} passes undeclared params {sorted(passed - declared)}"
    missing = bicep.required_params(call.path) - passed
    assert not missing, f"{call.symbol} does not pass required params {sorted(missing)}"
    assert bicep.body(call.config).get("name"), f"{call.symbol} has no deployment name"


def test_every_module_file_is_used() -> None:
    used = {call.path for call in _module_calls()}
    unused = [p.name for p in (INFRA / "modules").glob("*.bicep") if p.resolve() not in used]
    assert not unused


def test_main_is_subscription_scoped_and_creates_the_resource_group() -> None:
    assert bicep.parse(MAIN)["globals"]["scope"]["value"] == "subscription"
    assert bicep.resources(MAIN, "Microsoft.Resources/resourceGroups")
    for call in bicep.modules(MAIN):
        assert bicep.body(call.config).get("scope") == "rg", f"{call.symbol} is not scoped to rg"


def test_parameters_file_matches_main() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = set(bicep.section(MAIN, "parameters"))
    assert set(parameters) <= declared, sorted(set(parameters) - declared)
    assert bicep.required_params(MAIN) <= set(parameters)
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"


def test_location_parameter_is_an_azd_location() -> None:
    location = bicep.section(MAIN, "parameters")["location"]
    assert bicep.decorator(location, "metadata") == {"azd": {"type": "location"}}


def test_names_come_from_abbreviations_and_unique_string() -> None:
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    used = set(re.findall(r"\babbrs\.(\w+)", MAIN.read_text()))
    assert used, "main.bicep uses no abbreviations"
    assert used <= set(abbreviations), sorted(used - set(abbreviations))
    variables = bicep.section(MAIN, "variables")
    assert "unique_string" in json.dumps(variables["resourceToken"]["value"])
    assert bicep.function_call(variables["abbrs"]["value"], "load_json_content") == {
        "file_path": "abbreviations.json",
        "json_path": None,
        "encoding": None,
    }


def test_resources_are_tagged_for_azd() -> None:
    tags = bicep.section(MAIN, "variables")["tags"]["value"]
    assert {bicep.key(name): value for name, value in tags.items()} == {
        "azd-env-name": "environmentName"
    }
    for call in bicep.modules(MAIN):
        if "tags" in bicep.section(call.path, "parameters"):
            assert call.params.get("tags") == "tags", f"{call.symbol} is not given the tags"


def test_function_app_carries_the_azd_service_name_of_azure_yaml() -> None:
    azure_yaml = yaml.safe_load((REPO / "azure.yaml").read_text())
    call = bicep.function_app_call()
    service = bicep.resolve("serviceName", bicep.Scope.of(call))
    assert azure_yaml["services"][service]["host"] == "function"
    assert azure_yaml["services"][service]["language"] == "python"
    assert azure_yaml["infra"]["path"] == "infra"
    ((_, site),) = bicep.resources(call.path, "Microsoft.Web/sites").items()
    tags = bicep.function_call(bicep.body(site["config"])["tags"], "union")
    assert tags is not None, "the site's tags are not union(tags, { azd-service-name })"
    assert tags["arg_1"] == "tags"
    assert {bicep.key(name): value for name, value in tags["arg_2"].items()} == {
        "azd-service-name": "serviceName"
    }


def test_outputs_are_upper_snake_or_setting_names() -> None:
    from shared.settings import Settings

    setting_names = {
        choice
        for field in Settings.model_fields.values()
        if field.validation_alias is not None
        for choice in getattr(field.validation_alias, "choices", [field.validation_alias])
        if isinstance(choice, str)
    }
    for name in bicep.section(MAIN, "outputs"):
        assert UPPER_SNAKE.match(name) or name in setting_names, name


def test_no_preview_api_versions() -> None:
    for path in bicep.bicep_files():
        for symbol, resource in bicep.resources(path).items():
            assert "preview" not in resource["api_version"], f"{path.name}:{symbol}"
            assert resource["api_version"] >= "2020-02-02", f"{path.name}:{symbol} is old"


def test_model_deployment_loops_run_one_at_a_time() -> None:
    deployments = bicep.all_resources("Microsoft.CognitiveServices/accounts/deployments")
    assert deployments
    for path, symbol, resource in deployments:
        assert bicep.loop_array(resource["config"]), f"{path.name}:{symbol} is not a loop"
        assert bicep.decorator(resource, "batchSize") == 1, f"{path.name}:{symbol}"


def test_openai_gets_the_pooled_then_the_dedicated_tenants_deployments() -> None:
    expr = bicep.resolve(bicep.module("openAi").params["deployments"], bicep.Scope(MAIN))
    combined = bicep.function_call(expr, "concat")
    assert combined is not None, "deployments are not concat(pooled, dedicated)"
    pooled = combined["arg_1"]
    default = bicep.section(MAIN, "parameters")["pooledDeployments"]["default"]
    assert pooled == bicep.resolve(default, bicep.Scope(MAIN))
    for deployment in pooled:
        assert {"name", "model", "version", "sku", "capacity"} <= set(deployment)
    dedicated = combined["arg_2"]
    assert bicep.function_call(dedicated, "flatten") is not None
    assert {"filter", "mode", "dedicated", "deployments"} <= bicep.strings(dedicated)
    assert bicep.section(MAIN, "parameters")["tenants"]["default"] == []


def test_readme_covers_costs_parameters_and_a_dedicated_tenant_example() -> None:
    readme = (INFRA / "README.md").read_text()
    for heading in ("## What gets deployed", "## What it costs idle", "## Parameters"):
        assert heading in readme, heading
    for name in bicep.section(MAIN, "parameters"):
        assert f"`{name}`" in readme, f"infra/README.md does not document {name}"
    (example,) = re.findall(r"```json\n(.*?)```", readme, flags=re.DOTALL)
    tenants = json.loads("{" + example + "}")["tenants"]["value"]
    ((_, _, deployments),) = bicep.all_resources("Microsoft.CognitiveServices/accounts/deployments")
    item = bicep.loop_item(deployments["config"])
    used = {
        path.split(".", 1)[1]
        for node in bicep.walk(bicep.body(deployments["config"]))
        if (path := bicep.accessor(node)) and path.startswith(f"{item}.")
    }
    assert used >= {"name", "model", "version", "capacity"}
    for tenant in tenants:
        assert tenant["mode"] == "dedicated"
        for deployment in tenant["deployments"]:
            assert used <= set(deployment), sorted(used - set(deployment))
            assert deployment["name"].startswith(tenant["id"] + "-")


# pycep's names of the decorators that bound a parameter's value.
_CONSTRAINTS = ("min_value", "max_value", "min_length", "max_length", "allowed")


def _missing_constraints(outer: dict[str, object], inner: dict[str, object]) -> list[str]:
    """The bounds the module parameter (`inner`) declares that the main parameter lacks."""
    missing = []
    for kind in _CONSTRAINTS:
        wanted = bicep.decorator(inner, kind)
        if wanted is None:
            continue
        have = bicep.decorator(outer, kind)
        if kind == "allowed":
            if have is None or not set(have) <= set(wanted):
                missing.append(f"@allowed within {wanted} (has {have})")
        elif have != wanted:
            missing.append(f"@{kind}({wanted}) (has {have})")
    return missing


def _passed_through() -> list[tuple[str, str, str]]:
    """(main parameter, module symbol, module parameter) where main passes a parameter as is."""
    main_params = bicep.section(MAIN, "parameters")
    return [
        (value, call.symbol, name)
        for call in bicep.modules(MAIN)
        for name, value in call.params.items()
        if isinstance(value, str) and value in main_params
    ]


@pytest.mark.parametrize(
    ("main_param", "symbol", "module_param"),
    _passed_through(),
    ids=[f"{m}->{s}.{p}" for m, s, p in _passed_through()],
)
def test_main_parameters_carry_the_constraints_of_the_module_parameter_they_feed(
    main_param: str, symbol: str, module_param: str
) -> None:
    """A value the module would reject fails only once the deployment reaches the module, with a
    less helpful message: main.bicep declares the same bounds, so `azd` rejects it at once."""
    outer = bicep.section(MAIN, "parameters")[main_param]
    inner = bicep.section(bicep.module(symbol).path, "parameters")[module_param]
    assert not _missing_constraints(outer, inner), (main_param, _missing_constraints(outer, inner))


def test_the_constraint_check_fails_on_a_missing_bound(tmp_path: Path) -> None:
    seeded = tmp_path / "seeded.bicep"
    seeded.write_text("@minValue(1)\nparam tooLoose int = 100\nparam looseChoice string\n")
    params = bicep.section(seeded, "parameters")
    inner = bicep.section(bicep.module("functionApp").path, "parameters")
    assert _missing_constraints(params["tooLoose"], inner["maximumInstanceCount"]) == [
        "@min_value(40) (has 1)",
        "@max_value(1000) (has None)",
    ]
    assert _missing_constraints(params["looseChoice"], inner["pythonVersion"])

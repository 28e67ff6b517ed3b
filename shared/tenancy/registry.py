"""The tenant and deployment registry: who may use which model deployment, and how much.

One JSON or YAML document (`devhost/registry.json` locally, a blob in Azure) holds both lists:

    version: 1
    deployments:
      - name: gpt-4o-mini-pool-a          # unique; what routing, logs and usage records call it
        kind: azure_openai                # or ai_inference
        mode: pooled                      # pooled | dedicated | tuned
        endpoint: ${AZURE_OPENAI_ENDPOINT}
        model: gpt-4o-mini-pool-a         # the deployment name at the endpoint (default: name)
        capacity: {tokens_per_minute: 200000, requests_per_minute: 1200}
        priority: 0                       # lower is tried first
      - {name: fabrikam-ft-v1, mode: tuned, owner_tenant: fabrikam, base: gpt-4o-mini-pool-a, ...}
    tenants:
      - id: tailwind
        mode: pooled
        deployments: [gpt-4o-mini-pool-a]  # optional; see Registry.allowed_for
        quota: {tokens_per_minute: 50000, requests_per_minute: 300, max_concurrent: 8}
      - {id: contoso, mode: dedicated, fallback_to_pooled: false}  # true: pooled after its own
      - id: fabrikam
        mode: tuned
        tuned_deployment: fabrikam-ft-v1
        policy:                            # what may be kept and learned from (DataPolicy)
          log_prompts: true                # scrubbed prompt and answer text may be kept
          share_for_training: false        # may train a model other tenants use
          allow_tuning: true               # drift may enqueue a fine-tuning job
          tuning_cooldown_hours: 24
          min_training_examples: 50

Which deployments serve a tenant, by mode and fields (docs/contracts.md has the same table;
`routing.Router.candidates` gives the order, tests/unit/test_routing.py tests each row):

    mode       deployments  tuned_deployment  fallback_to_pooled  candidates, in order
    pooled     -            -                 -                   every pooled deployment
    pooled     listed       -                 -                   the listed (pooled only)
    dedicated  -            -                 false               every deployment it owns
    dedicated  listed       -                 false               the listed (its own only)
    dedicated  -            -                 true                its own, then every pooled one
    dedicated  listed       -                 true                the listed own, then listed pooled
    tuned      -            -                 -                   every pooled deployment (not tuned
                                                                  yet: served as a pooled tenant)
    tuned      listed       -                 -                   the listed (pooled only)
    tuned      -            set               -                   the tuned one, its base, then
                                                                  every other pooled deployment
    tuned      listed       set               -                   the tuned one, its base (both
                                                                  listed), then the other listed

Within each group: lower priority first, then spread by capacity. A deployment whose endpoint is
not configured is skipped wherever it stands; none left is `no_usable_deployment`. A tuned tenant's
other tuned deployments (candidates, older versions) serve nothing until promoted.

Isolation is checked when the document is loaded: a tenant that lists another tenant's dedicated
or tuned deployment makes the whole document invalid (the router checks again per request).
`${NAME}` in an endpoint is replaced from the environment; a deployment whose endpoint names an
unset variable stays in the registry but is unusable (the router skips it), so one optional
endpoint missing in one environment does not take every tenant down.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.contracts import TENANT_ID_PATTERN, error_location
from shared.storage import names

BLOB_SCHEME: Final = "blob://"
_ENV_REFERENCE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RegistryError(Exception):
    """The registry document cannot be used; the message lists every problem found."""


class IsolationMode(StrEnum):
    POOLED = "pooled"
    DEDICATED = "dedicated"
    TUNED = "tuned"


class DeploymentKind(StrEnum):
    AZURE_OPENAI = "azure_openai"  # served with openai.AsyncAzureOpenAI
    AI_INFERENCE = "ai_inference"  # served with azure.ai.inference.aio.ChatCompletionsClient


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Capacity(_Strict):
    tokens_per_minute: int = Field(gt=0)
    requests_per_minute: int | None = Field(default=None, gt=0)


class Quota(_Strict):
    """A tenant's limits (None: no limit); enforced by the resilience layer."""

    tokens_per_minute: int | None = Field(default=None, gt=0)
    requests_per_minute: int | None = Field(default=None, gt=0)
    max_concurrent: int | None = Field(default=None, gt=0)


class Deployment(_Strict):
    name: str = Field(min_length=1, max_length=64)
    kind: DeploymentKind
    mode: IsolationMode
    endpoint: str | None = Field(
        description="after ${ENV} expansion; None when a variable it names is not set"
    )
    endpoint_problem: str | None = Field(default=None, description="why endpoint is None")
    model: str = Field(default="", description="deployment name at the endpoint; default: name")
    capacity: Capacity
    priority: int = Field(default=0, ge=0)
    owner_tenant: str | None = None
    base: str | None = Field(default=None, description="tuned deployments: the base deployment")
    finetune_model: str | None = Field(
        default=None,
        max_length=256,
        description="the model a fine-tuning job starts from when this deployment is the base "
        "(Azure OpenAI: e.g. gpt-4o-mini-2024-07-18; Azure ML: a model asset); None: not tunable",
    )
    purpose: Literal["serving", "evaluation"] = Field(
        default="serving",
        description="evaluation: a judge model the fine-tuning gate scores answers with; it "
        "never serves a tenant's requests (routing leaves it out)",
    )
    model_version: str | None = Field(
        default=None,
        max_length=64,
        description="the model version it serves (e.g. 2024-07-18, ft-3); drift is tracked per "
        "deployment and model version, so a new version starts a new reference window",
    )
    content_safety: bool = Field(
        default=False,
        description="check prompts and answers with Azure AI Content Safety (text analysis and "
        "prompt shields) around each call: for a model without a built-in content filter "
        "(shared.security.content_safety); needs CONTENT_SAFETY_ENDPOINT",
    )

    @model_validator(mode="after")
    def _model_defaults_to_name(self) -> Deployment:
        if not self.model:
            object.__setattr__(self, "model", self.name)
        return self

    @property
    def usable(self) -> bool:
        return self.endpoint is not None

    @property
    def shared(self) -> bool:
        return self.mode is IsolationMode.POOLED


class DataPolicy(_Strict):
    """What a tenant agreed to: whether text may be kept and what it may train (consent).

    Defaults are the most private: nothing kept, nothing shared, no tuning. Every writer of text
    for analysis or training goes through `shared.feedback.consent`, which reads this policy.
    """

    log_prompts: bool = Field(
        default=False,
        description="scrubbed prompt, answer and correction text may be kept (inference log, "
        "feedback, training sets); without it only ratings and text-free features are kept",
    )
    share_for_training: bool = Field(
        default=False,
        description="this tenant's data may be in a training set for a model other tenants use",
    )
    allow_tuning: bool = Field(
        default=False, description="confirmed drift may enqueue a fine-tuning job for the tenant"
    )
    tuning_cooldown_hours: float = Field(default=24.0, ge=0, le=24 * 90)
    min_training_examples: int = Field(default=50, ge=1, le=1_000_000)
    gpu_minutes_per_month: float | None = Field(
        default=None,
        gt=0,
        description="fine-tuning jobs' GPU-minutes per calendar month (UTC); None: no budget",
    )


class Tenant(_Strict):
    id: str = Field(pattern=TENANT_ID_PATTERN)
    mode: IsolationMode
    deployments: tuple[str, ...] | None = Field(
        default=None, description="what it may use; None: the default for its mode"
    )
    tuned_deployment: str | None = Field(
        default=None, description="tuned tenants: the tuned deployment currently promoted"
    )
    quota: Quota = Field(default_factory=Quota)
    reply_queues: tuple[str, ...] = Field(
        default=(names.INFERENCE_RESULTS,), description="queues its reply_to may name"
    )
    fallback_to_pooled: bool = Field(
        default=False,
        description="dedicated tenants: after its own deployments, the pooled ones may serve it "
        "(its data then reaches shared deployments; off unless its policy allows that)",
    )
    policy: DataPolicy = Field(default_factory=DataPolicy)

    @property
    def reaches_pooled(self) -> bool:
        """May this tenant's data reach a pooled deployment at all?"""
        return self.mode is not IsolationMode.DEDICATED or self.fallback_to_pooled


class Registry(_Strict):
    version: Literal[1] = 1
    deployments: tuple[Deployment, ...]
    tenants: tuple[Tenant, ...]

    @cached_property
    def deployment_by_name(self) -> dict[str, Deployment]:
        return {d.name: d for d in self.deployments}

    @cached_property
    def serving_by_name(self) -> dict[str, Deployment]:
        """Deployments that may serve tenants (not the evaluation judges), in document order."""
        return {d.name: d for d in self.deployments if d.purpose == "serving"}

    @cached_property
    def tenant_by_id(self) -> dict[str, Tenant]:
        return {t.id: t for t in self.tenants}

    def tenant(self, tenant_id: str) -> Tenant | None:
        return self.tenant_by_id.get(tenant_id)

    def allowed_for(self, tenant: Tenant) -> tuple[Deployment, ...]:
        """The deployments a tenant may reach, in document order (the table in this module's
        docstring; `routing.Router` orders them).

        An explicit list is taken as it is (the loader checked it). Without one: a pooled tenant
        gets every pooled deployment; a dedicated tenant every deployment it owns, and every
        pooled one too when `fallback_to_pooled`; a tuned tenant its current tuned deployment
        (if any) and every pooled deployment, its base among them.
        """
        serving = self.serving_by_name
        if tenant.deployments is not None:
            return tuple(serving[n] for n in tenant.deployments if n in serving)
        if tenant.mode is IsolationMode.DEDICATED:
            return tuple(
                d
                for d in serving.values()
                if d.owner_tenant == tenant.id or (d.shared and tenant.fallback_to_pooled)
            )
        tuned = tenant.tuned_deployment if tenant.mode is IsolationMode.TUNED else None
        return tuple(d for d in serving.values() if d.shared or (tuned and d.name == tuned))

    @model_validator(mode="after")
    def _check_references_and_isolation(self) -> Registry:
        problems: list[str] = []
        problems += _duplicates("deployments", [d.name for d in self.deployments])
        problems += _duplicates("tenants", [t.id for t in self.tenants])
        tenant_ids = {t.id for t in self.tenants}
        by_name = {d.name: d for d in self.deployments}
        for d in self.deployments:
            problems += _deployment_problems(d, tenant_ids, by_name)
        for t in self.tenants:
            problems += _tenant_problems(t, by_name)
        if problems:
            raise ValueError("\n".join(problems))
        return self


def _duplicates(what: str, keys: list[str]) -> list[str]:
    counts = Counter(keys)
    return [f"{what}: {k!r} is listed more than once" for k in sorted(counts) if counts[k] > 1]


def _deployment_problems(
    d: Deployment, tenant_ids: set[str], by_name: Mapping[str, Deployment]
) -> list[str]:
    at = f"deployment {d.name!r}"
    if d.shared:
        problems = [f"{at}: a pooled deployment has no owner_tenant"] if d.owner_tenant else []
        if d.base:
            problems.append(f"{at}: only tuned deployments have a base")
        return problems
    problems = []
    if d.owner_tenant is None:
        problems.append(f"{at}: a {d.mode} deployment needs owner_tenant")
    elif d.owner_tenant not in tenant_ids:
        problems.append(f"{at}: owner_tenant {d.owner_tenant!r} is not a tenant of this registry")
    if d.mode is IsolationMode.TUNED:
        base = by_name.get(d.base or "")
        if base is None:
            problems.append(f"{at}: a tuned deployment needs base, the name of a deployment")
        elif not base.shared:
            problems.append(f"{at}: base {base.name!r} must be a pooled deployment")
    elif d.base:
        problems.append(f"{at}: only tuned deployments have a base")
    return problems


def _tenant_problems(t: Tenant, by_name: Mapping[str, Deployment]) -> list[str]:
    at = f"tenant {t.id!r}"
    problems: list[str] = []
    if len(set(t.reply_queues) & set(names.INPUT_QUEUES)):
        problems.append(f"{at}: reply_queues may not name an input queue of the app")
    listed = t.deployments or ()
    for name in listed:
        d = by_name.get(name)
        if d is None:
            problems.append(f"{at}: deployment {name!r} is not in the registry")
        elif d.purpose != "serving":
            problems.append(f"{at}: deployment {name!r} is for evaluation; it serves no tenant")
        elif not d.shared and d.owner_tenant != t.id:
            problems.append(
                f"{at}: deployment {name!r} is a {d.mode} deployment of tenant "
                f"{d.owner_tenant!r}; a tenant reaches only pooled deployments and its own"
            )
        elif d.shared and not t.reaches_pooled:
            problems.append(
                f"{at}: deployment {name!r} is pooled; a dedicated tenant reaches only its own "
                "(unless fallback_to_pooled)"
            )
        elif t.mode is IsolationMode.POOLED and not d.shared:
            problems.append(f"{at}: deployment {name!r} is {d.mode}; a pooled tenant uses pooled")
    if t.fallback_to_pooled and t.mode is not IsolationMode.DEDICATED:
        problems.append(f"{at}: fallback_to_pooled is for dedicated tenants only")
    if t.mode is not IsolationMode.TUNED:
        if t.tuned_deployment is not None:
            problems.append(f"{at}: only tuned tenants have a tuned_deployment")
        return problems
    if t.tuned_deployment is None:
        return problems  # not tuned yet: served by its pooled deployments
    tuned = by_name.get(t.tuned_deployment)
    if tuned is None:
        problems.append(f"{at}: tuned_deployment {t.tuned_deployment!r} is not in the registry")
    elif tuned.mode is not IsolationMode.TUNED or tuned.owner_tenant != t.id:
        problems.append(
            f"{at}: tuned_deployment {tuned.name!r} must be a tuned deployment owned by {t.id!r}"
        )
    elif t.deployments is not None:
        for needed in (tuned.name, tuned.base):
            if needed not in listed:
                problems.append(f"{at}: deployments must include {needed!r} (tuned and its base)")
    return problems


def expand_environment(text: str, env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """Replace each `${NAME}` from env: (expanded, None), or (None, problem) if one is unset."""
    missing = [m for m in _ENV_REFERENCE.findall(text) if not env.get(m)]
    if missing:
        return None, f"environment variable(s) not set: {', '.join(sorted(set(missing)))}"
    return _ENV_REFERENCE.sub(lambda m: env[m.group(1)], text), None


def load_document(text: str | bytes, *, source: str = "registry") -> dict[str, Any]:
    """The registry document as data (JSON, or YAML when it is not JSON), unchecked and with its
    `${ENV}` references as written. RegistryError if it is neither, or not a mapping."""
    try:
        document: Any = json.loads(text)
    except ValueError:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RegistryError(f"{source}: neither JSON nor YAML ({exc})") from None
    if not isinstance(document, dict):
        raise RegistryError(f"{source}: the document must be a mapping with deployments, tenants")
    return document


def parse_registry(
    text: str | bytes, *, source: str = "registry", env: Mapping[str, str] | None = None
) -> Registry:
    """Parse and check a registry document (JSON, or YAML when it is not JSON)."""
    environment = os.environ if env is None else env
    document = load_document(text, source=source)
    deployments = document.get("deployments")
    if isinstance(deployments, list):
        document = {**document, "deployments": [_expand(d, environment) for d in deployments]}
    try:
        return Registry.model_validate(document)
    except ValidationError as exc:
        raise RegistryError(f"{source}: " + "\n".join(_error_lines(exc, document))) from None


def _expand(deployment: object, env: Mapping[str, str]) -> object:
    if not isinstance(deployment, dict) or not isinstance(deployment.get("endpoint"), str):
        return deployment
    endpoint, problem = expand_environment(deployment["endpoint"], env)
    return {**deployment, "endpoint": endpoint, "endpoint_problem": problem}


def _error_lines(exc: ValidationError, document: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for item in exc.errors(include_input=False, include_url=False):
        loc = item["loc"]
        if not loc and "error" in item.get("ctx", {}):
            lines.append(str(item["ctx"]["error"]))  # the cross checks: one problem per line
            continue
        where = error_location(loc)
        # Name the entry, not just its index: `deployments[2] ('phi-4-pool').kind`.
        if len(loc) >= 2 and loc[0] in ("deployments", "tenants") and isinstance(loc[1], int):
            entries = document.get(str(loc[0]))
            entry = entries[loc[1]] if isinstance(entries, list) else None
            key = entry.get("name", entry.get("id")) if isinstance(entry, dict) else None
            if isinstance(key, str):
                rest = error_location(loc[2:]) if len(loc) > 2 else ""
                joint = "" if not rest or rest.startswith("[") else "."
                where = f"{loc[0]}[{loc[1]}] ({key!r}){joint}{rest}"
        lines.append(f"{where}: {item['msg']}")
    return lines


def read_registry_file(path: str | Path, env: Mapping[str, str] | None = None) -> Registry:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"{path}: cannot be read ({exc.strerror})") from None
    return parse_registry(text, source=str(path), env=env)


def blob_location(reference: str) -> tuple[str, str] | None:
    """`blob://<container>/<name>` as (container, name); None for a file path."""
    if not reference.startswith(BLOB_SCHEME):
        return None
    container, _, name = reference[len(BLOB_SCHEME) :].partition("/")
    if not container or not name:
        raise RegistryError(f"{reference!r}: expected blob://<container>/<name>")
    return container, name

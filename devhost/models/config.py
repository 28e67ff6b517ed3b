"""The simulator's config file: a JSON document validated with pydantic.

```json
{"api_keys": ["sim-key"],
 "answer_verdicts": true,
 "deployments": [{"name": "gpt-4o-mini-pool-a", "kind": "azure_openai", "model": "gpt-4o-mini",
                  "tpm": 200000, "rpm": 0, "latency_ms": {"base": 5, "per_token": 0.2},
                  "quality": 0.8, "quality_by_topic": {"billing": 0.85, "legal": 0.6},
                  "quality_schedule": [{"after_requests": 150, "quality": 0.55}],
                  "faults": []}]}
```

Quality (see devhost/models/quality.py): the chance (0..1) that a deployment's answer is good.
- `quality`: for a prompt of any topic not in `quality_by_topic`.
- `quality_by_topic`: per topic, the first `#tag` of the last user message (lowercase; a prompt
  without one is topic "general").
- `quality_schedule`: steps `{"after_requests": n, "quality": q, "quality_by_topic": {...}}` in
  ascending, unique `after_requests`. Once the deployment has served n successful requests (its
  n+1-th onward), `quality` becomes q (when given) and each listed topic's quality becomes its
  value; the steps apply in turn, each on top of the ones before (a topic that no step lists
  keeps its quality). This is how a deployment decays mid-run (quality drift).
- `answer_verdicts` (top level, default false): draw a verdict per answer, good with that chance,
  and append ` [sim: good answer]` or ` [sim: poor answer]` to the reply text; headers
  `x-sim-topic` and `x-sim-verdict` say the same. Off, replies are as without a quality model.

A deployment may also be:
- `"judge": true`: an evaluation judge (devhost/models/judge.py) that answers a similarity prompt
  with one integer 1-5 and never gets a verdict mark;
- `"tuned": {"base": "<deployment>", "examples_by_topic": {"billing": 40}, "job": "..."}`: a
  model fine-tuned from `base` (written by the simulator when a fine-tuned model is deployed or
  `PUT /admin/tuned/{name}` is called; quality rule in devhost/models/quality.py).

Fine-tuning (top level, every key optional; see devhost/models/finetuning.py):

```json
"fine_tuning": {"validating_s": 1.0, "queued_s": 1.0, "running_s": 2.0, "min_examples": 10,
                "gain": 0.15, "examples_for_full_gain": 50, "max_quality": 0.97}
```
- `validating_s`, `queued_s`, `running_s`: seconds a job spends in `validating_files`, `queued`
  and `running` (a job whose files fail validation is `failed` after `validating_s`);
- `min_examples`: fewer training examples than this fail the job (Azure OpenAI asks for 10);
- `gain`, `examples_for_full_gain`, `max_quality`: the tuned-quality rule (quality.py).
"""

from __future__ import annotations

import json
import re
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from devhost.models.faults import FaultSpec

DeploymentKind = Literal["azure_openai", "ai_inference"]

# Azure deployment names: letters, digits, '-', '_', '.'; we keep them URL-safe.
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

TOPIC_PATTERN = r"[a-z0-9][a-z0-9_-]{0,31}"
"""A prompt topic, as written after '#' in a prompt (then lowercased); quality.py reads it."""
_TOPIC_KEY = re.compile(rf"^{TOPIC_PATTERN}$")

Chance = Annotated[float, Field(ge=0.0, le=1.0)]


class ConfigError(ValueError):
    """The config file is missing, not JSON, or does not match the schema."""


class LatencyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base: Annotated[float, Field(ge=0, description="ms added to every served request")] = 0.0
    per_token: Annotated[float, Field(ge=0, description="ms added per completion token")] = 0.0

    def seconds_for(self, completion_tokens: int) -> float:
        return (self.base + self.per_token * completion_tokens) / 1000.0


def _check_topics(topics: dict[str, float]) -> dict[str, float]:
    for topic in topics:
        if not _TOPIC_KEY.match(topic):
            raise ValueError(
                f"topic {topic!r} must be lowercase letters, digits, '_' or '-' "
                "(1 to 32, not starting with '_' or '-'), as written after '#' in a prompt"
            )
    return topics


TopicQualities = Annotated[dict[str, Chance], AfterValidator(_check_topics)]


class QualityStep(BaseModel):
    """From the deployment's `after_requests`-th successful request on, these qualities hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after_requests: Annotated[int, Field(ge=0)]
    quality: Chance | None = None
    quality_by_topic: TopicQualities = {}

    @model_validator(mode="after")
    def _changes_something(self) -> QualityStep:
        if self.quality is None and not self.quality_by_topic:
            raise ValueError("a quality step needs 'quality', 'quality_by_topic' or both")
        return self


ExampleCounts = Annotated[
    dict[str, Annotated[int, Field(ge=0)]],
    AfterValidator(_check_topics),
]


class TunedFrom(BaseModel):
    """What a tuned deployment was trained on: its base deployment and, per prompt topic, the
    number of training examples (`topic_of` of each example's last user message)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: Annotated[str, Field(pattern=_NAME_PATTERN)]
    examples_by_topic: ExampleCounts = {}
    job: Annotated[
        str | None, Field(description="the fine-tuning job (or 'admin') that produced it")
    ] = None


class FineTuningConfig(BaseModel):
    """How simulated fine-tuning jobs run and what they change (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    validating_s: Annotated[float, Field(ge=0, description="seconds in validating_files")] = 1.0
    queued_s: Annotated[float, Field(ge=0, description="seconds in queued")] = 1.0
    running_s: Annotated[float, Field(ge=0, description="seconds in running")] = 2.0
    min_examples: Annotated[
        int, Field(ge=1, description="fewer training examples fail the job (Azure: 10)")
    ] = 10
    gain: Annotated[Chance, Field(description="quality added on a fully trained topic")] = 0.15
    examples_for_full_gain: Annotated[
        int, Field(ge=1, description="examples of a topic that earn the whole gain")
    ] = 50
    max_quality: Annotated[Chance, Field(description="tuning never lifts a topic above")] = 0.97


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
    quality: Chance = 0.8
    quality_by_topic: TopicQualities = {}
    quality_schedule: list[QualityStep] = []
    faults: list[FaultSpec] = []
    judge: Annotated[
        bool, Field(description="answer similarity prompts with a 1-5 score (judge.py)")
    ] = False
    tuned: TunedFrom | None = None

    @model_validator(mode="after")
    def _schedule_ascends(self) -> DeploymentConfig:
        after = [step.after_requests for step in self.quality_schedule]
        if any(b <= a for a, b in pairwise(after)):
            raise ValueError(
                f"quality_schedule: after_requests must be ascending and unique, got {after}"
            )
        if self.judge and self.tuned is not None:
            raise ValueError("a judge deployment cannot also be tuned")
        return self


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
    answer_verdicts: Annotated[
        bool,
        Field(description="mark each reply good or poor, drawn with the deployment's quality"),
    ] = False
    fine_tuning: FineTuningConfig = FineTuningConfig()

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

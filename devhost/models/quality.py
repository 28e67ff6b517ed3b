"""The quality model: the chance (0..1) that a deployment's answer to a request is good.

The chance depends on the deployment and the prompt's topic, and can change after the deployment
has served some requests (see `quality`, `quality_by_topic` and `quality_schedule` in
devhost/models/config.py):

- The topic of a request is the first `#tag` in its last user message: `#` then a letter or digit
  and up to 31 more letters, digits, `_` or `-` (regex `#([a-z0-9][a-z0-9_-]{0,31})`, case
  insensitive), lowercased. `"Why was I charged twice? #Billing #refunds"` is topic "billing"; a
  prompt without a tag (or a request without a user message) is topic "general".
- `ScheduledQuality`, the simulator's default model, counts the successful requests it scores per
  deployment (the simulator calls `score` once per served request) and applies the deployment's
  `quality_schedule` to them: the n+1-th request onward is scored with the steps whose
  `after_requests` is n or less. `draw` then picks a verdict, good with that chance, from a
  `random.Random` per deployment seeded with its name, so a run is reproducible given the order of
  its requests. Its counters and generators are guarded by a lock (the simulator may be driven from
  several threads), and start again on the simulator's reset or when a deployment is replaced.

The chance is sent in the `x-sim-quality` response header and averaged in the stats. With
`answer_verdicts` on, each choice's reply text ends with `GOOD_ANSWER_MARK` or `POOR_ANSWER_MARK`
(the marks' three words count as completion tokens, within max_tokens where it allows them), and
the `x-sim-topic` and `x-sim-verdict` (`good` or `poor`; one per choice, comma-separated, when
n > 1) headers are sent. A synthetic user reads a reply's verdict with `verdict_of`.

Other modules (drift, fine-tuning) may pass their own `QualityModel` to the simulator; one that
also has `draw` and `reset` (a `VerdictModel`) draws the verdicts too, otherwise the simulator draws
them with `Verdicts`.

Tuned deployments (config `tuned`: a base deployment and, per topic, the number of training
examples; made by a fine-tuning job's deployment or `PUT /admin/tuned/{name}`) are scored by
`tuned_quality`, not by the quality model: on a topic with k > 0 training examples,

    quality = max(base, min(max_quality, base + gain * min(1, k / examples_for_full_gain)))

where `base` is the base deployment's quality on that topic now (its schedule applied to the
requests it has served so far, read with the quality model's `peek`, which counts nothing; a
quality model without `peek` gives the base's quality before any request). A topic absent from
the training data keeps the base's quality, so a tuned deployment follows its base's drift on
the topics it was not trained on; tuning itself has no decay schedule. `gain`,
`examples_for_full_gain` and `max_quality` come from the config's `fine_tuning` block (defaults
0.15, 50 and 0.97). The outer `max` keeps a base already above `max_quality` where it is: training
never makes a topic worse. If the base deployment is gone (or the chain of bases loops), the
qualities the tuned deployment copied from its base when it was made stand in for it.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from devhost.models.config import TOPIC_PATTERN, DeploymentConfig, FineTuningConfig
from devhost.models.replies import Reply
from devhost.models.tokens import message_text

GOOD_ANSWER_MARK = " [sim: good answer]"
POOR_ANSWER_MARK = " [sim: poor answer]"
MARK_TOKENS = len(GOOD_ANSWER_MARK.split())
"""Completion tokens a mark adds (one per word, as replies.py counts them); both marks have 3."""

GENERAL_TOPIC = "general"
_TAG = re.compile(rf"#({TOPIC_PATTERN})", re.IGNORECASE)
_GOOD = GOOD_ANSWER_MARK.strip()
_POOR = POOR_ANSWER_MARK.strip()


def topic_of(messages: Sequence[Mapping[str, Any]]) -> str:
    """The first `#tag` of the last user message, lowercased; "general" when there is none."""
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    if last_user is None:
        return GENERAL_TOPIC
    found = _TAG.search(message_text(last_user))
    return found.group(1).lower() if found else GENERAL_TOPIC


def quality_at(deployment: DeploymentConfig, topic: str, served: int) -> float:
    """The chance of a good answer on `topic` once the deployment has served `served` requests:
    the steps in force apply in turn; a topic with a quality of its own (from the config or a
    step) keeps it until a step lists that topic again."""
    general = deployment.quality
    own = deployment.quality_by_topic.get(topic)
    for step in deployment.quality_schedule:
        if step.after_requests > served:
            break
        if step.quality is not None:
            general = step.quality
        own = step.quality_by_topic.get(topic, own)
    return general if own is None else own


def tuned_quality(base: float, examples: int, fine_tuning: FineTuningConfig) -> float:
    """The chance of a good answer on a topic after tuning on `examples` examples of it, from
    the base's chance `base` on that topic (see the module docstring)."""
    if examples <= 0:
        return base
    share = min(1.0, examples / fine_tuning.examples_for_full_gain)
    return max(base, min(fine_tuning.max_quality, base + fine_tuning.gain * share))


def verdict_of(text: str) -> bool | None:
    """The verdict marked in a reply: True good, False poor, None when it has no mark."""
    good, poor = text.rfind(_GOOD), text.rfind(_POOR)
    if good < 0 and poor < 0:
        return None
    return good > poor


def mark_reply(reply: Reply, good: bool) -> Reply:
    """The reply with its verdict's mark appended, the mark's words counted as tokens."""
    text = reply.text + (GOOD_ANSWER_MARK if good else POOR_ANSWER_MARK)
    return Reply(text.lstrip(), reply.tokens + MARK_TOKENS, reply.finish_reason)


class QualityModel(Protocol):
    def score(
        self,
        deployment: DeploymentConfig,
        tenant: str,
        messages: Sequence[Mapping[str, Any]],
    ) -> float:
        """The chance (0..1) of a good answer from this deployment to these messages for this
        tenant. The simulator calls it once per served request."""
        ...


@runtime_checkable
class QualityPeek(Protocol):
    def peek(
        self,
        deployment: DeploymentConfig,
        tenant: str,
        messages: Sequence[Mapping[str, Any]],
    ) -> float:
        """What `score` would give now, counting nothing (a tuned deployment reads its base's
        current quality with it)."""
        ...


@runtime_checkable
class VerdictModel(Protocol):
    def draw(self, deployment: str, chance: float) -> bool:
        """Whether this answer of the deployment is good: True with probability `chance`."""
        ...

    def reset(self, deployment: str | None = None) -> None:
        """Start one deployment's (None: every deployment's) counts and draws again."""
        ...


class StaticQuality:
    """Each deployment's configured quality, whatever the request (no topics, no schedule)."""

    def score(
        self,
        deployment: DeploymentConfig,
        tenant: str,
        messages: Sequence[Mapping[str, Any]],
    ) -> float:
        return deployment.quality

    def peek(
        self,
        deployment: DeploymentConfig,
        tenant: str,
        messages: Sequence[Mapping[str, Any]],
    ) -> float:
        return deployment.quality


class Verdicts:
    """Good-or-poor draws from a `random.Random` per deployment, seeded with its name (after
    `seed`, when given, to vary runs)."""

    def __init__(self, seed: str = "") -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._rngs: dict[str, random.Random] = {}

    def draw(self, deployment: str, chance: float) -> bool:
        with self._lock:
            rng = self._rngs.get(deployment)
            if rng is None:
                rng = self._rngs[deployment] = random.Random(f"{self._seed}{deployment}")
            return rng.random() < chance

    def reset(self, deployment: str | None = None) -> None:
        with self._lock:
            if deployment is None:
                self._rngs.clear()
            else:
                self._rngs.pop(deployment, None)


class ScheduledQuality:
    """Per deployment and topic, the configured chance of a good answer, after the deployment's
    `quality_schedule` applied to the requests it has served; and verdicts drawn with it."""

    def __init__(self, seed: str = "") -> None:
        self._lock = threading.Lock()
        self._served: dict[str, int] = {}
        self._verdicts = Verdicts(seed)

    def score(
        self,
        deployment: DeploymentConfig,
        tenant: str,
        messages: Sequence[Mapping[str, Any]],
    ) -> float:
        """Count one served request of the deployment; its chance of a good answer."""
        with self._lock:
            served = self._served.get(deployment.name, 0)
            self._served[deployment.name] = served + 1
        return quality_at(deployment, topic_of(messages), served)

    def peek(
        self,
        deployment: DeploymentConfig,
        tenant: str,
        messages: Sequence[Mapping[str, Any]],
    ) -> float:
        """The deployment's chance on these messages now, without counting a request."""
        return quality_at(deployment, topic_of(messages), self.served(deployment.name))

    def served(self, deployment: str) -> int:
        """The requests of the deployment scored so far."""
        with self._lock:
            return self._served.get(deployment, 0)

    def draw(self, deployment: str, chance: float) -> bool:
        return self._verdicts.draw(deployment, chance)

    def reset(self, deployment: str | None = None) -> None:
        with self._lock:
            if deployment is None:
                self._served.clear()
            else:
                self._served.pop(deployment, None)
        self._verdicts.reset(deployment)

"""Reading Azure OpenAI's content-filter outcomes into `ContentFilter` (shared.contracts).

Azure OpenAI (and the Azure OpenAI models of an AI Services resource) filters in both directions
and says so in two styles; both end in a result with `status: "filtered"`, never a retry, never
a failover (the same text is filtered on every deployment of the same policy):

1. The prompt is filtered: HTTP 400 with an error body
   `{"error": {"code": "content_filter", "message": "The response was filtered ...",
   "param": "prompt", "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation",
   "content_filter_result": {"hate": {"filtered": false, "severity": "safe"},
   "jailbreak": {"filtered": true, "detected": true}, "violence": {"filtered": true,
   "severity": "medium"}, ...}}}}` (openai-python keeps the inner `error` object as
   `APIStatusError.body`; azure-core keeps the whole body). `prompt_filter(body)` reads it:
   the top code or an inner code `content_filter` / `ResponsibleAIPolicyViolation`, the categories
   from `content_filter_result` or `content_filter_results`.
2. The completion is filtered: HTTP 200 whose choice has `finish_reason: "content_filter"`, its
   `message.content` null or partial, and `content_filter_results` per category; the answer's
   `prompt_filter_results` (`[{"prompt_index": 0, "content_filter_results": {...}}]`; older API
   versions `prompt_annotations`) annotates the prompt. `completion_filter(response, choice)`
   reads it: a filtered completion (stage `completion`), or a prompt annotation that says
   `filtered: true` (stage `prompt`; a 200 whose prompt was filtered is treated as the 400).

Category shapes: the four harm categories `{"filtered": bool, "severity": "safe"|"low"|
"medium"|"high"}`; the binary models (`jailbreak`, `indirect_attack`, `protected_material_text`,
`protected_material_code`, `profanity`) `{"filtered": bool, "detected": bool}` (protected code
may add a `citation`, dropped here); `custom_blocklists` `{"filtered": bool, "details": [...]}` or
a list. A category is kept when it filtered, was detected, or has a severity other than `safe`;
anything of another shape is skipped, never raised on (the service, a gateway or a cached
answer may send anything: see model_clients' reading rules). Never reads the text.

Sources: learn.microsoft.com/azure/ai-services/openai/concepts/content-filter ("Scenario
details", "Annotations"); openai-python `_exceptions.APIStatusError.body`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from shared.contracts import ContentFilter, FilterCategory
from shared.contracts.inference import FilterStage

CONTENT_FILTER_CODE: Final = "content_filter"
FINISH_REASON: Final = "content_filter"
_POLICY_CODES: Final = frozenset({"content_filter", "responsibleaipolicyviolation"})
_MAX_DEPTH: Final = 8
_MAX_CATEGORIES: Final = 16


def prompt_filter(body: object) -> ContentFilter | None:
    """The prompt-stage filter outcome of an error body (either shape), or None when the body
    does not say the content filter refused the request."""
    error = body.get("error") if isinstance(body, Mapping) else None
    node: object = error if isinstance(error, Mapping) else body
    said = False
    categories: tuple[FilterCategory, ...] = ()
    for _ in range(_MAX_DEPTH):
        if not isinstance(node, Mapping):
            break
        code = node.get("code")
        if isinstance(code, str) and code.lower() in _POLICY_CODES:
            said = True
        for key in ("content_filter_result", "content_filter_results"):
            if not categories:
                categories = filter_categories(node.get(key))
        node = node.get("innererror")
    if not said:
        return None
    return ContentFilter(stage="prompt", categories=categories)


def completion_filter(response: object, choice: object) -> ContentFilter | None:
    """The filter outcome of a 200 answer: its choice withheld (`finish_reason` content_filter:
    stage `completion`) or its prompt annotated `filtered: true` (stage `prompt`); else None."""
    for annotation in _sequence(_field(response, "prompt_filter_results")) or _sequence(
        _field(response, "prompt_annotations")
    ):
        categories = filter_categories(_field(annotation, "content_filter_results"))
        if any(c.filtered for c in categories):
            return ContentFilter(stage="prompt", categories=categories)
    reason = _field(choice, "finish_reason")
    reason = getattr(reason, "value", reason)  # azure-ai-inference: an enum of str
    if reason != FINISH_REASON:
        return None
    categories = filter_categories(_field(choice, "content_filter_results"))
    return ContentFilter(stage="completion", categories=categories)


def filter_categories(results: object) -> tuple[FilterCategory, ...]:
    """The flagged categories of a `content_filter_result(s)` mapping, in the service's order."""
    if not isinstance(results, Mapping):
        return ()
    found: list[FilterCategory] = []
    for name, value in list(results.items())[:64]:
        if not isinstance(name, str) or not name.isidentifier() or len(name) > 64:
            continue
        category = _category(name, value)
        if category is not None:
            found.append(category)
        if len(found) >= _MAX_CATEGORIES:
            break
    return tuple(found)


def _category(name: str, value: object) -> FilterCategory | None:
    if isinstance(value, Sequence) and not isinstance(value, str):  # custom_blocklists: a list
        hits = [v for v in value if isinstance(v, Mapping) and v.get("filtered") is True]
        return FilterCategory(category=name, filtered=True) if hits else None
    if not isinstance(value, Mapping):
        return None
    filtered = value.get("filtered") is True
    detected = value.get("detected")
    detected = detected if isinstance(detected, bool) else None
    severity = value.get("severity")
    severity = severity if isinstance(severity, str) and severity.isalpha() else None
    if severity is not None and len(severity) > 16:
        severity = None
    if not filtered and not detected and severity in (None, "safe"):
        return None
    return FilterCategory(category=name, filtered=filtered, severity=severity, detected=detected)


def usage_stage(content_filter: ContentFilter | None) -> FilterStage | None:
    """What a usage line records of a filtered call (None: not filtered)."""
    return None if content_filter is None else content_filter.stage


def log_fields(content_filter: ContentFilter) -> dict[str, object]:
    """The structured log fields of a filtered result (no text): stage, source, categories."""
    return {
        "filter_stage": content_filter.stage,
        "filter_source": content_filter.source,
        "filtered_categories": ",".join(content_filter.filtered_categories) or None,
        "flagged_categories": ",".join(c.category for c in content_filter.categories) or None,
    }


def _field(value: object, name: str) -> object:
    if isinstance(value, Mapping):
        return value.get(name)
    return getattr(value, name, None)


def _sequence(value: object) -> Sequence[object]:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return value[:16]
    return ()

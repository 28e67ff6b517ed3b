"""`feedback` v1: a tenant's rating of one answer, with an optional correction and labels.

A tenant app sends it to the `feedback` queue or posts it to
`POST /api/tenants/{tenant_id}/feedback`:

    {"type": "feedback", "version": 1, "tenant_id": "tailwind", "request_id": "r-42",
     "rating": "down", "correction": "The refund window is 30 days.", "labels": ["wrong-fact"]}

`rating` is `"up"` / `"down"` (thumbs) or an integer 1..5. Every rating maps to a score in
[0, 1] (`score`): up 1, down 0, r -> (r - 1) / 4, which the drift detectors read.

Outcomes (docs/contracts.md): the first feedback on a request is `recorded`; a later one on the
same request replaces it (`revised`, last one wins: a user may change a thumbs-down to up), and
only the first counts towards drift. Feedback on a request the tenant has no answer for (unknown,
another tenant's, or one that failed) is rejected `unknown_request` / `request_not_answered`,
without saying whether another tenant has such a request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Final, Literal

from pydantic import Field, ValidationError, field_validator

from shared.contracts.inference import (
    LABEL_PATTERN,
    REQUEST_ID_PATTERN,
    TENANT_ID_PATTERN,
    ContractError,
    Text,
    _Strict,
    checked_envelope,
    decode_object,
    format_validation_error,
)

FEEDBACK_TYPE: Final = "feedback"
FEEDBACK_VERSION: Final = 1
MAX_CORRECTION_CHARS: Final = 32_000


class FeedbackReason:
    """`reason` of a feedback rejection (HTTP: the body's `reason`)."""

    INVALID_JSON: Final = "invalid_json"
    INVALID_FEEDBACK: Final = "invalid_feedback"
    UNSUPPORTED_TYPE: Final = "unsupported_type"
    UNSUPPORTED_VERSION: Final = "unsupported_version"
    UNKNOWN_TENANT: Final = "unknown_tenant"
    TENANT_MISMATCH: Final = "tenant_mismatch"
    UNKNOWN_REQUEST: Final = "unknown_request"
    REQUEST_NOT_ANSWERED: Final = "request_not_answered"


Rating = Literal["up", "down", 1, 2, 3, 4, 5]


class Feedback(_Strict):
    """`feedback` v1 as a tenant sends it."""

    type: Literal["feedback"] = FEEDBACK_TYPE
    version: Literal[1] = FEEDBACK_VERSION
    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    request_id: str = Field(pattern=REQUEST_ID_PATTERN)
    rating: Rating
    correction: Text | None = Field(default=None, min_length=1, max_length=MAX_CORRECTION_CHARS)
    labels: tuple[str, ...] = Field(default=(), max_length=16)

    @field_validator("labels")
    @classmethod
    def _labels_well_formed(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        bad = [i for i, label in enumerate(labels) if not re.match(LABEL_PATTERN, label)]
        if bad:
            raise ValueError(
                f"labels {bad} must match {LABEL_PATTERN} (letters, digits, '.', '_', '-')"
            )
        return labels

    @property
    def score(self) -> float:
        return score(self.rating)


def score(rating: Rating) -> float:
    """A rating as a score in [0, 1]: up 1.0, down 0.0, 1..5 -> 0, 0.25, ..., 1."""
    if rating == "up":
        return 1.0
    if rating == "down":
        return 0.0
    return (int(rating) - 1) / 4


class FeedbackRecord(_Strict):
    """What is kept: `feedback/<tenant>/<yyyy-mm-dd of the answer>/<request_id>.json`.

    `correction` is the scrubbed correction, kept only when the tenant's policy lets text be kept
    (`correction_withheld` says why not otherwise). `deployment` / `model_version` are those that
    served the answer, so drift is tracked per model version."""

    type: Literal["feedback.record"] = "feedback.record"
    version: Literal[1] = 1
    tenant_id: str
    request_id: str
    rating: Rating
    score: float
    correction: str | None = None
    correction_withheld: str | None = None
    pii_removed: dict[str, int] = Field(default_factory=dict)
    labels: tuple[str, ...] = ()
    deployment: str
    model: str | None
    model_version: str | None
    answered_at: datetime
    received_at: datetime
    revision: int = Field(ge=1, description="1 for the first feedback on the request, then 2, ...")


def parse_feedback(
    body: bytes, application_properties: Mapping[str, object] | None = None
) -> Feedback:
    """Decode and validate a feedback body; ContractError (reason from FeedbackReason) with a
    readable detail that never repeats the submitted text."""
    document = decode_object(body)
    ids = checked_envelope(
        document,
        application_properties,
        contract_type=FEEDBACK_TYPE,
        version=FEEDBACK_VERSION,
        invalid_reason=FeedbackReason.INVALID_FEEDBACK,
    )
    document = {**document, "type": FEEDBACK_TYPE, "version": FEEDBACK_VERSION}
    if isinstance(document.get("rating"), bool):  # JSON true is not the rating 1
        document["rating"] = "not-a-rating"
    try:
        return Feedback.model_validate(document)
    except ValidationError as exc:
        raise ContractError(
            FeedbackReason.INVALID_FEEDBACK, format_validation_error(exc), **ids
        ) from None

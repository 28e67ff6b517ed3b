"""inference.request v1: what is accepted, and how a rejection reads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from shared.contracts import (
    ChatMessage,
    ContractError,
    InferenceParameters,
    InferenceRequest,
    InferenceResult,
    RejectionReason,
    RejectionRecord,
    parse_inference_request,
)


def body(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "tenant_id": "tailwind",
        "request_id": "req-1",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
        ],
    }
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def rejection(data: bytes, props: dict[str, object] | None = None) -> ContractError:
    with pytest.raises(ContractError) as caught:
        parse_inference_request(data, props)
    return caught.value


def test_minimal_request_is_v1_with_model_defaults() -> None:
    request = parse_inference_request(body())
    assert request.type == "inference.request"
    assert request.version == 1
    assert request.parameters.given() == {}
    assert request.feature is None
    assert [m.role for m in request.messages] == ["system", "user"]


def test_parameters_and_feature_are_kept() -> None:
    request = parse_inference_request(
        body(parameters={"max_tokens": 50, "temperature": 0.2, "stop": ["\n"]}, feature="faq")
    )
    assert request.parameters.given() == {"max_tokens": 50, "temperature": 0.2, "stop": ["\n"]}
    assert request.feature == "faq"


def test_type_and_version_may_come_from_body_or_application_properties() -> None:
    parse_inference_request(body(type="inference.request", version=1))
    parse_inference_request(body(), {"type": "inference.request", "version": "1"})
    parse_inference_request(body(), {"type": b"inference.request", "version": 1})


@pytest.mark.parametrize(
    ("data", "props", "reason"),
    [
        (body(type="inference.result"), None, RejectionReason.UNSUPPORTED_TYPE),
        (body(), {"type": "feedback"}, RejectionReason.UNSUPPORTED_TYPE),
        (body(version=2), None, RejectionReason.UNSUPPORTED_VERSION),
        (body(), {"version": "2"}, RejectionReason.UNSUPPORTED_VERSION),
        (body(version=1), {"version": "2"}, RejectionReason.UNSUPPORTED_VERSION),
    ],
)
def test_other_types_and_versions_are_refused(
    data: bytes, props: dict[str, object] | None, reason: str
) -> None:
    error = rejection(data, props)
    assert error.reason == reason
    assert error.tenant_id == "tailwind"  # still known, so the rejection can be filed under it


@pytest.mark.parametrize("data", [b"", b"{not json", b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_invalid_json_is_its_own_reason(data: bytes) -> None:
    error = rejection(data)
    assert error.reason == RejectionReason.INVALID_JSON
    assert error.tenant_id is None


def test_missing_fields_are_named_one_per_problem() -> None:
    error = rejection(json.dumps({"tenant_id": "tailwind"}).encode())
    assert error.reason == RejectionReason.INVALID_REQUEST
    assert error.detail == "request_id: Field required; messages: Field required"


def test_nested_problems_name_the_path_and_never_echo_the_content() -> None:
    secret = "my card number is 4111 1111 1111 1111"
    error = rejection(
        body(
            messages=[{"role": "user", "content": "x"}, {"role": "robot", "content": secret}],
            parameters={"temperature": 9, "top_k": 3},
        )
    )
    assert error.reason == RejectionReason.INVALID_REQUEST
    assert "messages[1].role: Input should be 'system', 'user' or 'assistant'" in error.detail
    assert "parameters.temperature: Input should be less than or equal to 2" in error.detail
    assert "parameters.top_k: Extra inputs are not permitted" in error.detail
    assert secret not in error.detail
    assert "4111" not in error.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant_id", "../contoso"),
        ("tenant_id", "Tailwind"),
        ("tenant_id", ""),
        ("request_id", "a/b"),
        ("request_id", "x" * 129),
        ("request_id", ".hidden"),
        ("feature", "has space"),
    ],
)
def test_ids_that_could_escape_a_blob_prefix_are_refused(field: str, value: str) -> None:
    error = rejection(body(**{field: value}))
    assert error.reason == RejectionReason.INVALID_REQUEST
    assert error.detail.startswith(f"{field}: String should match pattern")


def test_claimed_ids_are_returned_only_when_well_formed() -> None:
    error = rejection(body(tenant_id="../x", request_id="r-9", messages=[]))
    assert error.tenant_id is None
    assert error.request_id == "r-9"


def test_empty_message_list_is_refused() -> None:
    assert "messages: List should have at least 1 item" in rejection(body(messages=[])).detail


def test_result_round_trips_as_json() -> None:
    result = InferenceResult.model_validate(
        {
            "tenant_id": "tailwind",
            "request_id": "req-1",
            "deployment": "gpt-4o-mini-pool-a",
            "model": "gpt-4o-mini",
            "message": {"role": "assistant", "content": "hi"},
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            "latency_ms": 12,
            "completed_at": "2025-01-02T03:04:05Z",
        }
    )
    again = InferenceResult.model_validate_json(result.model_dump_json())
    assert again == result
    assert json.loads(result.model_dump_json())["type"] == "inference.result"


def test_request_model_is_the_documented_schema() -> None:
    schema = InferenceRequest.model_json_schema()
    assert set(schema["required"]) == {"tenant_id", "request_id", "messages"}


# Text a client cannot encode (issue 8, item 1). json.dumps writes a Python surrogate as the
# ASCII escape `\ud83d`, exactly as a sender's encoder writes a truncated emoji; json.loads turns
# it back into a lone surrogate that no SDK can encode. Each of these was accepted before.
LONE = "caf\u00e9 \ud83d end"


def _bad_key_doc() -> dict[str, Any]:
    return {**json.loads(body()), "\udc97": 1}


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (body(messages=[{"role": "user", "content": LONE}]), "messages[0].content"),
        (
            body(messages=[{"role": "user", "content": "ok"}, {"role": LONE, "content": "x"}]),
            "messages[1].role",
        ),
        (body(parameters={"stop": ["ok", LONE]}), "parameters.stop[1]"),
        (body(tenant_id="tail\ud83dwind"), "tenant_id"),
        (body(request_id="req-\udc00"), "request_id"),
        (body(feature="faq\ud800"), "feature"),
        (body(type="inference.request\ud83d"), "type"),
        (body(unknown={"deep": [1, {"x": LONE}]}), "unknown.deep[1].x"),
        (json.dumps(_bad_key_doc()).encode(), "body: a field name"),
        (
            body(messages=[{"role": "user", "content": "x", "\ud83d": "y"}]),
            "messages[0]: a field name",
        ),
        (body(parameters={"\udfff": 1}), "parameters: a field name"),
        (body(messages=[{"role": "user", "content": "\ude00\ud83d"}]), "messages[0].content"),
    ],
)
def test_text_that_utf8_cannot_encode_is_refused_naming_the_field(data: bytes, where: str) -> None:
    error = rejection(data)
    assert error.reason == RejectionReason.INVALID_REQUEST
    assert error.detail.startswith(f"{where}")
    assert "surrogate" in error.detail
    error.detail.encode("utf-8")  # the detail itself is storable text
    assert "caf" not in error.detail  # the text is never echoed


def test_a_surrogate_rejection_keeps_the_well_formed_ids_so_the_tenant_gets_a_reply() -> None:
    error = rejection(body(messages=[{"role": "user", "content": LONE}]))
    assert (error.tenant_id, error.request_id) == ("tailwind", "req-1")
    assert error.detail == (
        "messages[0].content: contains a lone UTF-16 surrogate (U+D800-U+DFFF) at character 5, "
        "which is not Unicode text and cannot be encoded as UTF-8"
    )


def test_the_exact_bytes_of_a_truncated_emoji_are_refused() -> None:
    data = (
        b'{"tenant_id": "tailwind", "request_id": "p11", '
        b'"messages": [{"role": "user", "content": "Lunch at the caf\\u00e9 \\ud83d was great"}]}'
    )
    assert rejection(data).detail.startswith("messages[0].content: contains a lone UTF-16")


def test_a_complete_surrogate_pair_is_an_ordinary_character() -> None:
    data = body(messages=[{"role": "user", "content": "\U0001f600"}])
    assert b"\\ud83d\\ude00" in data
    assert parse_inference_request(data).messages[0].content == "\U0001f600"


def test_many_unencodable_fields_are_counted_not_all_listed() -> None:
    error = rejection(body(messages=[{"role": "user", "content": LONE}] * 20))
    assert error.detail.count("surrogate") == 8
    assert error.detail.endswith("; and 12 more such fields")


def test_a_model_built_in_code_is_held_to_the_same_rule() -> None:
    with pytest.raises(ValidationError, match="lone UTF-16 surrogate"):
        ChatMessage(role="user", content=LONE)
    with pytest.raises(ValidationError, match="lone UTF-16 surrogate"):
        InferenceParameters(stop=[LONE])


def test_json_nested_beyond_the_parsers_depth_is_invalid_json() -> None:
    error = rejection(b"[" * 100_000)
    assert error.reason == RejectionReason.INVALID_JSON
    assert error.detail == "the body is nested too deeply to be read"


def test_rejection_records_carry_an_optional_service_error_code() -> None:
    fields: dict[str, Any] = {
        "reason": "model_rejected_request",
        "detail": "d",
        "tenant_id": "tailwind",
        "request_id": "r",
        "message_id": "m",
        "delivery_count": 1,
        "rejected_at": "2025-01-02T03:04:05Z",
    }
    assert RejectionRecord.model_validate(fields).error_code is None
    record = RejectionRecord.model_validate({**fields, "error_code": "content_filter"})
    assert json.loads(record.model_dump_json())["error_code"] == "content_filter"

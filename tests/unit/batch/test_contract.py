"""parse_batch_row and the batch id: the path's tenant wins, rows are named by their line."""

from __future__ import annotations

import json

import pytest

from shared.contracts import ContractError
from shared.contracts.batch import (
    batch_id_for,
    is_batch_id,
    parse_batch_row,
    row_request_id,
)
from tests.unit.batch.helpers import SECRET, row

BATCH = batch_id_for("tailwind", "tailwind/batch/a.jsonl", '"0x1"')


def test_the_batch_id_depends_on_the_name_and_the_etag_only() -> None:
    assert is_batch_id(BATCH)
    assert batch_id_for("tailwind", "tailwind/batch/a.jsonl", "0x1") == BATCH  # quotes or not
    assert batch_id_for("tailwind", "tailwind/batch/a.jsonl", '"0x2"') != BATCH
    assert batch_id_for("tailwind", "tailwind/batch/b.jsonl", '"0x1"') != BATCH


def test_a_row_gets_the_paths_tenant_and_its_line_as_request_id() -> None:
    request = parse_batch_row(row(request_id="mine"), tenant_id="tailwind", batch_id=BATCH, line=7)
    assert request.tenant_id == "tailwind"
    assert request.request_id == row_request_id(BATCH, 7) == f"{BATCH}:7"


def test_a_row_of_the_same_tenant_is_accepted() -> None:
    request = parse_batch_row(
        row(tenant_id="tailwind").encode(), tenant_id="tailwind", batch_id=BATCH, line=1
    )
    assert request.messages[0].content == SECRET


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (row(tenant_id="contoso"), "wrong_tenant"),
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        (json.dumps({"messages": [{"role": "robot", "content": SECRET}]}), "invalid_request"),
        (row(type="inference.result"), "unsupported_type"),
        (row(parameters={"temperature": 9, "stop": [SECRET]}), "invalid_request"),
        ('{"messages": [{"role": "user", "content": "\\ud83d"}]}', "invalid_request"),
    ],
)
def test_bad_rows_say_why_without_their_values(text: str, reason: str) -> None:
    with pytest.raises(ContractError) as caught:
        parse_batch_row(text.encode(), tenant_id="tailwind", batch_id=BATCH, line=3)
    assert caught.value.reason == reason
    assert SECRET not in caught.value.detail
    assert "contoso" not in caught.value.detail

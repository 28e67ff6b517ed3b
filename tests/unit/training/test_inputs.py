"""training.inputs (standard library only, so it is imported here, in the main venv): the chat
JSONL checks, the base-model spec, hashes and the code version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.inputs import (
    BadInput,
    check_sha256,
    code_version,
    file_sha256,
    parse_base_model,
    parse_chat,
    read_chat_jsonl,
)


def _chat(*messages: dict[str, object]) -> dict[str, object]:
    return {"messages": list(messages)}


USER = {"role": "user", "content": "hi"}
ASSISTANT = {"role": "assistant", "content": "hello"}


def test_reads_examples_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps(_chat(USER, ASSISTANT)) + "\n\n" + json.dumps(_chat(USER, ASSISTANT))
    )
    chats = read_chat_jsonl(path)
    assert len(chats) == 2
    assert chats[0][1] == {"role": "assistant", "content": "hello", "weight": 1}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "line 2: not valid JSON"),
        ('{"messages": "x"}', "line 2: expected an object with a 'messages' list"),
        (json.dumps(_chat(USER)), "line 2: no assistant message to learn from"),
        (json.dumps(_chat({"role": "bot", "content": "x"}, ASSISTANT)), "role 'bot'"),
        (json.dumps(_chat(USER, {"role": "assistant", "content": 3})), "message 2: 'content'"),
        (json.dumps(_chat(USER, {**ASSISTANT, "weight": 2})), "'weight' must be 0 or 1"),
        (json.dumps(_chat({**USER, "weight": 1}, ASSISTANT)), "assistant messages only"),
        (
            json.dumps(_chat(USER, {**ASSISTANT, "tool_calls": [{"id": "1"}]})),
            "tool calls are not supported",
        ),
    ],
)
def test_a_bad_line_is_named(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(_chat(USER, ASSISTANT)) + "\n" + line + "\n")
    with pytest.raises(BadInput, match=r"data\.jsonl line") as err:
        read_chat_jsonl(path)
    assert reason in str(err.value)


def test_weight_zero_turns_and_text_parts() -> None:
    chat = parse_chat(
        _chat(
            USER,
            {"role": "assistant", "content": "draft", "weight": 0},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            ASSISTANT,
        ),
        "x",
    )
    assert [m["weight"] for m in chat] == [1, 0, 1, 1]
    assert chat[2]["content"] == "ab"
    with pytest.raises(BadInput, match="no assistant message to learn from"):
        parse_chat(_chat(USER, {"role": "assistant", "content": "d", "weight": 0}), "x")
    with pytest.raises(BadInput, match="'image_url' is not supported"):
        parse_chat(_chat({"role": "user", "content": [{"type": "image_url"}]}, ASSISTANT), "x")


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        read_chat_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(BadInput, match="has no examples"):
        read_chat_jsonl(tmp_path / "empty.jsonl")


def test_sha256_check(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"abc")
    digest = file_sha256(path)
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert check_sha256(path, digest.upper()) == digest
    with pytest.raises(BadInput, match="not the expected"):
        check_sha256(path, "1" * 64)
    with pytest.raises(BadInput, match="not 64 hex digits"):
        check_sha256(path, "xyz")


def test_base_model_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_base_model("tiny:micro").preset.hidden == 32
    with pytest.raises(BadInput, match="known: tiny:micro"):
        parse_base_model("tiny:nope")
    (tmp_path / "m").mkdir()
    with pytest.raises(BadInput, match=r"no config\.json"):
        parse_base_model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{}")
    assert parse_base_model(str(tmp_path / "m")).kind == "local"
    with pytest.raises(BadInput, match="does not exist"):
        parse_base_model(str(tmp_path / "missing"))
    # An Azure ML registry model (MLflow layout): model and tokenizer in folders of their own.
    data = tmp_path / "registry" / "mlflow_model_folder" / "data"
    (data / "model").mkdir(parents=True)
    (data / "tokenizer").mkdir()
    (data / "model" / "config.json").write_text("{}")
    (data / "tokenizer" / "tokenizer_config.json").write_text("{}")
    (tmp_path / "registry" / "MLmodel").write_text("flavors: {}")
    ref = parse_base_model(str(tmp_path / "registry"))
    assert ref.value == str((data / "model").resolve())
    assert ref.tokenizer == str((data / "tokenizer").resolve())
    monkeypatch.delenv("AZUREML_RUN_ID", raising=False)
    monkeypatch.delenv("TRAINING_ALLOW_HUB", raising=False)
    with pytest.raises(BadInput, match="only inside Azure ML"):
        parse_base_model("microsoft/Phi-4-mini-instruct")
    monkeypatch.setenv("AZUREML_RUN_ID", "run-1")
    assert parse_base_model("microsoft/Phi-4-mini-instruct").kind == "hub"


def test_code_version_follows_the_sources(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    first = code_version(tmp_path)
    assert first == code_version(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.pyc").write_bytes(b"\0")
    assert code_version(tmp_path) == first
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path) != first
    assert len(code_version()) == 16

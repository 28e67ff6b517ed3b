"""Chat JSONL in the Azure OpenAI fine-tuning format: read, check, and count by topic.

One example per line (blank lines are skipped), UTF-8 (a leading BOM is allowed):

    {"messages": [{"role": "system", "content": "..."},
                  {"role": "user", "content": "Why was I charged twice? #billing"},
                  {"role": "assistant", "content": "...", "weight": 1}]}

Checked as Azure OpenAI's file validation does for chat models: each line is a JSON object with
a non-empty `messages` array; each message an object whose `role` is system, user, assistant or
tool and whose `content` is a string or an array of content parts (an assistant message that
carries `tool_calls` may have no content); `weight`, where given, is 0 or 1 on an assistant
message; every example has at least one assistant message. The first problem found raises
`TrainingDataError` with code `invalid_file_format` and a message naming the line (1-based), as a
failed fine-tuning job's `error` does. Nothing here enforces a minimum number of examples; the
fine-tuning jobs do (config `fine_tuning.min_examples`).

Hand-written: the format is a dozen rules over `json.loads`; a JSON Schema validator
(jsonschema) would give line-less messages and one more dependency for the simulator.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final

from devhost.models.quality import topic_of

ROLES: Final = frozenset({"system", "user", "assistant", "tool"})
INVALID_FILE_FORMAT: Final = "invalid_file_format"

Example = list[dict[str, Any]]
"""One training example: its messages."""


class TrainingDataError(ValueError):
    """The file is not chat JSONL in the fine-tuning format; `code` and `message` as the
    fine-tuning job's `error` reports them."""

    def __init__(self, message: str, code: str = INVALID_FILE_FORMAT) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_chat_jsonl(data: bytes) -> list[Example]:
    """The examples of a chat JSONL file, each its list of messages; TrainingDataError at the
    first line that breaks the format."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TrainingDataError(
            f"Invalid file format: the file is not UTF-8 text (byte {err.start})."
        ) from None
    examples: list[Example] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        examples.append(_example(line, number))
    return examples


def _example(line: str, number: int) -> Example:
    where = f"Invalid file format. Line {number}"
    try:
        doc = json.loads(line)
    except ValueError:
        raise TrainingDataError(f"{where}: the line is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise TrainingDataError(f"{where}: each line must be a JSON object.")
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TrainingDataError(f'{where}, key "messages": a non-empty array is required.')
    has_assistant = False
    for index, message in enumerate(messages):
        _check_message(message, f'{where}, key "messages", index {index}')
        has_assistant = has_assistant or message["role"] == "assistant"
    if not has_assistant:
        raise TrainingDataError(f"{where}: the example has no assistant message to learn from.")
    return messages


def _check_message(message: object, where: str) -> None:
    if not isinstance(message, dict):
        raise TrainingDataError(f"{where}: each message must be an object.")
    role = message.get("role")
    if role not in ROLES:
        raise TrainingDataError(
            f'{where}, key "role": must be one of {", ".join(sorted(ROLES))}, got {role!r}.'
        )
    content = message.get("content")
    if content is None and not (role == "assistant" and message.get("tool_calls")):
        raise TrainingDataError(f'{where}, key "content": content is required.')
    if content is not None and not _is_content(content):
        raise TrainingDataError(
            f'{where}, key "content": must be a string or an array of content parts.'
        )
    if "weight" in message and (role != "assistant" or message["weight"] not in (0, 1)):
        raise TrainingDataError(f'{where}, key "weight": only assistant messages take 0 or 1.')


def _is_content(content: object) -> bool:
    if isinstance(content, str):
        return True
    return isinstance(content, list) and all(
        isinstance(part, dict) and isinstance(part.get("type"), str) for part in content
    )


def examples_by_topic(examples: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, int]:
    """How many examples there are of each topic (`topic_of` of each example's messages: the
    first `#tag` of its last user message, "general" without one)."""
    return dict(Counter(topic_of(example) for example in examples))

"""Token estimates without a tokenizer (tiktoken downloads its encodings, so it cannot run offline).

Prompt tokens: about 4 characters per token, plus the per-message overhead that the chat format
adds (3 per message, 1 per name, 3 to prime the reply), as OpenAI's counting recipe does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3


def text_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    total = REPLY_PRIMING_TOKENS
    for m in messages:
        total += TOKENS_PER_MESSAGE + text_tokens(message_text(m))
        if m.get("name"):
            total += TOKENS_PER_NAME
    return total

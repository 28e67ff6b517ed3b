"""One row of a training upload: the chat example format of Azure OpenAI fine-tuning, its limits,
and the error records of a rejected row or file.

docs/contracts.md ("Training data uploads") is the prose version of this module.

A row is one JSON object on one line (UTF-8; a leading BOM and `\\r\\n` endings are accepted):

    {"messages": [{"role": "system", "content": "You answer for Fabrikam."},
                  {"role": "user", "content": "How do I reset my router?"},
                  {"role": "assistant", "content": "Hold the reset button for 10 s."}]}

`messages` holds 2 to `MAX_MESSAGES` turns, each exactly `role` (`system`, `user`, `assistant`)
and `content` (a string that is not empty once invisible characters are removed); at least one
turn is the user's and the last is the assistant's (the answer the model learns). Nothing else is
accepted: no other top-level key, no `name`, `weight`, tool calls or image parts (this system
tunes text-to-text only). It is the format `shared.drift.training_set` writes, and what Azure
OpenAI takes ("Customize a model with fine-tuning", learn.microsoft.com/azure/ai-services/openai/
how-to/fine-tuning, "Prepare your training and validation data").

A rejected row is reported as a `TrainingUploadError` (line number, reason, a detail that names
fields and limits, never the row's text); a rejected file as one with `line: null`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.batch.lines import numbered_lines
from shared.contracts import ChatMessage, ContractError, RejectionReason, format_validation_error
from shared.contracts.inference import decode_object, unencodable_text
from shared.feedback.consent import normalised
from shared.resilience.rate_budget import CHARS_PER_TOKEN, prompt_tokens_estimate

TRAINING_ERROR_TYPE: Final = "training.error"

MAX_MESSAGES: Final = 2048
"""Turns per example: the most a chat completions request may hold (Azure OpenAI "Quotas and
limits", learn.microsoft.com/azure/ai-services/openai/quotas-limits: "Max number of
/chat/completions messages: 2048"); an example is a chat the model is trained on."""

MAX_EXAMPLE_TOKENS: Final = 65_536
"""The training example context length of the models Azure OpenAI fine-tunes for chat (gpt-4o,
gpt-4o-mini, gpt-4.1, gpt-4.1-mini: "Training example context length: 65,536", learn.microsoft.com
/azure/ai-services/openai/concepts/models, "Fine-tuning models"). Estimated as the limiter does
(`shared.resilience.rate_budget`: 4 characters per token, 3 per message)."""

AZURE_MIN_EXAMPLES: Final = 10
"""Azure OpenAI fine-tuning does not start a job with fewer than 10 training examples (how-to
above, "Create your training and validation datasets")."""
HELD_OUT_EXAMPLES: Final = 5
"""The job intake holds at least 5 examples of a set out of training, for the gate to score the
candidate on (`shared.finetune.datasets`): a set needs 10 + 5, and a tenant's
`min_training_examples` below that is raised to it."""


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """The bounds of one training upload and of the training sets built from the pool."""

    max_upload_bytes: int = 32 * 1024 * 1024
    """A file larger than this is refused whole (`file_too_large`) before it is read. Azure
    OpenAI takes training files under 512 MB; one upload is held far below that so that it is
    scrubbed within one try of the function (`functionTimeout` 5 min in host.json; the scrubber
    takes about 2 us per character, bench/README.md "PII removal") and several uploads fit one
    training set."""
    max_row_bytes: int = 512 * 1024
    """A longer line is refused (`row_too_large`) without being read into memory: an example
    within `MAX_EXAMPLE_TOKENS` is about 256 KiB of text at 4 characters per token; twice that
    leaves room for JSON escapes and multi-byte characters."""
    max_rows: int = 50_000
    """A file with more non-blank lines is refused whole (`too_many_rows`): split it. Ours, not
    Azure's (which bounds a training file by size and a job by 2 billion tokens x epochs); it
    bounds one upload's work."""
    max_example_tokens: int = MAX_EXAMPLE_TOKENS
    min_job_examples: int = AZURE_MIN_EXAMPLES + HELD_OUT_EXAMPLES
    max_set_bytes: int = 480 * 1024 * 1024
    """A training set built from the pool holds the newest uploads that fit in this many bytes
    (Azure OpenAI: a training file must be under 512 MB)."""
    scrub_rows: int = 100
    """Rows scrubbed per call into the scrubber's thread (one thread hop per group, not per row)."""
    part_rows: int = 1000
    """Kept rows per pool part (`training/<tenant>/pool/<upload>/<part>.jsonl`); a part is also
    closed at `part_bytes`. Each part is a checkpoint: a try cut short resumes after the last."""
    part_bytes: int = 4 * 1024 * 1024


class RowReason:
    """Why one row was refused (it is reported; the other rows are kept)."""

    INVALID_JSON: Final = RejectionReason.INVALID_JSON
    INVALID_EXAMPLE: Final = "invalid_example"
    ROW_TOO_LARGE: Final = "row_too_large"
    EXAMPLE_TOO_LONG: Final = "example_too_long"


class FileReason:
    """Why a whole upload was refused (one record, `line: null`; nothing of it is kept)."""

    BAD_PATH: Final = "bad_path"
    UNKNOWN_TENANT: Final = "unknown_tenant"
    NO_CONSENT: Final = "no_consent"
    FILE_TOO_LARGE: Final = "file_too_large"
    EMPTY_FILE: Final = "empty_file"
    NOT_UTF8: Final = "not_utf8"
    TOO_MANY_ROWS: Final = "too_many_rows"
    UPLOAD_REPLACED: Final = "upload_replaced"


class TrainingUploadError(BaseModel):
    """`training.error` v1: one line of an upload's rejection file. `line` is the row's line
    (1-based), or None when the whole file was refused; `detail` names fields and limits, never
    the text that was sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["training.error"] = TRAINING_ERROR_TYPE
    version: Literal[1] = 1
    line: int | None = Field(default=None, ge=1)
    reason: str
    detail: str

    def jsonl(self) -> bytes:
        return self.model_dump_json().encode("utf-8") + b"\n"


class TrainingExample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[ChatMessage] = Field(min_length=2, max_length=MAX_MESSAGES)

    def jsonl(self, contents: Sequence[str] | None = None) -> bytes:
        """The example as one line of a training file, as `shared.drift.training_set` writes it
        (`json.dumps`, not ASCII-escaped); `contents` replaces each turn's text (scrubbed)."""
        texts = contents if contents is not None else [m.content for m in self.messages]
        messages = [
            {"role": m.role, "content": t} for m, t in zip(self.messages, texts, strict=True)
        ]
        return json.dumps({"messages": messages}, ensure_ascii=False).encode("utf-8") + b"\n"


def parse_training_row(text: bytes, limits: UploadLimits) -> TrainingExample:
    """One line (without its ending) as an example. Raises ContractError (`RowReason`) with a
    detail that names fields, turns and limits, never values."""
    document: dict[str, Any] = decode_object(text, what="row")
    problems = unencodable_text(document)
    if problems:
        raise ContractError(RowReason.INVALID_EXAMPLE, "; ".join(problems))
    try:
        example = TrainingExample.model_validate(document)
    except ValidationError as exc:
        raise ContractError(RowReason.INVALID_EXAMPLE, format_validation_error(exc)) from None
    problems = _turn_problems(example.messages)
    if problems:
        raise ContractError(RowReason.INVALID_EXAMPLE, "; ".join(problems))
    tokens = prompt_tokens_estimate(m.content for m in example.messages)
    if tokens > limits.max_example_tokens:
        raise ContractError(
            RowReason.EXAMPLE_TOO_LONG,
            f"the example has about {tokens} tokens ({CHARS_PER_TOKEN} characters per token); "
            f"a training example may have {limits.max_example_tokens}",
        )
    return example


async def checked_rows(
    chunks: AsyncIterable[bytes], limits: UploadLimits
) -> AsyncIterator[tuple[int, TrainingExample | TrainingUploadError]]:
    """Each row of an upload read in chunks (`numbered_lines`: bounded memory, BOM and `\\r\\n`
    accepted), with its line number: the example, or the error that refuses it. Blank lines are
    no rows (their numbers still count)."""
    async for line, text in numbered_lines(chunks, limits.max_row_bytes):
        row: TrainingExample | TrainingUploadError
        if text is None:
            row = TrainingUploadError(
                line=line,
                reason=RowReason.ROW_TOO_LARGE,
                detail=f"the row is longer than {limits.max_row_bytes} bytes",
            )
        elif not text.strip():
            continue
        else:
            try:
                row = parse_training_row(text, limits)
            except ContractError as exc:
                row = TrainingUploadError(line=line, reason=exc.reason, detail=exc.detail)
        yield line, row


def _turn_problems(messages: Sequence[ChatMessage]) -> list[str]:
    problems = [
        f"messages[{index}].content: is empty once invisible characters are removed"
        for index, message in enumerate(messages)
        if not normalised(message.content).strip()
    ]
    if not any(m.role == "user" for m in messages):
        problems.append("messages: needs at least one turn with role 'user'")
    if messages[-1].role != "assistant":
        problems.append(
            f"messages[{len(messages) - 1}].role: the last turn must have role 'assistant' "
            "(the answer the model learns)"
        )
    return problems[:8]

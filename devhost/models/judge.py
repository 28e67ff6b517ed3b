"""The simulated judge: a deployment with `"judge": true` scores similarity as an LLM judge does.

The evaluation gate asks the judge, as Azure AI Evaluation's similarity evaluator does, how
similar an answer is to a reference answer, on a scale of 1 to 5, and reads back one integer.
Its last user message holds the two between tags:

    ... <reference>the current model's answer</reference> <answer>the candidate's answer</answer>

The judge answers with the integer alone (reply text "4", one completion token, finish_reason
"stop"), chosen from the verdict mark in the answer (`quality.verdict_of`): a good answer scores
4 or 5, a poor one 1 or 2, an answer without a mark (or a prompt without an `<answer>` section)
3. Between the two scores of a verdict the choice is a hash (blake2b) of the answer text, so the
same answer always gets the same score and different answers spread over both. The judge's own
replies never get a verdict mark; its `quality` does not matter.

Hand-written: a regex and a hash. azure-ai-evaluation's SimilarityEvaluator is the caller's side
(it builds the prompt and parses the integer), not something the simulator needs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from devhost.models.quality import verdict_of
from devhost.models.tokens import message_text

NEUTRAL_SCORE: Final = 3
_ANSWER = re.compile(r"<answer>(.*)</answer>", re.DOTALL | re.IGNORECASE)


def answer_of(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The text between `<answer>` and the last `</answer>` of the last user message."""
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    if last_user is None:
        return None
    found = _ANSWER.search(message_text(last_user))
    return found.group(1) if found else None


def judge_score(messages: Sequence[Mapping[str, Any]]) -> int:
    """The similarity score (1-5) the judge gives these messages."""
    answer = answer_of(messages)
    if answer is None:
        return NEUTRAL_SCORE
    verdict = verdict_of(answer)
    if verdict is None:
        return NEUTRAL_SCORE
    pick = hashlib.blake2b(answer.encode("utf-8", "surrogatepass"), digest_size=1).digest()[0] % 2
    return (4 + pick) if verdict else (1 + pick)

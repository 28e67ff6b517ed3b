"""Content filtering as Azure OpenAI and Azure AI Content Safety answer it, driven by markers.

Azure OpenAI deployments (`kind: azure_openai`, on both routes) filter as the service does:
- every 200 carries the annotations: `prompt_filter_results`
  (`[{"prompt_index": 0, "content_filter_results": {...}}]`) and each choice's
  `content_filter_results`, every category `{"filtered": false, "severity": "safe"}` (the binary
  ones `{"filtered": false, "detected": false}`);
- a prompt holding `[sim:harm:<category>]` (hate, sexual, violence, self_harm) or `[sim:jailbreak]`
  is refused: HTTP 400 `{"error": {"code": "content_filter", "param": "prompt", "status": 400,
  "message": "The response was filtered ...", "innererror": {"code":
  "ResponsibleAIPolicyViolation", "content_filter_result": {...<category> filtered, high...}}}}`;
- a prompt holding `[sim:harm-answer:<category>]` is answered with a withheld completion: 200,
  `finish_reason: "content_filter"`, `message.content: null`, the category `filtered: true,
  severity: high` in the choice's `content_filter_results`.
`ai_inference` deployments (models without built-in filtering) filter nothing; they answer a
`[sim:harm-answer:<category>]` prompt with text that holds `[sim:harm:<category>]`, so a
post-check with Content Safety has something to find. The fault kinds `content_filter` and
`content_filter_completion` (faults.py) give the same two answers without a marker.

Azure AI Content Safety (`POST /contentsafety/text:analyze` and `/contentsafety/text:shieldPrompt`,
`?api-version=...`, key in `Ocp-Apim-Subscription-Key` or a bearer token) as the
`azure-ai-contentsafety` client calls it:
- analyze: `{"text", "categories"?, "outputType"?}` (text at most 10,000 characters) ->
  `{"blocklistsMatch": [], "categoriesAnalysis": [{"category": "Hate", "severity": 0}, ...]}`,
  severity 6 for a category whose `[sim:harm:<category>]` marker is in the text, else 0;
- shieldPrompt: `{"userPrompt", "documents"?}` -> `{"userPromptAnalysis": {"attackDetected":
  bool}, "documentsAnalysis": [{"attackDetected": bool}, ...]}`, detected where
  `[sim:jailbreak]` is.

Sources: learn.microsoft.com/azure/ai-services/openai/concepts/content-filter; the Content
Safety REST reference (text:analyze 2023-10-01, text:shieldPrompt 2024-09-01).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from aiohttp import web

from devhost.models import errors

HARM_CATEGORIES: Final = ("hate", "sexual", "violence", "self_harm")
_SAFETY_NAMES: Final = {"hate": "Hate", "sexual": "Sexual", "violence": "Violence"}
_SAFETY_NAMES_ALL: Final = {**_SAFETY_NAMES, "self_harm": "SelfHarm"}
_HARM: Final = re.compile(r"\[sim:harm:(hate|sexual|violence|self_harm)\]")
_HARM_ANSWER: Final = re.compile(r"\[sim:harm-answer:(hate|sexual|violence|self_harm)\]")
JAILBREAK: Final = "[sim:jailbreak]"
MAX_TEXT_CHARS: Final = 10_000
PROMPT_FILTERED_MESSAGE: Final = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)


def harm_in(text: str) -> set[str]:
    """The harm categories whose `[sim:harm:<category>]` marker is in `text`."""
    return set(_HARM.findall(text)) if "[sim:" in text else set()


def harmful_answer_asked(text: str) -> str | None:
    """The category of a `[sim:harm-answer:<category>]` marker in `text`, if any."""
    if "[sim:" not in text:
        return None
    found = _HARM_ANSWER.search(text)
    return found.group(1) if found else None


def prompt_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """Every message's text (string content, or the text parts of a list)."""
    parts: list[str] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p, dict) and "text" in p)
    return "\n".join(parts)


def results(
    filtered: Iterable[str] = (), *, jailbreak: bool | None = None, completion: bool = False
) -> dict[str, Any]:
    """`content_filter_results`: each harm category safe, or high and filtered when named;
    the prompt's `jailbreak`, or the completion's protected-material models."""
    named = set(filtered)
    out: dict[str, Any] = {
        c: {"filtered": True, "severity": "high"}
        if c in named
        else {"filtered": False, "severity": "safe"}
        for c in HARM_CATEGORIES
    }
    if completion:
        out["protected_material_text"] = {"filtered": False, "detected": False}
        out["protected_material_code"] = {"filtered": False, "detected": False}
    else:
        attack = bool(jailbreak)
        out["jailbreak"] = {"filtered": attack, "detected": attack}
    return out


SAFE_PROMPT: Final = [{"prompt_index": 0, "content_filter_results": results()}]
SAFE_CHOICE: Final = results(completion=True)


def prompt_filtered(categories: Iterable[str], *, jailbreak: bool = False) -> web.Response:
    """The 400 Azure OpenAI answers a filtered prompt with."""
    error = {
        "message": PROMPT_FILTERED_MESSAGE,
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": results(categories, jailbreak=jailbreak),
        },
    }
    return web.json_response({"error": error}, status=400)


def prompt_verdict(text: str) -> web.Response | None:
    """The 400 for a prompt an Azure OpenAI deployment filters, or None."""
    if "[sim:" not in text:
        return None
    harmed = harm_in(text)
    attack = JAILBREAK in text
    if not harmed and not attack:
        return None
    return prompt_filtered(harmed, jailbreak=attack)


def withheld_choice(index: int, category: str) -> dict[str, Any]:
    """A choice whose completion the filter withheld."""
    return {
        "index": index,
        "message": {"role": "assistant", "content": None},
        "finish_reason": "content_filter",
        "logprobs": None,
        "content_filter_results": results([category], completion=True),
    }


# ---- Azure AI Content Safety -------------------------------------------------------------------


def _key_ok(request: web.Request, keys: frozenset[str], any_bearer: bool) -> bool:
    key = request.headers.get("Ocp-Apim-Subscription-Key")
    if key is not None and key in keys:
        return True
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        token = auth[7:].strip()
        return token in keys or (any_bearer and bool(token))
    return False


def _denied() -> web.Response:
    return errors.error_response(
        401,
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint.",
    )


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    if not request.query.get("api-version"):
        return errors.error_response(400, "InvalidRequestBody", "api-version is required")
    try:
        body = json.loads(await request.read())
    except ValueError:
        return errors.error_response(400, "InvalidRequestBody", "the body is not valid JSON")
    if not isinstance(body, dict):
        return errors.error_response(400, "InvalidRequestBody", "the body must be an object")
    return body


class ContentSafetyRoutes:
    """`/contentsafety/text:analyze` and `/contentsafety/text:shieldPrompt`."""

    def __init__(self, keys: Iterable[str], *, accept_any_bearer: bool) -> None:
        self._keys = frozenset(keys)
        self._any_bearer = accept_any_bearer
        self.calls: dict[str, int] = {"analyze": 0, "shield": 0}

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/contentsafety/text:analyze", self.analyze)
        router.add_post("/contentsafety/text:shieldPrompt", self.shield_prompt)

    async def analyze(self, request: web.Request) -> web.Response:
        if not _key_ok(request, self._keys, self._any_bearer):
            return _denied()
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        text = body.get("text")
        if not isinstance(text, str) or not text or len(text) > MAX_TEXT_CHARS:
            return errors.error_response(
                400,
                "InvalidRequestBody",
                f"'text' must be a string of 1 to {MAX_TEXT_CHARS} characters",
            )
        self.calls["analyze"] += 1
        wanted = body.get("categories") or list(_SAFETY_NAMES_ALL.values())
        harmed = {_SAFETY_NAMES_ALL[c] for c in harm_in(text)}
        analysis = [
            {"category": name, "severity": 6 if name in harmed else 0}
            for name in _SAFETY_NAMES_ALL.values()
            if name in wanted
        ]
        return web.json_response({"blocklistsMatch": [], "categoriesAnalysis": analysis})

    async def shield_prompt(self, request: web.Request) -> web.Response:
        if not _key_ok(request, self._keys, self._any_bearer):
            return _denied()
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        prompt = body.get("userPrompt", "")
        documents = body.get("documents") or []
        if not isinstance(prompt, str) or not isinstance(documents, list):
            return errors.error_response(
                400, "InvalidRequestBody", "'userPrompt' must be a string, 'documents' a list"
            )
        self.calls["shield"] += 1
        return web.json_response(
            {
                "userPromptAnalysis": {"attackDetected": JAILBREAK in prompt},
                "documentsAnalysis": [
                    {"attackDetected": isinstance(d, str) and JAILBREAK in d} for d in documents
                ],
            }
        )

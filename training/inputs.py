"""What the trainer checks before it imports torch: the data, the base model spec, the hashes.

Standard library only, so a bad input exits (code 2) in a fraction of a second and the main
project's tests can import this module without torch.

Chat JSONL (Azure OpenAI fine-tuning format), one example per line:

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "...", "weight": 1}]}

- roles: system, user, assistant, tool (tool and function results are context, like user turns);
- content: a string, or a list of `{"type": "text", "text": ...}` parts (joined); image parts and
  assistant `tool_calls` are refused (this trainer has no use for them);
- `weight` (assistant turns only, 0 or 1, default 1): 0 keeps the turn as context without loss;
- every example needs at least one assistant turn with weight 1; blank lines are skipped.

`read_chat_jsonl` raises `BadInput` naming the file and the line (1-based) of the first problem.
Weighed: pydantic models for the records (not among the trainer's pinned requirements, and its
errors would still need rewording to name the line), and `datasets`' JSON loader (no line numbers,
a large dependency); the format is small enough to check by hand.

Base model specs (`parse_base_model`): `tiny:<preset>` (a tiny Llama-style model built in-process
from `TINY_PRESETS`, weights drawn from the preset's own seed, so the same spec rebuilds the same
base to reload an adapter), a local directory holding a Hugging Face model (at its top, or further
down as in an Azure ML registry model's MLflow layout, with the tokenizer in its own folder), or a
hub id, which is
only loaded inside Azure ML (`AZUREML_RUN_ID` set) or where TRAINING_ALLOW_HUB=1 says so: nothing
here ever downloads weights by accident.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ROLES = ("system", "user", "assistant", "tool", "function")
TRAINING_DIR = Path(__file__).resolve().parent
HEX64 = re.compile(r"[0-9a-f]{64}")


class BadInput(Exception):
    """The job's input is wrong (exit code 2); the message says what and where."""


Message = dict[str, Any]  # {"role": str, "content": str, "weight": 0 | 1}
Chat = list[Message]


@dataclass(frozen=True)
class TinyPreset:
    """A tiny causal LM (Llama architecture) over the byte tokenizer; sizes in units, not bytes."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int
    init_seed: int
    # Wider than transformers' 0.02: the frozen random head then gives logits of a useful range,
    # so LoRA on the linear layers visibly lowers the loss within a few dozen steps.
    init_std: float = 0.2


TINY_PRESETS: dict[str, TinyPreset] = {
    # ~35k parameters: the tests' model (a training step takes milliseconds on one core).
    "micro": TinyPreset(32, 2, 4, 2, 64, 256, 0),
    # ~110k parameters: devhost's default, seconds for a hundred steps.
    "mini": TinyPreset(64, 2, 4, 2, 128, 512, 0),
    # ~660k parameters.
    "small": TinyPreset(128, 4, 4, 2, 256, 1024, 0),
}


@dataclass(frozen=True)
class BaseModelRef:
    kind: Literal["tiny", "local", "hub"]
    value: str  # preset name, the model's directory, or hub id
    tokenizer: str | None = None  # the tokenizer's directory (local), when not `value`

    @property
    def preset(self) -> TinyPreset:
        return TINY_PRESETS[self.value]


def parse_base_model(spec: str) -> BaseModelRef:
    spec = spec.strip()
    if spec.startswith("tiny:"):
        name = spec.removeprefix("tiny:")
        if name not in TINY_PRESETS:
            known = ", ".join(f"tiny:{n}" for n in TINY_PRESETS)
            raise BadInput(f"unknown tiny preset {spec!r}; known: {known}")
        return BaseModelRef("tiny", name)
    path = Path(spec)
    if path.is_dir():
        model_dir = _shallowest(path, ("config.json",))
        if model_dir is None:
            raise BadInput(f"base model directory {spec} has no config.json")
        tokenizer_dir = _shallowest(path, ("tokenizer.json", "tokenizer_config.json"))
        return BaseModelRef(
            "local",
            str(model_dir.resolve()),
            str(tokenizer_dir.resolve()) if tokenizer_dir else None,
        )
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise BadInput(f"base model directory {spec} does not exist")
    if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", spec):
        raise BadInput(f"base model {spec!r} is neither tiny:<preset>, a directory nor a hub id")
    if not (os.environ.get("AZUREML_RUN_ID") or os.environ.get("TRAINING_ALLOW_HUB") == "1"):
        raise BadInput(
            f"base model {spec!r} is a hub id, loaded only inside Azure ML "
            "(set TRAINING_ALLOW_HUB=1 to allow a download here)"
        )
    return BaseModelRef("hub", spec)


def _shallowest(root: Path, names: tuple[str, ...], depth: int = 4) -> Path | None:
    """The shallowest folder under `root` (itself included, `depth` levels) holding one of
    `names`: a Hugging Face model is at the top of its folder, an Azure ML registry model (MLflow
    layout) keeps it further down, e.g. `mlflow_model_folder/data/model/`."""
    level = [root]
    for _ in range(depth + 1):
        for folder in sorted(level):
            if any((folder / name).is_file() for name in names):
                return folder
        level = [child for folder in level for child in folder.iterdir() if child.is_dir()]
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> str:
    """The file's sha256; BadInput when `expected` is given and differs."""
    actual = file_sha256(path)
    want = expected.strip().lower()
    if not HEX64.fullmatch(want):
        raise BadInput(f"--dataset-sha256 {expected!r} is not 64 hex digits")
    if actual != want:
        raise BadInput(
            f"train file {path.name} has sha256 {actual}, not the expected {want}: "
            "the dataset changed after the job was submitted"
        )
    return actual


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise BadInput(f"{where}: content part of type {kind!r} is not supported")
            text = part.get("text")
            if not isinstance(text, str):
                raise BadInput(f"{where}: a text part needs a string 'text'")
            texts.append(text)
        return "".join(texts)
    raise BadInput(f"{where}: 'content' must be a string or a list of text parts")


def parse_chat(record: Any, where: str) -> Chat:
    """One example; `where` (e.g. `train.jsonl line 3`) prefixes every error message."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise BadInput(f"{where}: expected an object with a 'messages' list")
    chat: Chat = []
    trained = 0
    for i, msg in enumerate(record["messages"], start=1):
        at = f"{where}, message {i}"
        if not isinstance(msg, dict):
            raise BadInput(f"{at}: expected an object")
        role = msg.get("role")
        if role not in ROLES:
            raise BadInput(f"{at}: role {role!r} is not one of {', '.join(ROLES)}")
        if msg.get("tool_calls") or msg.get("function_call"):
            raise BadInput(f"{at}: tool calls are not supported by this trainer")
        weight = msg.get("weight", 1)
        if role != "assistant" and "weight" in msg:
            raise BadInput(f"{at}: 'weight' is allowed on assistant messages only")
        if weight not in (0, 1) or isinstance(weight, bool):
            raise BadInput(f"{at}: 'weight' must be 0 or 1")
        content = _content(msg.get("content"), at)
        if role == "assistant" and weight == 1:
            if not content:
                raise BadInput(f"{at}: an assistant message to learn from is empty")
            trained += 1
        chat.append({"role": role, "content": content, "weight": weight})
    if trained == 0:
        raise BadInput(f"{where}: no assistant message to learn from (weight 1)")
    return chat


def read_chat_jsonl(path: Path, label: str = "train file") -> list[Chat]:
    """Every example of a chat JSONL file; BadInput names the first bad line (1-based)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{label} {path} does not exist") from None
    except IsADirectoryError:
        raise BadInput(f"{label} {path} is a directory") from None
    chats: list[Chat] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        where = f"{label} {path.name} line {number}"
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadInput(f"{where}: not UTF-8 (byte {err.start})") from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise BadInput(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
        chats.append(parse_chat(record, where))
    if not chats:
        raise BadInput(f"{label} {path.name} has no examples")
    return chats


def code_version(root: Path = TRAINING_DIR) -> str:
    """sha256 over the training package's sources (relative path and bytes, sorted), 16 hex."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.suffix in {".py", ".txt", ".yaml", ".yml", ".md"}
    )
    for p in files:
        digest.update(p.relative_to(root).as_posix().encode() + b"\0")
        digest.update(p.read_bytes() + b"\0")
    return digest.hexdigest()[:16]

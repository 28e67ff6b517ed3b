"""Base models, the byte tokenizer, and chats turned into token ids with loss on assistant turns.

- `byte_tokenizer()`: a `PreTrainedTokenizerFast` whose ids 0-255 are the UTF-8 bytes and 256-261
  the chat's special tokens (`<|pad|>`, `<|end|>`, `<|system|>`, `<|user|>`, `<|assistant|>`,
  `<|tool|>`), with a chat template that writes `<|role|>content<|end|>\n` per message. No vocab
  file, no download, the same ids on every machine. Built with the `tokenizers` library (a BPE
  model with no merges over the GPT-2 byte alphabet); the 10-line GPT-2 byte-to-character table is
  written out here because transformers moves it between modules from release to release.
- `load_base(ref, dtype)`: `tiny:<preset>` builds a Llama-architecture model from the preset with
  weights drawn under the preset's own seed (a forked RNG, so the caller's seed is untouched);
  a directory or hub id goes through `AutoModelForCausalLM` / `AutoTokenizer`.
- `encode_chat(tokenizer, chat, max_length)`: renders the chat with the tokenizer's chat template
  one message at a time and tokenizes each new piece; pieces of assistant turns with weight 1
  (everything the template adds after the assistant header: content and end marker) keep their
  ids as labels, everything else is -100 (no loss). Templates that do not render a conversation
  as a prefix of its continuation fall back to the byte tokenizer's template. Returns None when
  truncation to `max_length` tokens leaves nothing to learn.
  Weighed: trl's SFTTrainer `assistant_only_loss` needs `{% generation %}` markers in the template,
  which the tiny tokenizer would have but most hub templates lack; the prefix rendering here works
  with any template.

Devices: `pick_device()` is `cuda` when torch sees a GPU, else `cpu`; `pick_dtype()` is bfloat16
where `torch.cuda.is_bf16_supported()`, else float32.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from training.inputs import BaseModelRef, Chat, TinyPreset

IGNORE = -100
SPECIAL_TOKENS = ("<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
BYTE_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% set role = 'tool' if m['role'] == 'function' else m['role'] %}"
    "<|{{ role }}|>{{ m['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
HF_MAX_LENGTH = 2048


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (the ByteLevel pre-tokenizer's)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {char: byte for byte, char in _bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>")
    fast.chat_template = BYTE_CHAT_TEMPLATE
    fast.model_max_length = HF_MAX_LENGTH
    return fast


def build_tiny(
    name: str, preset: TinyPreset, tokenizer: PreTrainedTokenizerBase
) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden,
        intermediate_size=preset.intermediate,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.kv_heads,
        max_position_embeddings=preset.max_positions,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        initializer_range=preset.init_std,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(preset.init_seed)
        model = LlamaForCausalLM(config)
    model.name_or_path = f"tiny:{name}"
    return model


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_base(
    ref: BaseModelRef, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, int]:
    """(model on the CPU, tokenizer, max tokens per example)."""
    if ref.kind == "tiny":
        tokenizer = byte_tokenizer()
        return build_tiny(ref.value, ref.preset, tokenizer), tokenizer, ref.preset.max_positions
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(ref.tokenizer or ref.value)
    model = AutoModelForCausalLM.from_pretrained(ref.value, dtype=dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = BYTE_CHAT_TEMPLATE
    limit = getattr(model.config, "max_position_embeddings", None) or HF_MAX_LENGTH
    return model, tokenizer, min(int(limit), HF_MAX_LENGTH)


class _NotPrefixStable(Exception):
    pass


def _render(tokenizer: PreTrainedTokenizerBase, chat: Chat, generation: bool) -> str:
    messages = [{"role": m["role"], "content": m["content"]} for m in chat]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    return str(text)


def _pieces(tokenizer: PreTrainedTokenizerBase, chat: Chat) -> list[tuple[str, bool]]:
    """The rendered chat cut into (text, learn) pieces, each a suffix of the one before."""
    pieces: list[tuple[str, bool]] = []
    done = ""

    def extend(text: str, learn: bool) -> None:
        nonlocal done
        if not text.startswith(done):
            raise _NotPrefixStable
        if len(text) > len(done):
            pieces.append((text[len(done) :], learn))
        done = text

    for i, message in enumerate(chat):
        if message["role"] == "assistant":
            if i:
                extend(_render(tokenizer, chat[:i], generation=True), False)
            extend(_render(tokenizer, chat[: i + 1], generation=False), message["weight"] == 1)
        else:
            extend(_render(tokenizer, chat[: i + 1], generation=False), False)
    return pieces


def encode_chat(
    tokenizer: PreTrainedTokenizerBase, chat: Chat, max_length: int
) -> dict[str, list[int]] | None:
    """One chat as input_ids, attention_mask and labels (-100: no loss), or None (see above).
    Raises _NotPrefixStable when the tokenizer's template cannot be rendered piece by piece."""
    input_ids: list[int] = []
    labels: list[int] = []
    for text, learn in _pieces(tokenizer, chat):
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        input_ids += ids
        labels += ids if learn else [IGNORE] * len(ids)
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(label == IGNORE for label in labels):
        return None
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def encode_chats(
    tokenizer: PreTrainedTokenizerBase, chats: list[Chat], max_length: int
) -> list[dict[str, list[int]]]:
    """Every chat that keeps something to learn; all with one template (the byte tokenizer's
    when the tokenizer's own is not prefix-stable)."""
    try:
        encoded = [encode_chat(tokenizer, chat, max_length) for chat in chats]
    except _NotPrefixStable:
        if tokenizer.chat_template == BYTE_CHAT_TEMPLATE:
            raise
        tokenizer.chat_template = BYTE_CHAT_TEMPLATE
        encoded = [encode_chat(tokenizer, chat, max_length) for chat in chats]
    return [e for e in encoded if e is not None]

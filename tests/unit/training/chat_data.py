"""Generated chat JSONL for the training tests (Azure OpenAI fine-tuning format).

`chat_lines(n, seed)` draws `n` support conversations of a fixed shape with varying order numbers,
products and states: a byte-level tiny model learns the assistant's phrasing within a few dozen
steps, and different seeds give held-out examples of the same distribution.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

PRODUCTS = ("kettle", "toaster", "lamp", "chair", "printer", "router")
STATES = ("shipped", "packed", "delayed", "delivered")


def chat_lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        order = rng.randint(1000, 9999)
        product = rng.choice(PRODUCTS)
        state = rng.choice(STATES)
        messages = [
            {"role": "system", "content": "You are Fabrikam's order assistant."},
            {"role": "user", "content": f"Where is my {product}? Order {order}."},
            {
                "role": "assistant",
                "content": f"Your {product} (order {order}) is {state}. Thank you for "
                "shopping at Fabrikam!",
            },
        ]
        lines.append(json.dumps({"messages": messages}))
    return lines


def write_chat_jsonl(path: Path, n: int, seed: int) -> str:
    """Writes the file; its sha256 (hex)."""
    data = ("\n".join(chat_lines(n, seed)) + "\n").encode()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()

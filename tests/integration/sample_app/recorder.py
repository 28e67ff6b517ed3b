"""What the sample apps' functions saw, as JSON lines in `$SAMPLE_RECORD_DIR/events.jsonl`.

One line per event, written with a single append, so the host under test can be a subprocess
and concurrent invocations (threads included) never interleave within a line.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def record(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "at": time.time(), **fields}, default=str) + "\n"
    path = Path(os.environ["SAMPLE_RECORD_DIR"]) / "events.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


def read_events(folder: Path) -> list[dict[str, Any]]:
    path = folder / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]

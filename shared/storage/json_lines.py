"""Append-only JSON-lines logs in append blobs, rolled over into numbered parts when full.

A log is named by its base, e.g. `tailwind/2026-11-30` in the `usage` container: its lines live in
`<base>.jsonl`, then `<base>.1.jsonl`, `<base>.2.jsonl`, ... An append blob takes at most 50,000
appends (Azure Storage's limit for append blobs), one line per append, so concurrent writers never
interleave within a line and storage keeps their arrival order.

Readers take every part in order, and may start from a `Cursor` (part, byte offset already read),
so a consumer that remembers its cursor reads, and downloads, each line once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.storage.blob_store import AppendLimitReached, BlobStore

MAX_PARTS = 1000


def part_name(base: str, part: int = 0) -> str:
    """`<base>.jsonl` for part 0, `<base>.<part>.jsonl` after it."""
    suffix = f".{part}" if part else ""
    return f"{base}{suffix}.jsonl"


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far a reader got: the bytes of part `part` before `offset` were read (earlier parts:
    all), so the next read downloads only what was appended since."""

    part: int = 0
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Appended:
    blob: str
    lines_in_blob: int  # committed appends of that blob, this one included


class JsonLinesLog:
    """Appends lines to, and reads them back from, the logs of one container."""

    def __init__(self, store: BlobStore, container: str) -> None:
        self._store = store
        self._container = container
        self._parts: dict[str, int] = {}  # the part each base is known to have reached

    async def append(self, base: str, line: bytes) -> Appended:
        """Append one line (a trailing newline is added if missing). RuntimeError past
        MAX_PARTS parts (50 million lines), which the caller's partitioning must prevent."""
        data = line if line.endswith(b"\n") else line + b"\n"
        part = self._parts.get(base, 0)
        while part < MAX_PARTS:
            name = part_name(base, part)
            try:
                count = await self._store.append(self._container, name, data)
            except AppendLimitReached:
                part += 1
                self._parts[base] = part
                continue
            return Appended(blob=name, lines_in_blob=count)
        raise RuntimeError(f"{self._container}/{base} exceeds {MAX_PARTS} parts")

    async def parts(self, base: str) -> list[int]:
        """The parts of a log that exist, in order."""
        pattern = re.compile(re.escape(base) + r"(?:\.(\d+))?\.jsonl$")
        found = []
        for name in await self._store.list_names(self._container, base):
            match = pattern.fullmatch(name)
            if match:
                found.append(int(match.group(1) or 0))
        return sorted(found)

    async def read(self, base: str, since: Cursor | None = None) -> tuple[list[bytes], Cursor]:
        """The lines after `since`, and the cursor after them. Lines without a trailing newline
        (an append in flight elsewhere) are not returned until complete."""
        since = since or Cursor()
        lines: list[bytes] = []
        cursor = since
        for part in await self.parts(base):
            if part < since.part:
                continue
            offset = since.offset if part == since.part else 0
            data = await self._store.read_from(self._container, part_name(base, part), offset)
            if data is None:
                continue
            complete = data[: data.rfind(b"\n") + 1]
            lines.extend(line for line in complete.splitlines() if line.strip())
            cursor = Cursor(part=part, offset=offset + len(complete))
        return lines, cursor

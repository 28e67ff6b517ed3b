"""Numbered lines out of a stream of chunks, in bounded memory.

A line longer than `max_bytes` is not kept: it is reported as None (its number still counts) and
the rest of it is skipped up to the next newline, so a file of one endless line costs no more
memory than a file of short ones. `\\r\\n` endings and a leading UTF-8 BOM are accepted.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

BOM = b"\xef\xbb\xbf"


async def numbered_lines(
    chunks: AsyncIterable[bytes], max_bytes: int
) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number from 1, the line without its ending or None when too long)."""
    buffer = bytearray()
    too_long = False
    number = 0
    async for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not too_long:
                    buffer += chunk[start:]
                    if len(buffer) > max_bytes:
                        too_long = True
                        buffer.clear()
                break
            number += 1
            if not too_long:
                buffer += chunk[start:end]
            yield number, _line(buffer, too_long, max_bytes, first=number == 1)
            buffer.clear()
            too_long = False
            start = end + 1
    if buffer or too_long:
        yield number + 1, _line(buffer, too_long, max_bytes, first=number == 0)


def _line(buffer: bytearray, too_long: bool, max_bytes: int, *, first: bool) -> bytes | None:
    if first and buffer.startswith(BOM):
        del buffer[: len(BOM)]
    if buffer.endswith(b"\r"):
        del buffer[-1]
    if too_long or len(buffer) > max_bytes:
        return None
    return bytes(buffer)

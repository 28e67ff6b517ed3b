"""numbered_lines: line numbers, endings, a BOM, and lines too long to keep, over any chunking."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.batch.lines import numbered_lines


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _lines(data: bytes, size: int, max_bytes: int = 10) -> list[tuple[int, bytes | None]]:
    return [item async for item in numbered_lines(_chunks(data, size), max_bytes)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64])
async def test_lines_are_numbered_from_one_whatever_the_chunks(size: int) -> None:
    data = b"\xef\xbb\xbfa\r\n\nbb\nccc"
    assert await _lines(data, size) == [(1, b"a"), (2, b""), (3, b"bb"), (4, b"ccc")]


@pytest.mark.parametrize("size", [1, 4, 64])
async def test_a_line_too_long_is_none_and_the_next_line_is_intact(size: int) -> None:
    data = b"ok\n" + b"x" * 50 + b"\nfine\n" + b"y" * 11
    assert await _lines(data, size) == [(1, b"ok"), (2, None), (3, b"fine"), (4, None)]


async def test_a_trailing_newline_adds_no_line_and_an_empty_file_has_none() -> None:
    assert await _lines(b"a\n", 3) == [(1, b"a")]
    assert await _lines(b"", 3) == []

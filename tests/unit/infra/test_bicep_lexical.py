"""Every .bicep file in infra/ passes the Bicep lexer's rules (tests/unit/infra/bicep_lexer.py),
and the checker itself rejects each kind of text the compiler rejects."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.infra import bicep_model as bicep
from tests.unit.infra.bicep_lexer import checkov_skips, lex_errors
from tests.unit.infra.bicep_model import INFRA


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(INFRA)) for path in paths]


@pytest.mark.parametrize("path", bicep.bicep_files(), ids=_ids(bicep.bicep_files()))
def test_every_bicep_file_passes_the_bicep_lexer(path: Path) -> None:
    errors = lex_errors(path.read_text())
    assert not errors, f"{path.name}:\n" + "\n".join(f"  {e}" for e in errors)


@pytest.mark.parametrize("path", bicep.bicep_files(), ids=_ids(bicep.bicep_files()))
def test_checkov_skips_are_line_comments_with_a_reason(path: Path) -> None:
    skips, errors = checkov_skips(path.read_text())
    assert not errors, f"{path.name}:\n" + "\n".join(f"  {e}" for e in errors)
    for skip in skips:
        assert skip.check_id.startswith("CKV_"), f"{path.name}:{skip.line}: {skip.check_id}"
        assert len(skip.reason) >= 30, f"{path.name}:{skip.line}: {skip.check_id} has no reason"


def test_infra_has_checkov_skips_to_check() -> None:
    assert sum(len(checkov_skips(p.read_text())[0]) for p in bicep.bicep_files()) >= 10


RESOURCE = "resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' = {{\n{}\n  name: 'x'\n}}\n"

# Text the Bicep compiler rejects, each with the start of the message expected.
BAD = {
    "hash-checkov-skip": (RESOURCE.format("  #checkov:skip=CKV_AZURE_35:a reason"), "BCP001"),
    "hash-comment": ("# a comment\nparam a string\n", "BCP001"),
    "hash-after-code": ("param a string #disable-next-line BCP081\n", "`#disable"),
    "unclosed-string": ("var a = 'abc\nvar b = 1\n", "BCP004"),
    "unknown-escape": ("var a = 'C:\\data'\n", "BCP006"),
    "bad-unicode-escape": ("var a = '\\u{zz}'\n", "BCP006"),
    "unclosed-block-comment": ("/* started\nparam a string\n", "BCP002"),
    "double-quotes": ('var a = "abc"\n', "BCP001"),
    "semicolon": ("var a = 1;\n", "BCP001"),
    "unclosed-interpolation": ("var a = 'x${b'\n", "BCP004"),
    "single-ampersand": ("var a = b & c\n", "BCP001"),
    "unclosed-multiline-string": ("var a = '''\nabc\n", "BCP004"),
}


@pytest.mark.parametrize(("text", "expected"), BAD.values(), ids=list(BAD))
def test_the_lexer_rejects_what_bicep_rejects(text: str, expected: str) -> None:
    errors = lex_errors(text)
    assert errors, f"not rejected:\n{text}"
    assert errors[0].message.startswith(expected), errors


GOOD = {
    "pragmas": "#disable-next-line BCP081\nparam a string\n#disable-diagnostics BCP1\n"
    "#restore-diagnostics BCP1\n",
    "comments": "// a comment with # and ' and \"\n/* multi\nline */ param a string\n",
    "escapes": "var a = 'it\\'s \\\\ \\n \\r \\t \\$ \\u{1F600}'\n",
    "interpolation": "var a = 'x-${b['k']}-${toLower('${c}')}-${{ d: 1 }.d}'\n",
    "multiline-string": "var a = '''\nit's #1 ${not} \\interpolated\n'''\n",
    "operators": "var a = b.?c ?? !d && e || f == g != h <= i >= j =~ k !~ l\n"
    "var m = [for (x, i) in n: { '${x}': i % 2 * 3 / 4 - 5 + 6 }]\n"
    "var o = p::q\nvar r = [...s]\nvar t = u => u\ntype v = 'a' | 'b'\n",
    "decorators": "@minValue(1)\n@description('#1: a count')\nparam a int = 1\n",
}


@pytest.mark.parametrize("text", GOOD.values(), ids=list(GOOD))
def test_the_lexer_accepts_valid_bicep(text: str) -> None:
    assert lex_errors(text) == []


def test_a_hash_checkov_skip_is_reported_by_the_skip_reader_too() -> None:
    skips, errors = checkov_skips(RESOURCE.format("  #checkov:skip=CKV_AZURE_35:a reason"))
    assert skips == []
    assert len(errors) == 1
    assert errors[0].line == 2
    skips, errors = checkov_skips(RESOURCE.format("  // checkov:skip=CKV_AZURE_35:the reason"))
    assert errors == []
    assert [(s.check_id, s.reason) for s in skips] == [("CKV_AZURE_35", "the reason")]

r"""A lexical check of Bicep source that follows the Bicep compiler's lexer (Azure/bicep,
`src/Bicep.Core/Parsing/Lexer.cs`), so that text `bicep build` would reject at the first step fails
here, offline. pycep-parser is more lenient (its grammar drops `#` lines, for one), so a file can
parse with it and still not compile.

What Bicep accepts, and so what this accepts:
- comments `// ...` to the end of the line and `/* ... */` (which must be closed);
- `#` only to start a pragma: `#disable-next-line`, `#disable-diagnostics`, `#restore-diagnostics`
  (anything else is BCP001, "the following token is not recognized");
- strings in single quotes on one line, with the escapes `\\ \' \n \r \t \$ \u{hex}` only (others
  are BCP006) and `${ ... }` interpolations that hold expressions (BCP004 / BCP005 when a string
  is not closed); multi-line strings `'''...'''` with no escapes and no interpolation;
- identifiers, integers, and the operators and punctuation of the language; no double quotes, no
  semicolons, no backticks.

Beyond the lexer, it also reports a `// checkov:skip=` written after `#` (see `checkov_skips`).

It reports errors; it does not build tokens for a parser.
"""

from __future__ import annotations

from dataclasses import dataclass

PRAGMAS = ("disable-next-line", "disable-diagnostics", "restore-diagnostics")
_ESCAPES = set("\\'nrt$")
# Single characters Bicep has a token for (multi-character operators start with one of these).
_PUNCTUATION = set("{}[](),.:?!=<>+-*/%@|&~")


@dataclass(frozen=True)
class LexError:
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.message}"


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.errors: list[LexError] = []

    # --- positions ------------------------------------------------------------------------------

    def _where(self, pos: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return line, column

    def _error(self, pos: int, message: str) -> None:
        line, column = self._where(pos)
        self.errors.append(LexError(line, column, message))

    def _peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    # --- scanning -------------------------------------------------------------------------------

    def run(self) -> list[LexError]:
        self._expressions(until_brace=False)
        return self.errors

    def _expressions(self, *, until_brace: bool) -> None:
        """Scan tokens; inside an interpolation, stop after the `}` that closes it."""
        depth = 0
        while self.pos < len(self.text):
            char = self._peek()
            if char in " \t\r\n":
                self.pos += 1
            elif char == "/" and self._peek(1) == "/":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            elif char == "/" and self._peek(1) == "*":
                end = self.text.find("*/", self.pos + 2)
                if end < 0:
                    self._error(self.pos, "BCP002: the multi-line comment is not closed")
                    self.pos = len(self.text)
                else:
                    self.pos = end + 2
            elif char == "#":
                self._pragma()
            elif char == "'":
                if self.text.startswith("'''", self.pos):
                    self._multiline_string()
                else:
                    self._string()
            elif char.isalpha() or char == "_":
                while self._peek().isalnum() or self._peek() == "_":
                    self.pos += 1
            elif char.isdigit():
                while self._peek().isdigit():
                    self.pos += 1
            elif char == "{":
                depth += 1
                self.pos += 1
            elif char == "}":
                self.pos += 1
                if until_brace and depth == 0:
                    return
                depth -= 1
            elif char == "&":
                if self._peek(1) != "&":
                    self._error(self.pos, "BCP001: `&` is not a token (did you mean `&&`?)")
                    self.pos += 1
                else:
                    self.pos += 2
            elif char in _PUNCTUATION:
                self.pos += 1
            else:
                self._error(self.pos, f"BCP001: the token {char!r} is not recognized")
                self.pos += 1
        if until_brace:
            self._error(len(self.text), "BCP004: an interpolation `${` is not closed")

    def _pragma(self) -> None:
        start = self.pos
        line_start = self.text.rfind("\n", 0, start) + 1
        word_end = start + 1
        while word_end < len(self.text) and (
            self.text[word_end].isalnum() or self.text[word_end] == "-"
        ):
            word_end += 1
        word = self.text[start + 1 : word_end]
        end = self.text.find("\n", start)
        end = len(self.text) if end < 0 else end
        if word not in PRAGMAS:
            self._error(
                start,
                f"BCP001: `#` starts only {', '.join('#' + p for p in PRAGMAS)}; "
                f"use `//` for a comment (found `#{word}`)",
            )
        elif self.text[line_start:start].strip():
            self._error(start, f"`#{word}` must be the first thing on its line")
        self.pos = end  # a pragma (or the rejected text) runs to the end of the line

    def _string(self) -> None:
        start = self.pos
        self.pos += 1
        while True:
            char = self._peek()
            if char in ("", "\n", "\r"):
                self._error(start, "BCP004: the string is not closed on its line")
                return
            if char == "'":
                self.pos += 1
                return
            if char == "\\":
                escaped = self._peek(1)
                if escaped in _ESCAPES:
                    self.pos += 2
                elif escaped == "u" and self._peek(2) == "{":
                    close = self.text.find("}", self.pos + 3)
                    digits = self.text[self.pos + 3 : close] if close > 0 else ""
                    if not digits or any(d not in "0123456789abcdefABCDEF" for d in digits):
                        self._error(self.pos, "BCP006: a `\\u{...}` escape needs hex digits")
                        self.pos += 2
                    else:
                        self.pos = close + 1
                else:
                    self._error(self.pos, f"BCP006: `\\{escaped}` is not an escape Bicep knows")
                    self.pos += 2
                continue
            if char == "$" and self._peek(1) == "{":
                self.pos += 2
                self._expressions(until_brace=True)
                continue
            self.pos += 1

    def _multiline_string(self) -> None:
        start = self.pos
        end = self.text.find("'''", self.pos + 3)
        if end < 0:
            self._error(start, "BCP004: the multi-line string is not closed")
            self.pos = len(self.text)
            return
        self.pos = end + 3
        while self._peek() == "'":  # a multi-line string may end with quotes of its own
            self.pos += 1


def lex_errors(text: str) -> list[LexError]:
    """Everything in `text` that the Bicep lexer would reject, in order; [] for clean source."""
    return _Lexer(text).run()


@dataclass(frozen=True)
class CheckovSkip:
    line: int
    check_id: str
    reason: str


_SKIP = "checkov:skip="


def checkov_skips(text: str) -> tuple[list[CheckovSkip], list[LexError]]:
    """The `// checkov:skip=CKV_...:reason` comments of a Bicep file (checkov finds them anywhere in
    a resource's lines: `checkov.common.comment.enum.COMMENT_REGEX`), and an error for each skip
    that is not in a `//` comment, such as the old `#checkov:skip=`, which does not compile."""
    found: list[CheckovSkip] = []
    errors: list[LexError] = []
    for number, line in enumerate(text.splitlines(), start=1):
        at = line.find(_SKIP)
        if at < 0:
            continue
        comment = line.find("//")
        if comment < 0 or comment > at or line[comment + 2 : at].strip():
            errors.append(
                LexError(number, at + 1, "a checkov skip must be a `// checkov:skip=` comment")
            )
            continue
        check_id, _, reason = line[at + len(_SKIP) :].partition(":")
        found.append(CheckovSkip(number, check_id.strip(), reason.strip()))
    return found, errors

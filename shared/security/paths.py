"""Blob paths, built in one place from a validated tenant id and validated ids.

Every writer and reader of a per-tenant blob (`results/<tenant>/<request_id>.json`,
`rejected/<tenant or _unknown>/...`, `usage/<tenant>/<day>.jsonl`, `feedback/<tenant>/...`,
`drift/<tenant>/...`, `batches/<tenant>/...`, `jobs/<tenant>/...`, `training/<tenant>/...`) names
it with `tenant_path` (or `owner_path` for a record whose tenant may be unknown), so a name that a
tenant supplied can never leave its tenant's prefix nor alias another blob.

Shapes:
- `tenant_path("tailwind", "r-1", suffix=".json")` -> `"tailwind/r-1.json"`;
  `tenant_path("tailwind", "2025-01-02", "r-1", suffix=".json")`
  -> `"tailwind/2025-01-02/r-1.json"`;
  `tenant_prefix("tailwind", "_stream")` -> `"tailwind/_stream/"` (for listing).
- `owner_path(None, "feedback", "m-1", suffix=".json")` -> `"_unknown/feedback/m-1.json"`.
- `check_tenant_id(value)` / `check_id(value, what)` return the value unchanged or raise.
- `safe_or_hashed(value)`: the value when it is a safe id, else `sha256-<40 hex>`: for record
  names that must be written whatever a sender put in them (a rejection of a message whose id is
  unusable is still kept), never for ids that name what a tenant reads back.

Rules, checked in this order; each failure is an `UnsafeId` (a `ValueError`) whose `problem` says
which (the message names the field and the rule, never the value, which may be personal data):
`empty`; `too_long` (over 255); `lone_surrogate`; `control_character` (C0, C1, DEL, and the
format characters that hide in text: zero-width, bidi overrides, BOM); `unicode_lookalike`
(NFKC-normalising the value changes it: fullwidth letters U+FF41.., ligatures, superscripts, the
fullwidth solidus U+FF0F and full stop U+FF0E all fold onto ASCII that would name another id);
`non_ascii` (what is left outside ASCII: a Cyrillic o, U+043E, in "contoso" is not folded by NFKC,
so it is refused rather than compared); `path_separator` (`/`, `\\`); `percent_encoding` (`%` in
any form: `%2e%2e`, `%2f`, `%252e`: blob clients and gateways decode URLs, sometimes twice);
`dot_segment` (`.`, `..`, or a leading dot; `a..b` is one harmless segment, as no separator can
follow it); `not_allowed_character` (the id pattern); and, for a whole path, `trailing_dot` (a
segment that ends with a dot: HTTP stacks trim those, and Azure Storage advises against them). A
tenant id must also match the contract's pattern (`not_a_tenant_id`: lower-case, so `Contoso`
cannot alias `contoso`). Values are refused, never
rewritten: rewriting (stripping `../`, decoding `%2e`, folding case) is what turns two different
ids into one blob name.

Case: request ids and other ids are case-sensitive, as blob names are in Azure Storage and
Azurite; `R-1` and `r-1` are two ids of the same tenant, never of two tenants.

Libraries weighed: `pathvalidate` (file names for local file systems: it sanitizes by rewriting and
knows nothing of blob prefixes or percent-encoding), `werkzeug.utils.safe_join` /
`secure_filename` (rewrites, and joins under a directory of a local file system), `os.path` /
`posixpath.normpath` (normalises `a/../b` into `b`: the aliasing this module exists to refuse).
None refuses look-alikes; the rules above are a few lines of `unicodedata` and `re`, so they are
written here.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Final

from shared.contracts.inference import REQUEST_ID_PATTERN, TENANT_ID_PATTERN
from shared.storage import names

# Any segment of a path (ids the code makes too: `_stream`, `ftj-<hex>`, `fabrikam-ft-v1@ft-1`).
SEGMENT_PATTERN: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:@-]{0,254}$")
# An id a sender chose (request_id, message_id): the contract's pattern.
ID_PATTERN: Final = re.compile(REQUEST_ID_PATTERN)
_TENANT: Final = re.compile(TENANT_ID_PATTERN)
_SUFFIX: Final = re.compile(r"^(?:\.[a-z0-9]{1,16}){0,3}$")
_MAX_LENGTH: Final = 255
_HIDDEN: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class UnsafeId(ValueError):
    """An id that cannot name a blob. `what`: the field (`request_id`, `tenant_id`, ...);
    `problem`: the rule it breaks (module docstring); the value itself is never kept."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"{what} is not a safe id ({problem})")
        self.what = what
        self.problem = problem


def id_problem(value: object, pattern: re.Pattern[str] = SEGMENT_PATTERN) -> str | None:
    """The first rule `value` breaks (module docstring), or None for a safe id."""
    if not isinstance(value, str):
        return "not_text"
    if not value:
        return "empty"
    if len(value) > _MAX_LENGTH:
        return "too_long"
    if any(unicodedata.category(c) == "Cs" for c in value):
        return "lone_surrogate"
    if any(unicodedata.category(c) in _HIDDEN or c == "\x7f" for c in value):
        return "control_character"
    if unicodedata.normalize("NFKC", value) != value:
        return "unicode_lookalike"
    if not value.isascii():
        return "non_ascii"
    if "/" in value or "\\" in value:
        return "path_separator"
    if "%" in value:
        return "percent_encoding"
    if value in (".", "..") or value.startswith("."):
        return "dot_segment"
    if not pattern.fullmatch(value):
        return "not_allowed_character"
    return None


def check_id(value: str, what: str = "id", *, pattern: re.Pattern[str] = SEGMENT_PATTERN) -> str:
    """`value` unchanged when it is a safe id (a sender's id: pass `pattern=ID_PATTERN`)."""
    problem = id_problem(value, pattern)
    if problem is not None:
        raise UnsafeId(what, problem)
    return value


def is_safe_id(value: str, *, pattern: re.Pattern[str] = ID_PATTERN) -> bool:
    return id_problem(value, pattern) is None


def check_tenant_id(value: str) -> str:
    """`value` unchanged when it is a well-formed tenant id; UnsafeId otherwise."""
    check_id(value, "tenant_id")
    if not _TENANT.fullmatch(value):
        raise UnsafeId("tenant_id", "not_a_tenant_id")
    return value


def tenant_path(tenant_id: str, *segments: str, suffix: str = "") -> str:
    """`<tenant>/<segment>/.../<last segment><suffix>`, every part checked (UnsafeId). The owner
    is a tenant id, or `_unknown` (`names.UNKNOWN_TENANT_PREFIX`, which no tenant id can be) for
    the records of uploads and messages whose tenant the registry does not know."""
    return _join(_owner(tenant_id), segments, suffix)


def tenant_prefix(tenant_id: str, *segments: str) -> str:
    """`<tenant>/<segment>/.../`: the prefix to list a tenant's blobs under."""
    return _join(_owner(tenant_id), segments, "") + "/"


def owner_path(tenant_id: str | None, *segments: str, suffix: str = "") -> str:
    """`tenant_path` for a known tenant, `_unknown/...` for None (a record of a message whose
    tenant the registry does not know; no tenant id can be `_unknown`)."""
    return tenant_path(tenant_id or names.UNKNOWN_TENANT_PREFIX, *segments, suffix=suffix)


def safe_or_hashed(value: str, *, pattern: re.Pattern[str] = ID_PATTERN) -> str:
    """`value` when it is a safe id, else `sha256-<first 40 hex of its UTF-8 (surrogates
    escaped)>`: one fixed name per value, inside the same prefix, never a rewrite of it."""
    if is_safe_id(value, pattern=pattern):
        return value
    data = value.encode("utf-8", "surrogatepass")
    return "sha256-" + hashlib.sha256(data).hexdigest()[:40]


def _owner(tenant_id: str) -> str:
    return tenant_id if tenant_id == names.UNKNOWN_TENANT_PREFIX else check_tenant_id(tenant_id)


def _join(owner: str, segments: tuple[str, ...], suffix: str) -> str:
    for segment in segments:
        check_id(segment, "path segment")
    if not _SUFFIX.fullmatch(suffix):
        raise UnsafeId("suffix", "not_allowed_character")
    path = "/".join((owner, *segments)) + suffix
    if any(part.endswith(".") for part in path.split("/")):
        raise UnsafeId("path segment", "trailing_dot")
    return path

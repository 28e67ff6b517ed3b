"""The batch_id formula docs/contracts.md gives an uploader is the one the intake uses."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from shared.contracts.batch import batch_id_for

DOCS = Path(__file__).resolve().parents[3] / "docs" / "contracts.md"


def test_the_documented_formula_gives_the_intakes_batch_id() -> None:
    assert 'batch_id = "b" + hashlib.sha256(f"{tenant}\\0{name}\\0{etag}"' in DOCS.read_text()
    tenant, name, etag = "tailwind", "tailwind/batch/nightly.jsonl", '"0x8DD2F1A0B3C4D5E"'
    documented = (
        "b" + hashlib.sha256(f"{tenant}\0{name}\0{etag.strip(chr(34))}".encode()).hexdigest()[:24]
    )
    assert documented == batch_id_for(tenant, name, etag)
    assert re.fullmatch(r"b[0-9a-f]{24}", documented)

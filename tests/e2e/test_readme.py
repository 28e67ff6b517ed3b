"""The README's "Add a tenant" and "Inspect" code blocks, run as written against a running stack.

They run in a scratch checkout (a copy of dev.py; every other top-level entry linked), so the
relative paths they name (`.devhost-data/up/devhost.env`, `.venv/bin/python`, `examples/`) are the
test's own and a developer's running stack is never touched. The stack is `python -m devhost up
--data-dir <scratch>/.devhost-data/up`, as `python3 dev.py up` starts it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("Add a tenant", "Inspect")


def readme_blocks(text: str, section: str) -> list[str]:
    """The ```bash blocks of one `## section` of the README."""
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README has no section {section!r}"
    return re.findall(r"```bash\n(.*?)```", match[1], re.S)


def test_every_section_has_blocks() -> None:
    text = (ROOT / "README.md").read_text()
    for section in SECTIONS:
        assert readme_blocks(text, section), section
    with pytest.raises(AssertionError, match="no section"):
        readme_blocks("## Other\n```bash\ntrue\n```\n", "Inspect")


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    scratch = tmp_path / "checkout"
    scratch.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in {"dev.py", ".devhost-data", ".git"}:
            continue
        (scratch / entry.name).symlink_to(entry)
    shutil.copy(ROOT / "dev.py", scratch / "dev.py")
    data = scratch / ".devhost-data" / "up"
    out = tmp_path / "up.out"
    up = subprocess.Popen(
        [sys.executable, "-m", "devhost", "up", "--data-dir", str(data)],
        cwd=scratch,
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(scratch)},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while "stops everything" not in out.read_text(errors="replace"):
            assert up.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        yield scratch
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)


def test_the_readme_blocks_work_as_written(checkout: Path) -> None:
    text = (ROOT / "README.md").read_text()
    outputs = []
    for section in SECTIONS:
        for block in readme_blocks(text, section):
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block],
                cwd=checkout,
                capture_output=True,
                text=True,
                timeout=300,
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                check=False,
            )
            assert done.returncode == 0, f"{section}:\n{block}\n{done.stdout}\n{done.stderr}"
            outputs.append(done.stdout)
    joined = "\n".join(outputs)
    assert '"type": "inference.result"' in joined  # the new tenant's request was answered
    assert '"tenant_id": "northwind"' in joined
    assert "replies-northwind deleted" in joined
    assert '"tenants"' in joined  # inspect --json

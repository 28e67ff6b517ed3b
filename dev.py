#!/usr/bin/env python3
"""The two commands of the quick start: `python3 dev.py demo` and `python3 dev.py test`.

Both bootstrap what they need first (a venv, npm packages, the training venv, the tools venv),
idempotently: each install step is skipped when the stamp of its inputs has not changed. Only the
standard library is used here, because this runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TOOLS_VENV = ROOT / ".venv-tools"
# training/ runs in its own venv (torch, transformers, peft): devhost's job runner and the training
# tests start `python -m training.train` with it, as the Azure ML job does in its environment.
TRAINING_VENV = ROOT / ".venv-training"
NODE_DIR = ROOT / "devhost"


def _bin(venv: Path, name: str) -> Path:
    sub = "Scripts" if os.name == "nt" else "bin"
    return venv / sub / name


def _digest(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes() if f.exists() else b"")
    return h.hexdigest()


def _run(cmd: list[str], **kw: object) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def _ensure_venv(venv: Path, requirements: Path, *also: Path) -> None:
    stamp = venv / ".installed"
    want = _digest(requirements, *also)
    if stamp.exists() and stamp.read_text() == want:
        return
    if not _bin(venv, "python").exists():
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(_bin(venv, "python")), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    _run([str(_bin(venv, "python")), "-m", "pip", "install", "-q", "-r", str(requirements)])
    stamp.write_text(want)


def _ensure_node() -> None:
    lock = NODE_DIR / "package-lock.json"
    stamp = NODE_DIR / "node_modules" / ".installed"
    want = _digest(NODE_DIR / "package.json", lock)
    if stamp.exists() and stamp.read_text() == want:
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("npm is needed (for Azurite); install Node.js 20+ and try again")
    _run([npm, "ci" if lock.exists() else "install", "--no-audit", "--no-fund"], cwd=NODE_DIR)
    stamp.write_text(want)


def bootstrap(tools: bool) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this runs under whatever python3 the user has
        sys.exit("Python 3.11+ is needed")
    _ensure_venv(
        VENV,
        ROOT / "requirements-dev.txt",
        ROOT / "requirements.txt",
        ROOT / "requirements-devhost.txt",
    )
    _ensure_node()
    _ensure_venv(TRAINING_VENV, ROOT / "training" / "requirements.txt")
    if tools:
        _ensure_venv(TOOLS_VENV, ROOT / "requirements-tools.txt")


def _run_forwarding_signals(cmd: list[str], env: dict[str, str]) -> int:
    """Run `cmd` until it exits. SIGTERM, and SIGINT unless it is ignored (a background job), are
    passed on to it, so `kill <dev.py pid>` stops the stack too instead of orphaning it; this
    process only waits for the child's exit status (no KeyboardInterrupt traceback). The child
    stops once however many signals it gets."""
    child = subprocess.Popen(cmd, cwd=ROOT, env=env)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, forward)
    return child.wait()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "up", "inspect", "bootstrap"}:
        print(
            "usage: python3 dev.py demo | test [pytest args] | up [--fixed-ports] [--keep-data]"
            " | inspect [--tenant ID] [--json] | bootstrap"
        )
        return 2
    what, rest = argv[0], argv[1:]
    bootstrap(tools=what in {"test", "bootstrap"})
    py = str(_bin(VENV, "python"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if what == "bootstrap":
        return 0
    if what in {"demo", "up", "inspect"}:
        return _run_forwarding_signals([py, "-m", "devhost", what, *rest], env)
    env["CHECKOV_BIN"] = str(_bin(TOOLS_VENV, "checkov"))
    for step in (
        [py, "-m", "ruff", "check", "."],
        [py, "-m", "ruff", "format", "--check", "."],
        [py, "-m", "mypy"],
        [py, "-m", "pytest", *rest],
    ):
        print("+", " ".join(step[2:]), flush=True)
        code = subprocess.call(step, cwd=ROOT, env=env)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

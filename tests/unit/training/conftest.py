"""Running training/ in its own venv (.venv-training, which has torch) from the main test run.

- `training_python`: the venv's interpreter; the test FAILS (never skips) when it is missing,
  saying how to make it.
- `run_training(*args, timeout_s=...)`: `python -m training.train ARGS` from the repository root,
  the finished `subprocess.CompletedProcess` (text mode).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TRAINING_PYTHON = ROOT / ".venv-training" / ("Scripts" if os.name == "nt" else "bin") / "python"

RunTraining = Callable[..., subprocess.CompletedProcess[str]]


def training_env() -> dict[str, str]:
    # One thread for torch: the suite shares two cores, and tiny models gain nothing from more.
    return dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )


@pytest.fixture(scope="session")
def training_python() -> Path:
    if not TRAINING_PYTHON.exists():
        pytest.fail(
            f"{TRAINING_PYTHON} is missing: run `python3 dev.py bootstrap` to create the training "
            "venv (training/requirements.txt)",
            pytrace=False,
        )
    return TRAINING_PYTHON


@pytest.fixture(scope="session")
def run_training(training_python: Path) -> RunTraining:
    def run(
        *args: str | Path, module: str = "training.train", timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(training_python), "-m", module, *map(str, args)],
            cwd=ROOT,
            env=training_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    return run

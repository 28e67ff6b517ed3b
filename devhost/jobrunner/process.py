"""`JobRunnerProcess`: the job runner as a child process on a free loopback port (for the stack
and the tests), started and stopped as every devhost server is (devhost/processes.py)."""

from __future__ import annotations

from pathlib import Path

from devhost.processes import ROOT, ChildProcess, free_port, python_module

TRAINING_PYTHON = ROOT / ".venv-training" / "bin" / "python"
READY_TEXT = "job runner listening on"


class JobRunnerProcess(ChildProcess):
    """`python -m devhost.jobrunner` serving on `url`, training with the training venv's python;
    its jobs live in `work_dir`. Ready once its log says it listens."""

    def __init__(
        self,
        *,
        storage_connection: str,
        simulator_url: str,
        work_dir: Path,
        log_path: Path,
        python: Path = TRAINING_PYTHON,
        max_concurrent: int = 1,
        port: int | None = None,
    ) -> None:
        port = port or free_port()
        super().__init__(
            python_module(
                "devhost.jobrunner",
                "--port",
                str(port),
                "--storage-connection",
                storage_connection,
                "--simulator-url",
                simulator_url,
                "--python",
                str(python),
                "--work-dir",
                str(work_dir),
                "--max-concurrent",
                str(max_concurrent),
            ),
            port,
            log_path=log_path,
            ready_text=READY_TEXT,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

"""The job runner's records: what a submit asks for, where a job stands, kept on disk.

`JobRequest` is the body of `POST /jobs` (pydantic, extra fields refused):

    name            the job's name (the fine-tuning job id): 1-128 of [A-Za-z0-9._-], starting
                    with a letter or digit (it names a folder)
    tags            {str: str}
    train_blob      "<container>/<name>" of the chat JSONL in the storage account
    validation_blob "<container>/<name>" or null
    dataset_sha256  64 hex digits (the trainer checks the downloaded file against it)
    base_model      what `--base-model` takes (`tiny:<preset>` on a developer machine)
    parameters      {max_steps, learning_rate, lora_r, lora_alpha, batch_size, save_steps, seed}:
                    any subset, positive numbers (seed: any integer)
    outputs_prefix  "<container>/<path>" the output folder is uploaded under
                    (`models/<tenant>/<job_id>`); no `..`, no empty segment

`JobRecord` adds the status in Azure ML's words (Queued, Running, Completed, Failed, Canceled),
the error, metrics and lineage, and times (Unix seconds). `JobStore` keeps one record per job in
`<work_dir>/jobs/<name>/job.json` (written to a temporary file, then renamed), so a restarted
runner knows every job and runs again those it had not finished (the trainer resumes from its
checkpoints, as a pre-empted Azure ML node does).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

QUEUED: Final = "Queued"
RUNNING: Final = "Running"
COMPLETED: Final = "Completed"
FAILED: Final = "Failed"
CANCELED: Final = "Canceled"
FINISHED: Final = frozenset({COMPLETED, FAILED, CANCELED})

NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SEGMENT: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")
# The trainer's flags (training/train.py) the parameters map to, and their types.
PARAMETERS: Final[dict[str, type]] = {
    "max_steps": int,
    "learning_rate": float,
    "lora_r": int,
    "lora_alpha": int,
    "batch_size": int,
    "save_steps": int,
    "seed": int,
}


def _blob_path(value: str, what: str) -> str:
    parts = value.split("/")
    if len(parts) < 2 or not all(_SEGMENT.match(p) for p in parts):
        raise ValueError(f"{what} must be <container>/<name> of plain path segments")
    return value


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME.pattern)
    tags: dict[str, str] = Field(default_factory=dict)
    train_blob: str
    validation_blob: str | None = None
    dataset_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    base_model: str = Field(min_length=1, max_length=500)
    parameters: dict[str, int | float] = Field(default_factory=dict)
    outputs_prefix: str

    @field_validator("train_blob", "validation_blob", "outputs_prefix")
    @classmethod
    def _paths(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else _blob_path(value, str(info.field_name))

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, int | float]) -> dict[str, int | float]:
        for key, number in value.items():
            kind = PARAMETERS.get(key)
            if kind is None:
                raise ValueError(f"unknown parameter {key!r}; known: {', '.join(PARAMETERS)}")
            if kind is int and float(number) != int(number):
                raise ValueError(f"parameter {key} must be an integer")
            if key != "seed" and not number > 0:
                raise ValueError(f"parameter {key} must be positive")
        return value

    def trainer_flags(self) -> list[str]:
        flags: list[str] = []
        for key, number in self.parameters.items():
            value = int(number) if PARAMETERS[key] is int else float(number)
            flags += [f"--{key.replace('_', '-')}", str(value)]
        return flags


@dataclass
class JobRecord:
    request: dict[str, Any]
    status: str = QUEUED
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    deployments: list[str] = field(default_factory=list)
    bases: dict[str, str] = field(default_factory=dict)
    """deployment -> the simulator base it was deployed on (to deploy it again after a restart)."""

    @property
    def name(self) -> str:
        return str(self.request["name"])

    @property
    def parsed(self) -> JobRequest:
        return JobRequest.model_validate(self.request)

    @property
    def outputs_prefix(self) -> str:
        return str(self.request["outputs_prefix"]).rstrip("/")

    def outputs(self) -> dict[str, str]:
        prefix = self.outputs_prefix
        return {
            "adapter": f"{prefix}/adapter",
            "metrics": f"{prefix}/metrics.json",
            "lineage": f"{prefix}/lineage.json",
        }

    def view(self) -> dict[str, Any]:
        """What `GET /jobs/{name}` answers."""
        return {
            "name": self.name,
            "status": self.status,
            "error": self.error,
            "metrics": self.metrics,
            "lineage": self.lineage,
            "outputs": self.outputs() if self.status == COMPLETED else {},
            "tags": self.request.get("tags", {}),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "deployments": self.deployments,
        }


class JobStore:
    """One folder per job under `<work_dir>/jobs/`: job.json, inputs/, outputs/, train.log."""

    def __init__(self, work_dir: Path) -> None:
        self.root = work_dir / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, name: str) -> Path:
        if not NAME.match(name):
            raise ValueError(f"job name {name!r} is not valid")
        return self.root / name

    def save(self, record: JobRecord) -> None:
        folder = self.folder(record.name)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "job.json.tmp"
        tmp.write_text(json.dumps(asdict(record), indent=2, sort_keys=True))
        tmp.replace(folder / "job.json")

    def load_all(self) -> list[JobRecord]:
        records = []
        for path in sorted(self.root.glob("*/job.json")):
            try:
                records.append(JobRecord(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue  # a record cut short by a crash: the job is unknown again
        return records

"""Simulated Azure OpenAI files and fine-tuning jobs: the state behind `/openai/files` and
`/openai/fine_tuning/jobs` (routes in devhost/models/routes_finetuning.py), in the shapes that
`openai` reads (`FileObject`, `FileDeleted`, `FineTuningJob`, `FineTuningJobEvent`, cursor pages
`{"object": "list", "data": [...], "has_more": ...}`).

Files: `file-<32 hex>`, status `processed` at once (Azure imports an upload for a while; the
backend waits for `processed` all the same), kept in memory until deleted or the process ends.
Purposes as the SDK types them; a fine-tuning job's results are a `fine-tune-results` file
(`results.csv`: step, train_loss, train_mean_token_accuracy, valid_loss,
validation_mean_token_accuracy, full_valid_loss, full_valid_mean_token_accuracy).

Jobs: `ftjob-<32 hex>`. The status is derived from the simulator's clock (injectable, seconds)
since the job was created, with the config's `fine_tuning` phases:

    [0, validating_s)                              validating_files
    [validating_s, + queued_s)                     queued
    [validating_s + queued_s, + running_s)         running
    from validating_s + queued_s + running_s on    succeeded
    from validating_s on, when validation failed   failed
    from a cancel before the end                   cancelled

Validation is decided when the job is created and shown once `validating_s` has passed, as
`error` {code, message, param}: `invalid_file_format` (the training or validation file is not chat
JSONL in the fine-tuning format, devhost/models/training_data.py), `invalid_n_examples` (fewer
than `min_examples` training examples) or `invalid_model` (no simulator deployment serves the base
model: an `azure_openai`, not judge, not tuned deployment whose `model` is the job's `model` with
or without its version suffix, `-YYYY-MM-DD` or `-NNNN`; the first such deployment in the config is
the base). A request the API itself refuses (no such file, a bad suffix, seed or hyperparameter)
is a 400 at creation, as in Azure. On success `fine_tuned_model` is
`<model>.ft-<job hex>[-<suffix>]`, `trained_tokens` is n_epochs times the training examples'
estimated tokens (devhost/models/tokens.py), and `result_files` names the results file. Events
(`/events`) are the job's status messages and a few `metrics` events, newest first, paged with
`after` (an event id) and `limit`, as the API pages them. Times (`created_at`, `finished_at`,
event times) are Unix seconds: the wall time at creation plus the phase offsets.

Errors raise `ApiError` (status, code, message, param), which the routes send in Azure's shape.

Hand-written: no library simulates this API; the state is a few dicts and a timeline.
"""

from __future__ import annotations

import math
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from devhost.models.config import DeploymentConfig, FineTuningConfig
from devhost.models.tokens import estimate_prompt_tokens
from devhost.models.training_data import (
    Example,
    TrainingDataError,
    examples_by_topic,
    parse_chat_jsonl,
)

FILE_PURPOSES: Final = frozenset(
    {
        "assistants",
        "assistants_output",
        "batch",
        "batch_output",
        "fine-tune",
        "fine-tune-results",
        "vision",
        "user_data",
        "evals",
    }
)
FINE_TUNE: Final = "fine-tune"
FINE_TUNE_RESULTS: Final = "fine-tune-results"
ORGANIZATION: Final = "org-sim"
MAX_SUFFIX = 40  # Azure OpenAI: up to 40 characters, a-z A-Z 0-9 - _
_SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_VERSION = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")
MAX_SEED = 2**31 - 1
JOBS_PAGE_DEFAULT = 20
EVENTS_PAGE_DEFAULT = 20
FILES_PAGE_DEFAULT = 10_000
PAGE_MAX = 10_000
METRIC_EVENTS = 5
RESULT_ROWS = 100

Status = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: Final = frozenset({"succeeded", "failed", "cancelled"})


class ApiError(Exception):
    """A request the API refuses: sent as `{"error": {"code", "message", "param"}}`."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param


def _not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, "NotFound", f"{kind} {ident!r} was not found.")


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, "invalidPayload", message, param)


# ---- files ------------------------------------------------------------------------------------


@dataclass(slots=True)
class StoredFile:
    id: str
    data: bytes
    filename: str
    purpose: str
    created_at: int

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class FileStore:
    """Uploaded and generated files, in memory."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._files: dict[str, StoredFile] = {}

    def add(
        self,
        data: bytes,
        filename: str,
        purpose: str,
        *,
        file_id: str | None = None,
        created_at: int | None = None,
    ) -> StoredFile:
        if purpose not in FILE_PURPOSES:
            raise _bad(f"purpose must be one of {', '.join(sorted(FILE_PURPOSES))}", "purpose")
        stored = StoredFile(
            id=file_id or f"file-{uuid.uuid4().hex}",
            data=data,
            filename=filename,
            purpose=purpose,
            created_at=int(self._wall()) if created_at is None else created_at,
        )
        self._files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile:
        found = self._files.get(file_id)
        if found is None:
            raise _not_found("File", file_id)
        return found

    def find(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def delete(self, file_id: str) -> dict[str, Any]:
        self.get(file_id)
        del self._files[file_id]
        return {"id": file_id, "object": "file", "deleted": True}

    def page(
        self, *, purpose: str | None, after: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        files = [f for f in self._files.values() if purpose is None or f.purpose == purpose]
        # Insertion order is creation order; "desc" (the default) is newest first.
        if order != "asc":
            files.reverse()
        return cursor_page([f.describe() for f in files], after, limit)


def cursor_page(items: Sequence[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """The items after the one whose id is `after` (from the start without it), at most `limit`;
    an unknown `after` gives an empty page, as the API does for a cursor that is gone."""
    start = 0
    if after:
        start = next((i + 1 for i, item in enumerate(items) if item["id"] == after), len(items))
    data = list(items[start : start + limit])
    return {
        "object": "list",
        "data": data,
        "has_more": start + limit < len(items),
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def page_limit(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        limit = int(text)
    except ValueError:
        raise _bad("'limit' must be an integer", "limit") from None
    if not 1 <= limit <= PAGE_MAX:
        raise _bad(f"'limit' must be from 1 to {PAGE_MAX}", "limit")
    return limit


# ---- base models ------------------------------------------------------------------------------


def model_family(model: str) -> str:
    """A model id without its version suffix: gpt-4o-mini-2024-07-18 and gpt-4o-mini are one."""
    return _VERSION.sub("", model)


def base_for_model(model: str, deployments: Iterable[DeploymentConfig]) -> DeploymentConfig | None:
    """The first deployment that serves `model` and may be fine-tuned (see the module doc)."""
    family = model_family(model)
    for d in deployments:
        if d.kind != "azure_openai" or d.judge or d.tuned is not None:
            continue
        if d.model == model or model_family(d.model) == family:
            return d
    return None


# ---- jobs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hyperparameters:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float

    def describe(self) -> dict[str, Any]:
        return {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }


@dataclass(frozen=True, slots=True)
class _Event:
    offset_s: float
    level: Literal["info", "warn", "error"]
    message: str
    kind: Literal["message", "metrics"] = "message"
    data: Mapping[str, Any] | None = None


@dataclass(slots=True)
class FineTuningJob:
    id: str
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    hyperparameters: Hyperparameters
    created_clock: float
    created_at: int
    validating_s: float
    queued_s: float
    running_s: float
    error: dict[str, Any] | None
    base: DeploymentConfig | None
    examples_by_topic: dict[str, int] = field(default_factory=dict)
    n_examples: int = 0
    has_validation: bool = False
    trained_tokens: int = 0
    steps: int = 0
    cancelled_after_s: float | None = None
    results_written: bool = False

    @property
    def hex(self) -> str:
        return self.id.removeprefix("ftjob-")

    @property
    def fine_tuned_model(self) -> str:
        return f"{self.model}.ft-{self.hex}" + (f"-{self.suffix}" if self.suffix else "")

    @property
    def result_file(self) -> str:
        return f"file-{self.hex[::-1]}"

    @property
    def natural_end_s(self) -> float:
        """When the job ends without a cancel: failed after validation, or succeeded."""
        if self.error is not None:
            return self.validating_s
        return self.validating_s + self.queued_s + self.running_s

    def status(self, now: float) -> Status:
        elapsed = now - self.created_clock
        if self.cancelled_after_s is not None:
            return "cancelled"
        if elapsed >= self.natural_end_s:
            return "failed" if self.error is not None else "succeeded"
        if elapsed < self.validating_s:
            return "validating_files"
        if elapsed < self.validating_s + self.queued_s:
            return "queued"
        return "running"

    def end_s(self, now: float) -> float | None:
        """The offset at which the job finished, or None while it has not."""
        if self.cancelled_after_s is not None:
            return self.cancelled_after_s
        return self.natural_end_s if now - self.created_clock >= self.natural_end_s else None

    def loss(self, step: int) -> float:
        """A deterministic, falling training loss at `step` (1..steps)."""
        noise = random.Random(f"{self.id}:{self.seed}:{step}").uniform(-0.02, 0.02)
        return round(0.25 + 1.75 * math.exp(-3.0 * step / max(self.steps, 1)) + noise, 5)

    def describe(self, now: float) -> dict[str, Any]:
        status = self.status(now)
        end = self.end_s(now)
        succeeded = status == "succeeded"
        total = self.validating_s + self.queued_s + self.running_s
        return {
            "id": self.id,
            "object": "fine_tuning.job",
            "created_at": self.created_at,
            "finished_at": None if end is None else self.created_at + math.ceil(end),
            "estimated_finish": None if end is not None else self.created_at + math.ceil(total),
            "model": self.model,
            "fine_tuned_model": self.fine_tuned_model if succeeded else None,
            "organization_id": ORGANIZATION,
            "hyperparameters": self.hyperparameters.describe(),
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": self.hyperparameters.describe()},
            },
            "status": status,
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "result_files": [self.result_file] if succeeded else [],
            "trained_tokens": self.trained_tokens if succeeded else None,
            "error": self.error if status == "failed" else None,
            "seed": self.seed,
            "suffix": self.suffix,
            "integrations": None,
            "metadata": None,
        }

    def timeline(self) -> list[_Event]:
        """Every event the job will have without a cancel, in time order."""
        files = f"Validating training file: {self.training_file}"
        if self.validation_file:
            files += f" and validation file: {self.validation_file}"
        events = [
            _Event(0.0, "info", f"Created fine-tuning job: {self.id}"),
            _Event(0.0, "info", files),
        ]
        if self.error is not None:
            events.append(_Event(self.validating_s, "error", str(self.error["message"])))
            return events
        start = self.validating_s + self.queued_s
        events.append(_Event(self.validating_s, "info", "Files validated, moving job to queued"))
        events.append(_Event(start, "info", "Fine-tuning job started"))
        marks = min(METRIC_EVENTS, self.steps)
        for i in range(1, marks + 1):
            step = max(1, round(self.steps * i / marks))
            loss = self.loss(step)
            events.append(
                _Event(
                    start + self.running_s * i / (marks + 1),
                    "info",
                    f"Step {step}/{self.steps}: training loss={loss:.4f}",
                    "metrics",
                    {"step": step, "total_steps": self.steps, "train_loss": loss},
                )
            )
        end = self.natural_end_s
        events.append(_Event(end, "info", f"New fine-tuned model created: {self.fine_tuned_model}"))
        events.append(_Event(end, "info", "The job has successfully completed"))
        return events

    def events(self, now: float) -> list[dict[str, Any]]:
        """The events so far, newest first (at one time, the later-written first)."""
        elapsed = now - self.created_clock
        cut = self.cancelled_after_s
        timeline = self.timeline()
        shown: list[tuple[int, _Event]] = [
            (i, e)
            for i, e in enumerate(timeline)
            if e.offset_s <= elapsed and (cut is None or e.offset_s <= cut)
        ]
        if cut is not None:
            shown.append((len(timeline), _Event(cut, "info", "Job cancelled")))
        shown.sort(key=lambda pair: (pair[1].offset_s, pair[0]), reverse=True)
        return [
            {
                "id": f"ftevent-{self.hex[:24]}{index:04d}",
                "object": "fine_tuning.job.event",
                "created_at": self.created_at + int(event.offset_s),
                "level": event.level,
                "message": event.message,
                "type": event.kind,
                "data": dict(event.data) if event.data is not None else None,
            }
            for index, event in shown
        ]

    def results_csv(self) -> bytes:
        """The results file: one row per sampled step, the full validation loss on the last."""
        header = (
            "step,train_loss,train_mean_token_accuracy,valid_loss,"
            "validation_mean_token_accuracy,full_valid_loss,full_valid_mean_token_accuracy"
        )
        rows = [header]
        count = min(RESULT_ROWS, self.steps)
        steps = sorted({max(1, round(self.steps * i / count)) for i in range(1, count + 1)})
        for step in steps:
            loss = self.loss(step)
            accuracy = round(max(0.0, min(1.0, 1.0 - loss / 2.5)), 5)
            cells = [str(step), f"{loss:.5f}", f"{accuracy:.5f}", "", "", "", ""]
            if self.has_validation:
                valid = round(loss + 0.05, 5)
                cells[3:5] = [f"{valid:.5f}", f"{max(0.0, accuracy - 0.02):.5f}"]
                if step == steps[-1]:
                    cells[5:7] = [f"{valid + 0.01:.5f}", f"{max(0.0, accuracy - 0.03):.5f}"]
            rows.append(",".join(cells))
        return ("\n".join(rows) + "\n").encode()


def _hyperparameters(raw: object, n_examples: int) -> Hyperparameters:
    """The job's hyperparameters with "auto" (or absent) resolved; 400 for a bad value."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise _bad("'hyperparameters' must be an object", "hyperparameters")
    unknown = set(raw) - {"n_epochs", "batch_size", "learning_rate_multiplier"}
    if unknown:
        raise _bad(f"unknown hyperparameter(s): {', '.join(sorted(unknown))}", "hyperparameters")
    epochs = _int_or_auto(raw.get("n_epochs"), "n_epochs", 1, 50, 3)
    batch_auto = max(1, min(256, round(0.002 * n_examples)))
    batch = _int_or_auto(raw.get("batch_size"), "batch_size", 1, 256, batch_auto)
    lrm = raw.get("learning_rate_multiplier")
    if lrm is None or lrm == "auto":
        rate = 1.0
    elif isinstance(lrm, int | float) and not isinstance(lrm, bool) and 0 < lrm <= 10:
        rate = float(lrm)
    else:
        raise _bad(
            "'learning_rate_multiplier' must be 'auto' or a number above 0, at most 10",
            "hyperparameters",
        )
    return Hyperparameters(epochs, batch, rate)


def _int_or_auto(value: object, name: str, low: int, high: int, auto: int) -> int:
    if value is None or value == "auto":
        return auto
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    raise _bad(f"'{name}' must be 'auto' or an integer from {low} to {high}", "hyperparameters")


class FineTuning:
    """The files and fine-tuning jobs of one simulator. `clock` (seconds, monotonic) drives the
    jobs' phases; `wall` (Unix seconds) only stamps them. `bases` lists the deployments a base
    model is looked up in when a job is created."""

    def __init__(
        self,
        config: FineTuningConfig,
        bases: Callable[[], Iterable[DeploymentConfig]],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._bases = bases
        self._clock = clock
        self._wall = wall
        self.files = FileStore(wall)
        self._jobs: dict[str, FineTuningJob] = {}

    def now(self) -> float:
        return self._clock()

    # ---- jobs ----------------------------------------------------------------------------

    def create_job(self, body: Mapping[str, Any]) -> FineTuningJob:
        """A new job from a create request; ApiError 400 for a request the API refuses."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _bad("'model' is required", "model")
        training = self._input_file(body.get("training_file"), "training_file", required=True)
        assert training is not None
        validation = self._input_file(body.get("validation_file"), "validation_file")
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or not _SUFFIX.match(suffix)):
            raise _bad(
                f"'suffix' must be 1 to {MAX_SUFFIX} characters: letters, digits, '-' or '_'",
                "suffix",
            )
        seed = body.get("seed")
        if seed is not None and (
            not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED
        ):
            raise _bad(f"'seed' must be an integer from 0 to {MAX_SEED}", "seed")
        raw_hyper = body.get("hyperparameters")
        method = body.get("method")
        if raw_hyper is None and isinstance(method, Mapping):
            supervised = method.get("supervised")
            if isinstance(supervised, Mapping):
                raw_hyper = supervised.get("hyperparameters")

        job_hex = uuid.uuid4().hex
        examples, error = self._validate(training, validation, model)
        hyper = _hyperparameters(raw_hyper, len(examples))
        config = self.config
        job = FineTuningJob(
            id=f"ftjob-{job_hex}",
            model=model,
            training_file=training.id,
            validation_file=validation.id if validation is not None else None,
            suffix=suffix,
            seed=seed if seed is not None else int(job_hex[:8], 16) % MAX_SEED,
            hyperparameters=hyper,
            created_clock=self._clock(),
            created_at=int(self._wall()),
            validating_s=config.validating_s,
            queued_s=config.queued_s,
            running_s=config.running_s,
            error=error,
            base=base_for_model(model, self._bases()) if error is None else None,
            has_validation=validation is not None,
        )
        if error is None:
            job.examples_by_topic = examples_by_topic(examples)
            job.n_examples = len(examples)
            job.steps = math.ceil(len(examples) / hyper.batch_size) * hyper.n_epochs
            job.trained_tokens = hyper.n_epochs * sum(estimate_prompt_tokens(e) for e in examples)
        self._jobs[job.id] = job
        return job

    def _input_file(
        self, value: object, param: str, *, required: bool = False
    ) -> StoredFile | None:
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise _bad(f"'{param}' is required", param)
        found = self.files.find(value)
        if found is None:
            raise _bad(f"The file {value!r} named by '{param}' does not exist.", param)
        if found.purpose != FINE_TUNE:
            raise _bad(
                f"The file {value!r} has purpose {found.purpose!r}; fine-tuning needs "
                f"{FINE_TUNE!r}.",
                param,
            )
        return found

    def _validate(
        self, training: StoredFile, validation: StoredFile | None, model: str
    ) -> tuple[list[Example], dict[str, Any] | None]:
        """The training examples and the error the job will fail with (None: it will not)."""
        try:
            examples = parse_chat_jsonl(training.data)
        except TrainingDataError as err:
            return [], _job_error(err.code, err.message, "training_file")
        minimum = self.config.min_examples
        if len(examples) < minimum:
            return [], _job_error(
                "invalid_n_examples",
                f"Training file has {len(examples)} example(s), but must have at least "
                f"{minimum} examples.",
                "training_file",
            )
        if validation is not None:
            try:
                parse_chat_jsonl(validation.data)
            except TrainingDataError as err:
                return [], _job_error(err.code, err.message, "validation_file")
        if base_for_model(model, self._bases()) is None:
            return [], _job_error(
                "invalid_model",
                f"The base model {model!r} is not available for fine-tuning on this resource.",
                "model",
            )
        return examples, None

    def job(self, job_id: str) -> FineTuningJob:
        found = self._jobs.get(job_id)
        if found is None:
            raise _not_found("Fine-tuning job", job_id)
        self._write_results(found)
        return found

    def jobs_page(self, after: str | None, limit: int) -> dict[str, Any]:
        now = self._clock()
        jobs = list(reversed(self._jobs.values()))  # newest first
        for job in jobs:
            self._write_results(job)
        return cursor_page([j.describe(now) for j in jobs], after, limit)

    def events_page(self, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
        return cursor_page(self.job(job_id).events(self._clock()), after, limit)

    def cancel(self, job_id: str) -> FineTuningJob:
        job = self.job(job_id)
        now = self._clock()
        status = job.status(now)
        if status in ("succeeded", "failed"):
            raise ApiError(
                400,
                "invalid_request_error",
                f"Job {job_id} has already completed ({status}) and cannot be cancelled.",
            )
        if status != "cancelled":
            job.cancelled_after_s = now - job.created_clock
        return job

    def succeeded_model(self, fine_tuned_model: str) -> FineTuningJob | None:
        """The job that produced this fine-tuned model, once it has succeeded."""
        now = self._clock()
        for job in self._jobs.values():
            if job.fine_tuned_model == fine_tuned_model and job.status(now) == "succeeded":
                return job
        return None

    # ---- files ---------------------------------------------------------------------------

    def file(self, file_id: str) -> StoredFile:
        self.write_results()
        return self.files.get(file_id)

    def write_results(self) -> None:
        """Write the results file of every job that has succeeded since the last look."""
        for job in self._jobs.values():
            self._write_results(job)

    def _write_results(self, job: FineTuningJob) -> None:
        if job.results_written or job.status(self._clock()) != "succeeded":
            return
        end = job.end_s(self._clock()) or 0.0
        self.files.add(
            job.results_csv(),
            "results.csv",
            FINE_TUNE_RESULTS,
            file_id=job.result_file,
            created_at=job.created_at + math.ceil(end),
        )
        job.results_written = True


def _job_error(code: str, message: str, param: str | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param}

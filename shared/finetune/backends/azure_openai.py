"""Azure OpenAI fine-tuning as a `TrainingBackend`: files, fine-tuning jobs, their results.

    backend = AzureOpenAIFineTuning.connect(endpoint, store, credential=credential)
    external_id = await backend.submit(spec)        # ftjob-...
    status = await backend.status(external_id)      # BackendStatus
    trained = await backend.outputs(external_id)    # TrainedModel(model=<fine_tuned_model>)

Calls the data plane with the `openai` SDK's `AsyncAzureOpenAI` (`{endpoint}/openai/files`,
`/openai/fine_tuning/jobs`; api-version 2024-10-21 by default, the GA version with fine-tuning).
In Azure the client authenticates with the managed identity (a bearer-token provider for the
`https://cognitiveservices.azure.com/.default` scope); locally with the simulator's key.

Role: the caller's identity needs **Cognitive Services OpenAI Contributor**
(a001fd3d-188f-4b5d-821b-7da978bf7442) on the Azure OpenAI account: its data action
`Microsoft.CognitiveServices/accounts/OpenAI/*` covers uploading files and creating, reading and
cancelling fine-tuning jobs; Cognitive Services OpenAI User cannot upload datasets. Source:
Microsoft Learn, "Role-based access control for Azure OpenAI" (the role's list: "Create custom
fine-tuned models", "Upload datasets for fine-tuning"), and the built-in role definition.

submit(spec):
1. reads the job's link blob `jobs/<tenant>/<job_id>.aoai.json` (container `jobs`): once a job
   exists it names it, so a repeated submit returns the first job. Azure OpenAI jobs have no
   `metadata` in every API version, so the link, not the job, carries our job id.
2. Without a link: reads `spec.train_blob` (and `spec.validation_blob`) through the `BlobStore`,
   checks the training bytes against `spec.dataset_sha256`, uploads them with
   `files.create(purpose="fine-tune")` as `<job_id>-<dataset_sha256>.train.jsonl` (and
   `<job_id>.validation.jsonl`), and writes the link with the file ids (`create`, If-None-Match:
   a concurrent submit that wrote first wins; the loser deletes its files and goes on with the
   winner's).
3. With files but no job in the link (a submit that stopped half-way): a job already created on
   that training file (found among the newest `scan_limit` jobs: file ids are unique per upload)
   is the job; otherwise the files are awaited until `processed` (Azure imports an upload before
   a job may use it; `file_wait_s` at most, then a retryable error) and
   `fine_tuning.jobs.create(model=spec.base_model, training_file, validation_file, suffix, seed,
   hyperparameters)` is called.
4. The job id is written to the link (If-Match); a concurrent submit that linked another job
   first wins, and this job is cancelled.
- `suffix`: `spec.suffix`, characters other than letters, digits, `-`, `_` made `-`, at most 40
  (Azure's limit); `seed`: `spec.hyperparameters["seed"]`, else one derived from the job id, so a
  retried job trains the same; `hyperparameters`: `n_epochs`, `batch_size`,
  `learning_rate_multiplier` from `spec.hyperparameters` (integers, numbers or "auto"); other keys
  (LoRA settings meant for other backends) are not sent.

status(): `validating_files`, `queued`, `pending`, `created`, `notRunning`, `paused` -> QUEUED;
`running` -> RUNNING; `succeeded`, `failed` (detail: the job's error message and code),
`cancelled` as they are; an unknown word -> QUEUED (still polled). Metrics: `trained_tokens` once
known.
cancel(): a finished job is left as it is; otherwise `jobs.cancel`.
outputs(): for a succeeded job, TrainedModel(model=`fine_tuned_model`, metrics from the last rows
of its results file: `train_loss`, `train_mean_token_accuracy`, `validation_loss`
(`full_valid_loss` where given, else `valid_loss`), `trained_tokens`; lineage: `base_model`,
`backend_job_id`, `training_file`, `seed`, the hyperparameters, and `job_id` and
`dataset_sha256` read back from the training file's name).

Errors: every call is retried with `tenacity` on 408, 409, 429, 5xx, timeouts and connection
errors (creating a job only on 429: after a lost answer the job may exist, and the next submit
finds it by its training file rather than make a second one), `attempts` tries, waits
honouring `retry-after-ms` / `retry-after` (read by
`shared.inference.model_errors.retry_after_seconds`), capped at `max_wait_s`, otherwise full-jitter
exponential backoff; the SDK's own retries are off (`max_retries=0`). What still fails is a
`BackendError`, `retryable` for those transient causes and for 401/403 (a role assignment takes
minutes to propagate), not for a request the service refuses (400, 404, 422) or training data
that is missing or changed.

Hand-written: the retry is tenacity's; the rest is the port's bookkeeping over the SDK.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import openai
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob
from pydantic import BaseModel, ConfigDict, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from shared.finetune.backends.port import (
    BackendError,
    BackendState,
    BackendStatus,
    TrainedModel,
    TrainingSpec,
)
from shared.inference.model_errors import retry_after_seconds
from shared.security.paths import tenant_path
from shared.storage import names
from shared.storage.blob_store import BlobStore, ConditionFailed

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_API_VERSION: Final = "2024-10-21"
COGNITIVE_SERVICES_SCOPE: Final = "https://cognitiveservices.azure.com/.default"
FINE_TUNE_PURPOSE: Final = "fine-tune"
MAX_SUFFIX: Final = 40
MAX_SEED: Final = 2**31 - 1
HYPERPARAMETERS: Final = ("n_epochs", "batch_size", "learning_rate_multiplier")

_STATES: Final[Mapping[str, BackendState]] = {
    "validating_files": BackendState.QUEUED,
    "queued": BackendState.QUEUED,
    "pending": BackendState.QUEUED,
    "created": BackendState.QUEUED,
    "notrunning": BackendState.QUEUED,
    "paused": BackendState.QUEUED,
    "running": BackendState.RUNNING,
    "succeeded": BackendState.SUCCEEDED,
    "failed": BackendState.FAILED,
    "cancelled": BackendState.CANCELLED,
    "canceled": BackendState.CANCELLED,
}
_FILE_READY: Final = "processed"
_FILE_BROKEN: Final = frozenset({"error", "failed", "deleting", "deleted"})
_TRANSIENT_STATUS: Final = frozenset({408, 409, 429})
_AUTH_STATUS: Final = frozenset({401, 403})
_TRAIN_NAME: Final = re.compile(r"^(?P<job>.+)-(?P<sha>[0-9a-f]{64})\.train\.jsonl$")
_SUFFIX_CHARS: Final = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class RetrySettings:
    """How one service call is retried: `attempts` tries in all, within `deadline_s`; a wait is
    the service's retry hint or full-jitter backoff from `base_s`, at most `max_wait_s`."""

    attempts: int = 4
    deadline_s: float = 120.0
    base_s: float = 0.5
    max_wait_s: float = 30.0

    def retrying(
        self,
        *,
        retry_on: Callable[[BaseException], bool],
        hint: Callable[[BaseException | None], float | None],
        sleep: Callable[[float], Awaitable[None]],
    ) -> AsyncRetrying:
        """tenacity's loop for one call: these bounds, waits from `hint` (the failure's
        retry-after) or else full-jitter backoff, re-raising the last failure."""
        backoff = wait_random_exponential(multiplier=self.base_s, max=self.max_wait_s)

        def wait(state: RetryCallState) -> float:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None and outcome.failed else None
            seconds = hint(error)
            return float(backoff(state)) if seconds is None else min(seconds, self.max_wait_s)

        return AsyncRetrying(
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.deadline_s),
            wait=wait,
            retry=retry_if_exception(retry_on),
            sleep=sleep,
            reraise=True,
        )


DEFAULT_RETRY: Final = RetrySettings()


class JobLink(BaseModel):
    """The link blob `jobs/<tenant>/<job_id>.aoai.json`: our job and its Azure OpenAI job."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    tenant_id: str
    dataset_sha256: str
    training_file: str
    validation_file: str | None = None
    fine_tuning_job: str | None = None


def link_blob_name(tenant_id: str, job_id: str) -> str:
    return tenant_path(tenant_id, job_id, suffix=".aoai.json")


def is_transient(error: BaseException) -> bool:
    """Worth another try: a timeout, no connection, or HTTP 408, 409, 429 or 5xx."""
    if isinstance(error, openai.APIConnectionError):  # APITimeoutError is one too
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in _TRANSIENT_STATUS or error.status_code >= 500
    return False


def _retry_hint(error: BaseException | None) -> float | None:
    if isinstance(error, openai.APIStatusError):
        return retry_after_seconds(dict(error.response.headers))
    return None


def backend_error(what: str, error: openai.APIError) -> BackendError:
    """The port's error for an SDK error; the service's words, never the training data."""
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        body = error.body if isinstance(error.body, Mapping) else {}
        code = body.get("code")
        message = body.get("message") or error.message
        retryable = is_transient(error) or status in _AUTH_STATUS
        suffix = f" ({code})" if isinstance(code, str) and code else ""
        return BackendError(
            f"Azure OpenAI {what}: HTTP {status}{suffix}: {message}", retryable=retryable
        )
    if isinstance(error, openai.APITimeoutError):
        return BackendError(f"Azure OpenAI {what}: timed out", retryable=True)
    if isinstance(error, openai.APIConnectionError):
        return BackendError(f"Azure OpenAI {what}: could not connect", retryable=True)
    return BackendError(f"Azure OpenAI {what}: {type(error).__name__}", retryable=True)


def suffix_for(spec: TrainingSpec) -> str | None:
    cleaned = _SUFFIX_CHARS.sub("-", spec.suffix)[:MAX_SUFFIX].strip("-")
    return cleaned or None


def seed_for(spec: TrainingSpec) -> int:
    given = spec.hyperparameters.get("seed")
    if isinstance(given, int) and 0 <= given <= MAX_SEED:
        return given
    return int(hashlib.sha256(spec.job_id.encode()).hexdigest()[:8], 16) % MAX_SEED


def hyperparameters_for(spec: TrainingSpec) -> dict[str, Any]:
    """The Azure OpenAI hyperparameters among the spec's (see the module docstring)."""
    out: dict[str, Any] = {}
    for key in HYPERPARAMETERS:
        value = spec.hyperparameters.get(key)
        if value is None:
            continue
        if value == "auto":
            out[key] = "auto"
        elif key == "learning_rate_multiplier":
            out[key] = float(value)
        elif isinstance(value, int | float) and float(value).is_integer():
            out[key] = int(value)
        else:
            raise BackendError(f"hyperparameter {key}={value!r} is not a whole number or 'auto'")
    return out


def _split_blob(path: str) -> tuple[str, str]:
    container, _, name = path.partition("/")
    if not container or not name:
        raise BackendError(f"blob path {path!r} is not <container>/<name>")
    return container, name


def _state(status: str) -> BackendState:
    return _STATES.get(status.lower(), BackendState.QUEUED)


def read_results(csv_text: str) -> dict[str, float]:
    """train_loss, train_mean_token_accuracy, validation_loss from a results file: the last row
    that has each (full_valid_loss, where a row has it, before valid_loss)."""
    metrics: dict[str, float] = {}
    columns = {
        "train_loss": "train_loss",
        "train_mean_token_accuracy": "train_mean_token_accuracy",
        "valid_loss": "validation_loss",
    }
    full_valid: float | None = None
    for row in csv.DictReader(io.StringIO(csv_text)):
        for column, metric in columns.items():
            value = _number(row.get(column))
            if value is not None:
                metrics[metric] = value
        full = _number(row.get("full_valid_loss"))
        if full is not None:
            full_valid = full
    if full_valid is not None:
        metrics["validation_loss"] = full_valid
    return metrics


def _number(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


class AzureOpenAIFineTuning:
    """The port over `openai.AsyncAzureOpenAI` (see the module docstring)."""

    name = "azure_openai"

    def __init__(
        self,
        client: openai.AsyncAzureOpenAI,
        store: BlobStore,
        *,
        retry: RetrySettings = DEFAULT_RETRY,
        file_wait_s: float = 300.0,
        file_poll_s: float = 2.0,
        scan_limit: int = 500,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        links_container: str = names.JOBS_CONTAINER,
    ) -> None:
        if client.max_retries != 0:
            raise ValueError("give a client with max_retries=0: this backend does the retrying")
        self._client = client
        self._store = store
        self._retry = retry
        self._file_wait_s = file_wait_s
        self._file_poll_s = file_poll_s
        self._scan_limit = scan_limit
        self._sleep = sleep
        self._clock = clock
        self._links = links_container

    @classmethod
    def connect(
        cls,
        endpoint: str,
        store: BlobStore,
        *,
        credential: AsyncTokenCredential | None = None,
        api_key: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        timeout_s: float = 60.0,
        http_client: Any = None,
        **options: Any,
    ) -> AzureOpenAIFineTuning:
        """A backend with its own client: the managed identity's token (Azure) or `api_key`
        (the simulator); the SDK's retries off. `options` go to the constructor."""
        if (credential is None) == (api_key is None):
            raise ValueError("give exactly one of credential (Azure) or api_key (local)")
        auth: dict[str, Any]
        if credential is not None:
            from azure.identity.aio import get_bearer_token_provider  # noqa: PLC0415

            provider = get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE)
            auth = {"azure_ad_token_provider": provider}
        else:
            auth = {"api_key": api_key}
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=endpoint,
            api_version=api_version,
            max_retries=0,
            timeout=timeout_s,
            http_client=http_client,
            **auth,
        )
        return cls(client, store, **options)

    async def close(self) -> None:
        await self._client.close()

    # ---- the port ------------------------------------------------------------------------

    async def submit(self, spec: TrainingSpec) -> str:
        name = link_blob_name(spec.tenant_id, spec.job_id)
        link, etag = await self._read_link(name)
        if link is not None and link.fine_tuning_job:
            return link.fine_tuning_job
        if link is None:
            link, etag = await self._upload(spec, name)
            if link.fine_tuning_job:
                return link.fine_tuning_job
        job_id = await self._job_on(link.training_file)
        if job_id is None:
            await self._await_processed([link.training_file, link.validation_file])
            # Retried in place only on 429 (refused, so not created); after a timeout or a 5xx
            # the job may exist: the next submit finds it by its training file instead.
            job = await self._call(
                "create a fine-tuning job",
                lambda: self._create(spec, link),
                retry_on=lambda e: isinstance(e, openai.RateLimitError),
            )
            job_id = job.id
            log.info(
                "fine-tuning job %s of %s submitted to Azure OpenAI as %s",
                spec.job_id,
                spec.tenant_id,
                job_id,
            )
        linked = link.model_copy(update={"fine_tuning_job": job_id})
        try:
            await self._store.put(
                self._links, name, linked.model_dump_json().encode(), if_match=etag
            )
        except AzureError as exc:
            raise BackendError(
                f"cannot write {name}: {type(exc).__name__}", retryable=True
            ) from exc
        except ConditionFailed:
            winner, _ = await self._read_link(name)
            if winner is not None and winner.fine_tuning_job:
                if winner.fine_tuning_job != job_id:  # two jobs: keep the linked one
                    await self._cancel_quietly(job_id)
                return winner.fine_tuning_job
            raise BackendError(
                f"the link {name} changed while submitting", retryable=True
            ) from None
        return job_id

    async def status(self, external_id: str) -> BackendStatus:
        job = await self._job(external_id)
        state = _state(job.status)
        detail: str = job.status
        if state is BackendState.FAILED and job.error is not None:
            code = f" ({job.error.code})" if job.error.code else ""
            detail = f"{job.error.message}{code}"
        metrics = {"trained_tokens": float(job.trained_tokens)} if job.trained_tokens else {}
        return BackendStatus(state=state, detail=detail, metrics=metrics)

    async def cancel(self, external_id: str) -> None:
        job = await self._job(external_id)
        if _state(job.status).finished:
            return
        try:
            await self._call("cancel a job", lambda: self._client.fine_tuning.jobs.cancel(job.id))
        except BackendError:
            again = await self._job(external_id)
            if _state(again.status).finished:
                return  # it finished (or was cancelled) meanwhile
            raise

    async def outputs(self, external_id: str) -> TrainedModel:
        job = await self._job(external_id)
        if _state(job.status) is not BackendState.SUCCEEDED:
            raise BackendError(f"job {external_id} has not succeeded (it is {job.status})")
        if not job.fine_tuned_model:
            raise BackendError(f"job {external_id} succeeded without a model", retryable=True)
        metrics: dict[str, float] = {}
        if job.result_files:
            metrics.update(await self._results(job.result_files[0]))
        if job.trained_tokens:
            metrics["trained_tokens"] = float(job.trained_tokens)
        lineage = {
            "base_model": job.model,
            "backend": self.name,
            "backend_job_id": job.id,
            "training_file": job.training_file,
            "seed": str(job.seed),
        }
        hyper = job.hyperparameters
        for key in HYPERPARAMETERS:
            value = getattr(hyper, key, None)
            if value is not None:
                lineage[key] = str(value)
        lineage.update(await self._training_origin(job.training_file))
        return TrainedModel(model=job.fine_tuned_model, metrics=metrics, lineage=lineage)

    # ---- submit's steps ------------------------------------------------------------------

    async def _read_link(self, name: str) -> tuple[JobLink | None, str | None]:
        try:
            blob = await self._store.read(self._links, name)
        except AzureError as exc:
            raise BackendError(f"cannot read {name}: {type(exc).__name__}", retryable=True) from exc
        if blob is None:
            return None, None
        try:
            return JobLink.model_validate_json(blob.data), blob.etag
        except ValidationError as exc:
            raise BackendError(f"the link {name} is unreadable: {exc}") from None

    async def _read_blob(self, path: str) -> bytes:
        container, name = _split_blob(path)
        try:
            blob = await self._store.read(container, name)
        except AzureError as exc:
            raise BackendError(f"cannot read {path}: {type(exc).__name__}", retryable=True) from exc
        if blob is None:
            raise BackendError(f"the training data {path} does not exist")
        return blob.data

    async def _upload(self, spec: TrainingSpec, name: str) -> tuple[JobLink, str | None]:
        training = await self._read_blob(spec.train_blob)
        if spec.dataset_sha256 and hashlib.sha256(training).hexdigest() != spec.dataset_sha256:
            raise BackendError(
                f"{spec.train_blob} does not match the job's dataset_sha256: it changed"
            )
        validation = await self._read_blob(spec.validation_blob) if spec.validation_blob else None
        train_name = f"{spec.job_id}-{spec.dataset_sha256}.train.jsonl"
        train_file = await self._upload_file(train_name, training)
        valid_file = None
        if validation is not None:
            valid_file = await self._upload_file(f"{spec.job_id}.validation.jsonl", validation)
        link = JobLink(
            job_id=spec.job_id,
            tenant_id=spec.tenant_id,
            dataset_sha256=spec.dataset_sha256,
            training_file=train_file.id,
            validation_file=valid_file.id if valid_file is not None else None,
        )
        try:
            created = await self._store.create(self._links, name, link.model_dump_json().encode())
        except AzureError as exc:
            raise BackendError(
                f"cannot write {name}: {type(exc).__name__}", retryable=True
            ) from exc
        if created:
            # Read back for the ETag (a racing submit may have linked its job to it already).
            written, etag = await self._read_link(name)
            return written or link, etag
        # Another submit of this job linked its files first: use those, drop ours.
        for uploaded in (train_file, valid_file):
            if uploaded is not None:
                await self._delete_quietly(uploaded.id)
        winner, etag = await self._read_link(name)
        if winner is None:
            raise BackendError(f"the link {name} vanished while submitting", retryable=True)
        return winner, etag

    async def _upload_file(self, filename: str, data: bytes) -> FileObject:
        return await self._call(
            "upload a training file",
            lambda: self._client.files.create(file=(filename, data), purpose=FINE_TUNE_PURPOSE),
        )

    async def _job_on(self, training_file: str) -> str | None:
        """A job already created on this training file (a submit that stopped before linking)."""

        async def scan() -> str | None:
            seen = 0
            async for job in self._client.fine_tuning.jobs.list(limit=100):
                if job.training_file == training_file:
                    return job.id
                seen += 1
                if seen >= self._scan_limit:
                    break
            return None

        return await self._call("list fine-tuning jobs", scan)

    async def _await_processed(self, file_ids: list[str | None]) -> None:
        deadline = self._clock() + self._file_wait_s
        for file_id in [f for f in file_ids if f]:
            await self._await_file(file_id, deadline)

    async def _await_file(self, file_id: str, deadline: float) -> None:
        while True:
            found = await self._call("read a file", lambda: self._client.files.retrieve(file_id))
            status = str(found.status or "").lower()
            if status == _FILE_READY:
                return
            if status in _FILE_BROKEN:
                details = found.status_details or "no details"
                raise BackendError(f"file {file_id} is {status}: {details}")
            if self._clock() >= deadline:
                raise BackendError(
                    f"file {file_id} is still {status or 'importing'} after {self._file_wait_s:g}s",
                    retryable=True,
                )
            await self._sleep(self._file_poll_s)

    async def _create(self, spec: TrainingSpec, link: JobLink) -> FineTuningJob:
        extra: dict[str, Any] = {}
        hyper = hyperparameters_for(spec)
        if hyper:
            extra["hyperparameters"] = hyper
        suffix = suffix_for(spec)
        if suffix:
            extra["suffix"] = suffix
        if link.validation_file:
            extra["validation_file"] = link.validation_file
        return await self._client.fine_tuning.jobs.create(
            model=spec.base_model,
            training_file=link.training_file,
            seed=seed_for(spec),
            **extra,
        )

    # ---- reading -------------------------------------------------------------------------

    async def _job(self, external_id: str) -> FineTuningJob:
        return await self._call(
            f"read job {external_id}",
            lambda: self._client.fine_tuning.jobs.retrieve(external_id),
        )

    async def _results(self, file_id: str) -> dict[str, float]:
        try:
            content = await self._call(
                "read the results file", lambda: self._client.files.content(file_id)
            )
        except BackendError as exc:
            if exc.retryable:
                raise
            log.warning("results file %s unreadable: %s", file_id, exc)
            return {}
        return read_results(content.content.decode("utf-8", "replace"))

    async def _training_origin(self, training_file: str) -> dict[str, str]:
        """Our job id and dataset sha256, from the training file's name (see submit)."""
        try:
            found = await self._call(
                "read the training file", lambda: self._client.files.retrieve(training_file)
            )
        except BackendError as exc:
            if exc.retryable:
                raise
            return {}
        match = _TRAIN_NAME.match(found.filename or "")
        if match is None:
            return {}
        return {"job_id": match["job"], "dataset_sha256": match["sha"]}

    async def _cancel_quietly(self, job_id: str) -> None:
        try:
            await self.cancel(job_id)
        except BackendError as exc:
            log.warning("could not cancel duplicate job %s: %s", job_id, exc)

    async def _delete_quietly(self, file_id: str) -> None:
        try:
            await self._call("delete a file", lambda: self._client.files.delete(file_id))
        except BackendError as exc:
            log.warning("could not delete unused file %s: %s", file_id, exc)

    # ---- retry ---------------------------------------------------------------------------

    async def _call(
        self,
        what: str,
        operation: Callable[[], Awaitable[T]],
        *,
        retry_on: Callable[[BaseException], bool] = is_transient,
    ) -> T:
        """One service call, retried on transient failures (`retry_on`); BackendError when it
        gives up."""
        retrying = self._retry.retrying(retry_on=retry_on, hint=_retry_hint, sleep=self._sleep)
        try:
            async for attempt in retrying:
                with attempt:
                    return await operation()
        except openai.APIError as exc:
            raise backend_error(what, exc) from exc
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover

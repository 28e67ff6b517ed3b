"""Running fine-tuning jobs as Azure ML would: inputs in, `python -m training.train`, outputs up.

For each job (`Runner.submit`), in `<work_dir>/jobs/<name>/`:
1. `inputs/`: the train (and validation) blob downloaded from the storage account (Azurite),
   as Azure ML mounts a `uri_file` input;
2. `outputs/adapter/`: the output folder (Azure ML's `adapter` output), given to the trainer as
   `--output-dir`, with its checkpoints inside (a runner restarted mid-job runs the job again and
   the trainer resumes from them, as on a pre-empted node); `train.log`: the trainer's output;
3. on exit 0: every file of the output folder uploaded to `<outputs_prefix>/<relative path>`
   (`models/<tenant>/<job>/adapter/...`, `.../metrics.json`, `.../lineage.json`), then
   Completed with the metrics; exit 2: Failed, "bad input: <the trainer's reason>"; other exits:
   Failed with error.json's message (or the log's last line).

At most `max_concurrent` jobs train at once (default 1, as on a one-node cluster); the others
wait as Queued. `cancel` marks a queued job Canceled or terminates the trainer (SIGTERM, SIGKILL
after `terminate_grace_s`). `deploy` makes the model simulator serve a completed job's candidate:
`PUT {simulator_url}/admin/tuned/{deployment}` with {"base", "model": "<prefix>/adapter",
"training_jsonl": the training file's text}.

Errors: `RunnerError(status, message)` for what the HTTP layer answers with that status
(404 unknown job, 409 not completed, 400 / 502 from the simulator).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Final

import aiohttp
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient

from devhost.jobrunner.jobs import (
    CANCELED,
    COMPLETED,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    JobRecord,
    JobRequest,
    JobStore,
)
from devhost.processes import ROOT
from shared.finetune.backends.run_outputs import flat_lineage, flat_metrics

log = logging.getLogger("devhost.jobrunner")

NOT_UPLOADED: Final = frozenset({"progress.json", "error.json"})
DEPLOY_TIMEOUT_S: Final = 30.0


class RunnerError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _JobFailed(Exception):
    pass


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][-500:] if lines else ""


class Runner:
    def __init__(
        self,
        *,
        work_dir: Path,
        python: Path,
        storage_connection: str,
        simulator_url: str,
        max_concurrent: int = 1,
        terminate_grace_s: float = 5.0,
    ) -> None:
        self.store = JobStore(work_dir)
        self.python = python
        self.storage_connection = storage_connection
        self.simulator_url = simulator_url.rstrip("/")
        self.terminate_grace_s = terminate_grace_s
        self.jobs: dict[str, JobRecord] = {}
        self._max_concurrent = max_concurrent
        self._slots: asyncio.Semaphore | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._closing = False

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the jobs on disk; run again those that had not finished."""
        self._slots = asyncio.Semaphore(self._max_concurrent)
        for record in self.store.load_all():
            self.jobs[record.name] = record
            if record.status == COMPLETED:
                await self._redeploy(record)
            if record.status not in FINISHED:
                log.info("job %s was %s: running it again", record.name, record.status)
                record.status = QUEUED
                self.store.save(record)
                self._schedule(record)

    async def close(self) -> None:
        """Stop every trainer; unfinished jobs stay so on disk and run again at the next start."""
        self._closing = True
        procs = list(self._procs.values())
        await asyncio.gather(*(self._terminate(proc) for proc in procs))
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- requests ------------------------------------------------------------------------------

    def submit(self, request: JobRequest) -> tuple[JobRecord, bool]:
        """(the job, True if it was created now); the same name returns the existing job."""
        existing = self.jobs.get(request.name)
        if existing is not None:
            return existing, False
        record = JobRecord(request=request.model_dump(), created_at=time.time())
        self.jobs[record.name] = record
        self.store.save(record)
        self._schedule(record)
        return record, True

    def get(self, name: str) -> JobRecord:
        record = self.jobs.get(name)
        if record is None:
            raise RunnerError(404, f"job {name!r} not found")
        if record.status == RUNNING:
            progress = _read_json(self._output_dir(record) / "progress.json")
            record.metrics = {k: v for k, v in progress.items() if isinstance(v, int | float)}
        return record

    async def cancel(self, name: str) -> JobRecord:
        record = self.get(name)
        if record.status in FINISHED:
            return record
        self._finish(record, CANCELED, None)
        proc = self._procs.get(name)
        if proc is not None:
            await self._terminate(proc)
        return record

    async def deploy(self, name: str, deployment: str, base: str) -> dict[str, str]:
        record = self.get(name)
        if record.status != COMPLETED:
            raise RunnerError(409, f"job {name} is {record.status}, not Completed")
        model = record.outputs()["adapter"]
        training = self._input_path(record, str(record.request["train_blob"]))
        try:
            text = training.read_text(encoding="utf-8")
        except OSError as err:
            raise RunnerError(409, f"the training file of job {name} is gone: {err}") from None
        url = f"{self.simulator_url}/admin/tuned/{deployment}"
        body = {"base": base, "model": model, "training_jsonl": text}
        try:
            timeout = aiohttp.ClientTimeout(total=DEPLOY_TIMEOUT_S)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.put(url, json=body) as response,
            ):
                answer = await response.text()
                if response.status >= 400:
                    status = 400 if response.status < 500 else 502
                    raise RunnerError(
                        status, f"the simulator refused {deployment}: {response.status} {answer}"
                    )
        except (aiohttp.ClientError, TimeoutError) as err:
            raise RunnerError(502, f"the simulator at {self.simulator_url}: {err}") from None
        if deployment not in record.deployments or record.bases.get(deployment) != base:
            if deployment not in record.deployments:
                record.deployments.append(deployment)
            record.bases[deployment] = base
            self.store.save(record)
        return {"deployment": deployment, "model": model}

    async def _redeploy(self, record: JobRecord) -> None:
        """A restarted stack's simulator has forgotten what it served: deploy each of this job's
        candidates again (a promoted model must not answer 404 after `dev.py up --keep-data`)."""
        for deployment in record.deployments:
            base = record.bases.get(deployment)
            if base is None:
                continue
            try:
                await self.deploy(record.name, deployment, base)
            except RunnerError as err:
                log.warning("job %s: %s not deployed again: %s", record.name, deployment, err)
            else:
                log.info("job %s: %s deployed again on %s", record.name, deployment, base)

    # ---- running a job -------------------------------------------------------------------------

    def _schedule(self, record: JobRecord) -> None:
        task = asyncio.get_running_loop().create_task(self._run(record))
        self._tasks[record.name] = task
        task.add_done_callback(lambda _: self._tasks.pop(record.name, None))

    def _folder(self, record: JobRecord) -> Path:
        return self.store.folder(record.name)

    def _output_dir(self, record: JobRecord) -> Path:
        return self._folder(record) / "outputs" / "adapter"

    def _input_path(self, record: JobRecord, blob: str) -> Path:
        return self._folder(record) / "inputs" / blob.rsplit("/", 1)[-1]

    def _finish(self, record: JobRecord, status: str, error: str | None) -> None:
        record.status = status
        record.error = error
        record.finished_at = time.time()
        self.store.save(record)
        log.info("job %s %s%s", record.name, status, f": {error}" if error else "")

    async def _run(self, record: JobRecord) -> None:
        assert self._slots is not None, "start() first"
        async with self._slots:
            if record.status in FINISHED:
                return  # cancelled while queued
            try:
                await self._download(record)
                if record.status in FINISHED:
                    return
                record.status = RUNNING
                record.started_at = time.time()
                self.store.save(record)
                code = await self._train(record)
                if record.status in FINISHED or self._closing:
                    return  # cancelled while training, or the runner stops (job runs again)
                if code != 0:
                    raise _JobFailed(self._failure(record, code))
                await self._upload(record)
                out = self._output_dir(record)
                record.metrics = flat_metrics(_read_json(out / "metrics.json"))
                record.lineage = flat_lineage(_read_json(out / "lineage.json"))
                self._finish(record, COMPLETED, None)
            except _JobFailed as err:
                self._finish(record, FAILED, str(err))
            except (AzureError, OSError) as err:
                self._finish(record, FAILED, f"{type(err).__name__}: {err}")

    async def _download(self, record: JobRecord) -> None:
        request = record.parsed
        inputs = self._folder(record) / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        blobs = [("train", request.train_blob)]
        if request.validation_blob:
            blobs.append(("validation", request.validation_blob))
        async with BlobServiceClient.from_connection_string(self.storage_connection) as service:
            for what, blob in blobs:
                container, _, name = blob.partition("/")
                try:
                    stream = await service.get_blob_client(container, name).download_blob()
                    data = await stream.readall()
                except ResourceNotFoundError:
                    raise _JobFailed(f"bad input: {what} blob {blob} does not exist") from None
                self._input_path(record, blob).write_bytes(data)

    def _command(self, record: JobRecord) -> list[str]:
        request = record.parsed
        args = [
            str(self.python),
            "-m",
            "training.train",
            "--train-file",
            str(self._input_path(record, request.train_blob)),
        ]
        if request.validation_blob:
            args += ["--validation-file", str(self._input_path(record, request.validation_blob))]
        args += [
            "--base-model",
            request.base_model,
            "--output-dir",
            str(self._output_dir(record)),
            "--dataset-sha256",
            request.dataset_sha256,
            *request.trainer_flags(),
        ]
        return args

    async def _train(self, record: JobRecord) -> int:
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            HF_HUB_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        # One thread unless told otherwise: a tiny model gains nothing from more, and on a
        # developer machine's few shared cores extra threads only spin against each other.
        env.setdefault("OMP_NUM_THREADS", "1")
        log_path = self._folder(record) / "train.log"
        # A local file handed to the child as stdout/stderr: it needs a real descriptor.
        with open(log_path, "ab") as out:  # noqa: ASYNC230
            proc = await asyncio.create_subprocess_exec(
                *self._command(record), cwd=ROOT, env=env, stdout=out, stderr=out
            )
        self._procs[record.name] = proc
        log.info("job %s training (pid %d), log %s", record.name, proc.pid, log_path)
        if record.status in FINISHED:  # cancelled while the process started
            await self._terminate(proc)
        try:
            return await proc.wait()
        finally:
            self._procs.pop(record.name, None)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), self.terminate_grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def _failure(self, record: JobRecord, code: int) -> str:
        error = _read_json(self._output_dir(record) / "error.json").get("error")
        if code == 2:
            return f"bad input: {error or _last_line(self._folder(record) / 'train.log')}"
        reason = error or _last_line(self._folder(record) / "train.log") or "no output"
        return f"training failed (exit {code}): {reason}"

    async def _upload(self, record: JobRecord) -> None:
        out = self._output_dir(record)
        container, _, prefix = record.outputs_prefix.partition("/")
        files = [
            p
            for p in sorted(out.rglob("*"))
            if p.is_file()
            and p.name not in NOT_UPLOADED
            and "checkpoints" not in p.relative_to(out).parts
        ]
        async with BlobServiceClient.from_connection_string(self.storage_connection) as service:
            client = service.get_container_client(container)
            for path in files:
                name = f"{prefix}/{path.relative_to(out).as_posix()}"
                await client.upload_blob(name, path.read_bytes(), overwrite=True)

"""The local stand-in for Azure ML: a job runner that executes the same `training/` entry point.

`python -m devhost.jobrunner ...` (see __main__.py) serves an HTTP API (server.py) that takes a
fine-tuning job, downloads its chat JSONL from Azurite, runs `python -m training.train` in a
subprocess with the training venv (.venv-training), and uploads the output folder (adapter/,
metrics.json, lineage.json) under the job's prefix in the `models` container: the layout of an
Azure ML command job's inputs and `adapter` output (runner.py). It can also make the model
simulator serve a trained candidate (`POST /jobs/{name}/deploy`). Jobs are kept on disk
(jobs.py) and the unfinished ones run again, resuming from their checkpoints, after a restart.

`shared.finetune.backends.local_runner.LocalRunnerBackend` is its client; `JobRunnerProcess`
(process.py) starts it as a child process for the local stack and the tests.

Weighed: running the trainer in-process (no torch in the main venv, and a crash or a cancel must
not take the runner down), and a task queue such as Celery or RQ (a broker to run for one
sequential queue of jobs): a subprocess per job under asyncio does what Azure ML's node does.
"""

from devhost.jobrunner.process import TRAINING_PYTHON, JobRunnerProcess

__all__ = ["TRAINING_PYTHON", "JobRunnerProcess"]

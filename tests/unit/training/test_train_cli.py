"""`python -m training.train` and `python -m training.check_adapter`, run in .venv-training.

A tiny model (`tiny:micro`: hidden 32, 2 layers, byte tokenizer) on generated chat data: the loss
on the training and on held-out examples goes down, the adapter reloads onto a rebuilt base and
changes its logits, a run killed after its first checkpoint resumes from it, and bad input exits 2
with the reason. Each training process costs ~5 s (importing torch is most of it).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit.training.chat_data import chat_lines, write_chat_jsonl
from tests.unit.training.conftest import ROOT, RunTraining, training_env

FAST = ("--base-model", "tiny:micro", "--learning-rate", "1e-2", "--batch-size", "8")


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("chat")
    train, held_out = folder / "train.jsonl", folder / "held_out.jsonl"
    return {
        "train": train,
        "train_sha": write_chat_jsonl(train, 64, seed=1),
        "held_out": held_out,
        "held_out_sha": write_chat_jsonl(held_out, 16, seed=2),
    }


@pytest.fixture(scope="module")
def trained(
    data: dict[str, Any], run_training: RunTraining, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    done = run_training(
        "--train-file", data["train"], "--validation-file", data["held_out"],
        "--output-dir", out, "--dataset-sha256", data["train_sha"],
        "--max-steps", "40", "--save-steps", "20", *FAST,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_training_loss_goes_down(trained: Path) -> None:
    losses = [p["loss"] for p in _json(trained / "metrics.json")["train_loss_by_step"]]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 1.0, (first, last)


def test_held_out_loss_goes_down(trained: Path) -> None:
    metrics = _json(trained / "metrics.json")
    assert metrics["validation_examples"] == 16
    assert metrics["validation_loss_after"] < metrics["validation_loss_before"] - 1.0, metrics


def test_outputs_metrics_and_lineage(trained: Path, data: dict[str, Any]) -> None:
    assert (trained / "adapter" / "adapter_config.json").is_file()
    assert (trained / "adapter" / "adapter_model.safetensors").is_file()
    assert not (trained / "checkpoints").exists()  # the default folder goes once the run is done
    assert not (trained / "error.json").exists()
    metrics = _json(trained / "metrics.json")
    assert metrics["steps"] == 40
    assert metrics["device"] == "cpu"
    assert metrics["dtype"] == "float32"
    assert metrics["peak_memory_kind"] == "rss"
    assert metrics["peak_memory_bytes"] > 10_000_000
    assert 0 < metrics["seconds_per_step"] < 5
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    lineage = _json(trained / "lineage.json")
    assert lineage["base_model"] == "tiny:micro"
    assert lineage["dataset_sha256"] == data["train_sha"]
    assert lineage["validation_sha256"] == data["held_out_sha"]
    assert lineage["resumed_from_step"] == 0
    assert re.fullmatch(r"[0-9a-f]{16}", lineage["code_version"])
    assert lineage["parameters"] == {
        "max_steps": 40, "learning_rate": 0.01, "lora_r": 8, "lora_alpha": 16,
        "batch_size": 8, "save_steps": 20, "seed": 42,
    }  # fmt: skip
    assert lineage["started_at"] <= lineage["finished_at"]


def test_adapter_reloads_and_changes_logits(trained: Path, run_training: RunTraining) -> None:
    done = run_training(
        "--base-model", "tiny:micro", "--adapter", trained / "adapter",
        "--text", "Where is my lamp? Order 4242.",
        module="training.check_adapter",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tokens"] == len(b"Where is my lamp? Order 4242.")
    assert result["max_abs_logit_diff"] > 0.1, result


def test_killed_run_resumes_from_its_checkpoint(
    data: dict[str, Any], training_python: Path, run_training: RunTraining, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [
        "--train-file", str(data["train"]), "--output-dir", str(out),
        "--max-steps", "60", "--save-steps", "5", *FAST,
    ]  # fmt: skip
    proc = subprocess.Popen(
        [str(training_python), "-m", "training.train", *args],
        cwd=ROOT,
        env=training_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("checkpoints/checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists()

    done = run_training(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    lineage, metrics = _json(out / "lineage.json"), _json(out / "metrics.json")
    assert lineage["resumed_from_step"] > 0
    assert metrics["steps"] == 60
    assert metrics["steps_this_run"] == 60 - lineage["resumed_from_step"]
    # The loss history of the killed run came back with its checkpoint.
    assert [p["step"] for p in metrics["train_loss_by_step"]][:1] == [1]


def test_wrong_dataset_sha256_exits_2(
    data: dict[str, Any], run_training: RunTraining, tmp_path: Path
) -> None:
    done = run_training(
        "--train-file", data["train"], "--output-dir", tmp_path,
        "--dataset-sha256", "0" * 64, *FAST,
    )  # fmt: skip
    assert done.returncode == 2
    assert "sha256" in done.stderr
    assert data["train_sha"] in done.stderr
    error = _json(tmp_path / "error.json")
    assert error["exit_code"] == 2
    assert "the dataset changed" in error["error"]


def test_malformed_line_exits_2_naming_it(run_training: RunTraining, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = chat_lines(5, seed=3)
    lines[3] = lines[3][:-7]  # cut off: line 4 is not JSON
    bad.write_text("\n".join(lines) + "\n")
    done = run_training("--train-file", bad, "--output-dir", tmp_path / "out", *FAST)
    assert done.returncode == 2
    assert "bad.jsonl line 4: not valid JSON" in done.stderr
    assert "line 4" in _json(tmp_path / "out" / "error.json")["error"]


def test_unknown_tiny_preset_exits_2(
    data: dict[str, Any], run_training: RunTraining, tmp_path: Path
) -> None:
    done = run_training(
        "--train-file", data["train"], "--output-dir", tmp_path, "--base-model", "tiny:huge"
    )
    assert done.returncode == 2
    assert "unknown tiny preset 'tiny:huge'" in done.stderr

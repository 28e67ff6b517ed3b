"""`python -m training.train`: LoRA supervised fine-tuning on chat JSONL; what the job runs.

    python -m training.train --train-file train.jsonl [--validation-file val.jsonl]
        --base-model tiny:mini | DIR | HUB_ID  --output-dir OUT  [--checkpoint-dir DIR]
        [--dataset-sha256 HEX] [--max-steps N] [--learning-rate F] [--lora-r N]
        [--lora-alpha N] [--batch-size N] [--save-steps N] [--seed N]

The Azure ML command job (shared/finetune/backends/azure_ml.py) and devhost's job runner both run
exactly this. It writes to OUT:
- `adapter/`: the LoRA adapter (peft `save_pretrained`: adapter_config.json,
  adapter_model.safetensors);
- `metrics.json`: see training/sft.py (losses per step, held-out loss before/after, seconds per
  step, peak memory, device, dtype);
- `lineage.json`: base_model, dataset_sha256, parameters, code_version (sha256 of training/'s
  sources, 16 hex), started_at / finished_at (UTC ISO 8601), resumed_from_step, torch /
  transformers / peft versions;
- `progress.json` while it runs; `error.json` ({"error", "exit_code"}) when it fails.

Checkpoints go to --checkpoint-dir (default OUT/checkpoints) every --save-steps; a run that finds
one there resumes from the newest (a pre-empted low-priority node restarts the same command). The
default checkpoint folder is removed after success, so OUT holds only what is registered as the
model.

Exit codes: 0 done; 2 bad input (a malformed JSONL line, named; a dataset whose sha256 is not
--dataset-sha256; an unknown base model; bad numbers), with the reason on stderr and in
error.json; 1 anything else (traceback on stderr, the last line in error.json). Input is checked
before torch is imported, so a bad input costs well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.inputs import (
    BadInput,
    check_sha256,
    code_version,
    file_sha256,
    parse_base_model,
    read_chat_jsonl,
)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.train", description="LoRA fine-tuning on chat JSONL."
    )
    p.add_argument("--train-file", type=Path, required=True)
    p.add_argument("--validation-file", type=Path, default=None)
    p.add_argument("--base-model", required=True, help="tiny:<preset>, a directory, or a hub id")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--checkpoint-dir", type=Path, default=None)
    p.add_argument("--dataset-sha256", default=None)
    p.add_argument("--max-steps", type=_positive_int, default=100)
    p.add_argument("--learning-rate", type=_positive_float, default=2e-4)
    p.add_argument("--lora-r", type=_positive_int, default=8)
    p.add_argument("--lora-alpha", type=_positive_int, default=16)
    p.add_argument("--batch-size", type=_positive_int, default=4)
    p.add_argument("--save-steps", type=_positive_int, default=50)
    p.add_argument("--seed", type=int, default=42)
    return p


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def train(args: argparse.Namespace) -> None:
    started_at = _now()
    out: Path = args.output_dir
    base = parse_base_model(args.base_model)
    train_chats = read_chat_jsonl(args.train_file, "train file")
    if args.dataset_sha256:
        dataset_sha = check_sha256(args.train_file, args.dataset_sha256)
    else:
        dataset_sha = file_sha256(args.train_file)
    validation = (
        read_chat_jsonl(args.validation_file, "validation file") if args.validation_file else None
    )
    default_checkpoints = args.checkpoint_dir is None
    checkpoint_dir: Path = args.checkpoint_dir or out / "checkpoints"
    if base.kind != "hub":
        os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is ever fetched for a tiny or local model
    parameters = {
        "max_steps": args.max_steps,
        "learning_rate": args.learning_rate,
        "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "batch_size": args.batch_size,
        "save_steps": args.save_steps,
        "seed": args.seed,
    }

    # torch, transformers, peft: imported only once the input is known good (seconds saved).
    from training import sft  # noqa: PLC0415

    metrics = sft.run(
        sft.Job(
            base=base,
            train=train_chats,
            validation=validation,
            output_dir=out,
            checkpoint_dir=checkpoint_dir,
            **parameters,
        )
    )
    _write_json(out / "metrics.json", metrics)
    _write_json(
        out / "lineage.json",
        {
            "base_model": args.base_model,
            "dataset_sha256": dataset_sha,
            "validation_sha256": file_sha256(args.validation_file)
            if args.validation_file
            else None,
            "parameters": parameters,
            "code_version": code_version(),
            "started_at": started_at,
            "finished_at": _now(),
            "resumed_from_step": metrics["resumed_from_step"],
            "versions": sft.versions(),
        },
    )
    (out / "progress.json").unlink(missing_ok=True)
    if default_checkpoints:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)


def _fail(out: Path, message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    try:
        _write_json(out / "error.json", {"error": message, "exit_code": code})
    except OSError as err:
        print(f"error: cannot write {out / 'error.json'}: {err}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # bad flags: argparse's usage message, exit 2
    out: Path = args.output_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"error: cannot create --output-dir {out}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    (out / "error.json").unlink(missing_ok=True)
    try:
        train(args)
    except BadInput as err:
        return _fail(out, str(err), EXIT_BAD_INPUT)
    except Exception as err:  # the job's last word: any failure is reported, then exit 1
        traceback.print_exc()
        return _fail(out, f"{type(err).__name__}: {err}", EXIT_FAILED)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""LoRA supervised fine-tuning with transformers' `Trainer` over a peft model; checkpoints; resume.

`run(job)` trains and returns the metrics dict that `training.train` writes as metrics.json:

    train_loss_by_step      [{"step": int, "loss": float}, ...] every logged step (all runs of a
                            resumed job: the Trainer restores the history from the checkpoint)
    first_train_loss, final_train_loss   float (the first and last logged step)
    validation_loss_before, validation_loss_after   float or null (no --validation-file):
                            mean token cross-entropy (nats) of the held-out assistant turns, on the
                            base model (adapter still zero) and after training
    steps                   global step reached; steps_this_run: those this process ran
    train_seconds, seconds_per_step      wall time of this process's training loop
    peak_memory_bytes, peak_memory_kind  CUDA max allocated ("cuda_max_allocated") on a GPU,
                            else the process's peak resident set size ("rss")
    device ("cpu" | "cuda"), dtype ("float32" | "bfloat16"), trainable_parameters,
    total_parameters, train_examples, validation_examples, resumed_from_step

Checkpoints (adapter, optimizer, scheduler, RNG, trainer state) go to the checkpoint folder every
`save_steps` (the last two are kept); `latest_checkpoint` picks the newest one whose
trainer_state.json parses, the file Trainer writes last, so a node pre-empted mid-save resumes
from the checkpoint before. Weighed: a hand-written loop would be shorter to read, but Trainer
already checkpoints and restores optimizer, scheduler and RNG state exactly, handles bf16
autocast and device placement, and is what the adapter's users know.
"""

from __future__ import annotations

import json
import re
import resource
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import (
    DataCollatorForSeq2Seq,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from training.inputs import BadInput, BaseModelRef, Chat
from training.modeling import IGNORE, encode_chats, load_base, pick_device, pick_dtype

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Job:
    base: BaseModelRef
    train: list[Chat]
    validation: list[Chat] | None
    output_dir: Path
    checkpoint_dir: Path
    max_steps: int
    learning_rate: float
    lora_r: int
    lora_alpha: int
    batch_size: int
    save_steps: int
    seed: int


def latest_checkpoint(folder: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint in `folder` and its step, or None."""
    if not folder.is_dir():
        return None
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    for step, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return path, step
    return None


class _Progress(TrainerCallback):
    """Writes OUTPUT/progress.json ({"step", "max_steps", "loss"}) at every log: what a runner
    shows while the job runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if logs and "loss" in logs:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {"step": state.global_step, "max_steps": state.max_steps, "loss": logs["loss"]}
                )
            )
            tmp.replace(self.path)


def versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated()), "cuda_max_allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return int(kib) * 1024, "rss"


def run(job: Job) -> dict[str, Any]:
    # peft asks the hub whether a `tiny:` base has a config.json (offline: it cannot say).
    warnings.filterwarnings("ignore", message="Could not find a config file in tiny:")
    device = pick_device()
    dtype = pick_dtype(device)
    bf16 = dtype == torch.bfloat16
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model, tokenizer, max_length = load_base(job.base, dtype)
    train_set = encode_chats(tokenizer, job.train, max_length)
    if not train_set:
        raise BadInput(f"no training example keeps an assistant turn within {max_length} tokens")
    val_set = encode_chats(tokenizer, job.validation, max_length) if job.validation else None
    if job.validation and not val_set:
        raise BadInput(f"no validation example keeps an assistant turn within {max_length} tokens")

    set_seed(job.seed)  # the LoRA A matrices are drawn here
    lora = LoraConfig(
        r=job.lora_r,
        lora_alpha=job.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    trainable, total = peft_model.get_nb_trainable_parameters()
    args = TrainingArguments(
        output_dir=str(job.checkpoint_dir),
        max_steps=job.max_steps,
        per_device_train_batch_size=job.batch_size,
        per_device_eval_batch_size=job.batch_size,
        learning_rate=job.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="steps",
        save_steps=job.save_steps,
        save_total_limit=2,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=job.seed,
        data_seed=job.seed,
        bf16=bf16,
        use_cpu=device.type == "cpu",
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=peft_model,
        args=args,
        train_dataset=train_set,  # a list of dicts is a map-style dataset
        eval_dataset=val_set,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE, padding=True),
        processing_class=tokenizer,
        callbacks=[_Progress(job.output_dir / "progress.json")],
    )
    before = trainer.evaluate()["eval_loss"] if val_set else None
    resume = latest_checkpoint(job.checkpoint_dir)
    resumed_from = resume[1] if resume else 0
    if resume:
        print(f"resuming from {resume[0]} (step {resumed_from})", file=sys.stderr, flush=True)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    train_seconds = time.perf_counter() - started
    after = trainer.evaluate()["eval_loss"] if val_set else None
    peft_model.save_pretrained(str(job.output_dir / "adapter"))

    losses = [
        {"step": int(e["step"]), "loss": float(e["loss"])}
        for e in trainer.state.log_history
        if "loss" in e
    ]
    steps = int(trainer.state.global_step)
    ran = max(steps - resumed_from, 0)
    peak, peak_kind = _peak_memory(device)
    return {
        "train_loss_by_step": losses,
        "first_train_loss": losses[0]["loss"] if losses else None,
        "final_train_loss": losses[-1]["loss"] if losses else None,
        "validation_loss_before": before,
        "validation_loss_after": after,
        "steps": steps,
        "steps_this_run": ran,
        "train_seconds": round(train_seconds, 3),
        "seconds_per_step": round(train_seconds / ran, 5) if ran else None,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "device": device.type,
        "dtype": str(dtype).removeprefix("torch."),
        "trainable_parameters": int(trainable),
        "total_parameters": int(total),
        "train_examples": len(train_set),
        "validation_examples": len(val_set) if val_set else 0,
        "resumed_from_step": resumed_from,
    }

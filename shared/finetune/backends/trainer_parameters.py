"""The trainer's hyperparameter flags (training/train.py) and how a job's own values override a
backend's defaults; shared by the Azure ML backend and the local runner's backend, which start the
same `python -m training.train`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from shared.finetune.backends.port import BackendError, TrainingSpec

# The trainer's hyperparameter flags, in command-line order.
TRAIN_PARAMETERS: Final = (
    "max_steps",
    "learning_rate",
    "lora_r",
    "lora_alpha",
    "batch_size",
    "save_steps",
    "seed",
)


def overridden(base: Mapping[str, int | float], spec: TrainingSpec) -> dict[str, int | float]:
    """`base` with those of spec.hyperparameters that the trainer knows (others, such as Azure
    OpenAI's n_epochs, do not apply); learning_rate a float, the rest ints. Raises BackendError
    for a value that is not a number."""
    merged = dict(base)
    for key in TRAIN_PARAMETERS:
        value = spec.hyperparameters.get(key)
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise BackendError(f"hyperparameter {key}={value!r} is not a number") from None
        merged[key] = number if key == "learning_rate" else int(number)
    return merged

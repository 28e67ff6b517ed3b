"""What a training run writes beside its adapter, in the port's shapes: `metrics.json` as floats
(with `train_loss` and `validation_loss` named as `TrainedModel.metrics` names them) and
`lineage.json` as strings. Shared by the Azure ML backend and devhost's job runner, which read the
same files that `python -m training.train` writes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def flat_metrics(raw: Mapping[str, Any]) -> dict[str, float]:
    """metrics.json's numbers, plus train_loss and validation_loss in the port's words."""
    out = {
        k: float(v)
        for k, v in raw.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if "final_train_loss" in out:
        out["train_loss"] = out["final_train_loss"]
    if "validation_loss_after" in out:
        out["validation_loss"] = out["validation_loss_after"]
    return out


def flat_lineage(raw: Mapping[str, Any]) -> dict[str, str]:
    """lineage.json as strings (nested values as compact JSON; nulls left out)."""
    return {
        k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"))
        for k, v in raw.items()
        if v is not None
    }

"""The seam for a quality model: how good a deployment's answer to a request is, in 0..1.

Today the score is the deployment's configured `quality`. Later modules (drift, fine-tuning)
pass their own `QualityModel` to the simulator, e.g. one that lowers a pooled model's score for a
tenant whose traffic has drifted, or raises a tuned deployment's after promotion. The score is
sent in the `x-sim-quality` response header and averaged in the stats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from devhost.models.config import DeploymentConfig


class QualityModel(Protocol):
    def score(
        self,
        deployment: DeploymentConfig,
        tenant: str,
        messages: Sequence[Mapping[str, Any]],
    ) -> float:
        """The quality (0..1) of this deployment's answer to these messages for this tenant."""
        ...


class StaticQuality:
    """Each deployment's configured quality, whatever the request."""

    def score(
        self,
        deployment: DeploymentConfig,
        tenant: str,
        messages: Sequence[Mapping[str, Any]],
    ) -> float:
        return deployment.quality

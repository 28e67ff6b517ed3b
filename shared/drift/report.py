"""Drift reports (`drift/<tenant>/<timestamp>-<model key>.json`) and, on drift, their chart.

A report is written by every evaluation: the windows read, each check's statistics, thresholds and
decision, and the action taken (or why none). On quality drift a PNG beside it shows the feedback
score over time (window means), the estimated change point, the reference and recent levels, and
the detection statistic against its threshold, for a person to read.

matplotlib (Agg backend, no display) draws it: a maintained plotting library rather than our own.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.security.paths import tenant_path


class Action(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["none", "finetune_requested", "skipped", "waiting"]
    detail: str
    job_key: str | None = None
    dataset: str | None = None


class DriftReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: Literal["drift.report"] = "drift.report"
    version: Literal[1] = 1
    tenant_id: str
    model_key: str
    evaluated_at: datetime
    trigger: Literal["feedback", "timer", "operator"]
    ratings_read: int = Field(description="new ratings fed to the detector by this evaluation")
    ratings_total: int = Field(description="ratings of this model version since its reference")
    quality: dict[str, Any] = Field(description="the detector's evidence (QualityEvidence)")
    input: dict[str, Any] | None = Field(description="the input-drift check (InputDriftResult)")
    drift: bool = Field(description="quality_drift or input_drift")
    quality_drift: bool = Field(description="the quality detector alarmed (acted on)")
    input_drift: bool = Field(description="the prompts moved (reported, not acted on)")
    drift_event_id: str | None = None
    decision: str = Field(description="one sentence: what was decided and why")
    action: Action
    blob: str = Field(description="where this report is stored (container/name)")
    chart: str | None = None


def report_stem(tenant_id: str, key: str, at: datetime) -> str:
    return tenant_path(tenant_id, f"{at.strftime('%Y%m%dT%H%M%S%fZ')}-{key}")


def render_chart(
    *,
    title: str,
    series: Sequence[tuple[int, float]],
    change_point: int | None,
    reference_mean: float,
    recent_mean: float,
    statistics: Sequence[tuple[int, float]],
    threshold: float,
) -> bytes:
    """A PNG: the score over time with the change point and levels (top), the detection
    statistic against its threshold (bottom)."""
    import matplotlib  # noqa: PLC0415 - heavy; imported only when a chart is drawn

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    try:
        if series:
            xs, ys = zip(*series, strict=True)
            top.plot(xs, ys, color="#1f77b4", linewidth=1.4, label="feedback score (window mean)")
        top.axhline(
            reference_mean,
            color="#2ca02c",
            linestyle="--",
            linewidth=1,
            label=f"reference {reference_mean:.2f}",
        )
        start = change_point if change_point is not None else 0
        end = max((x for x, _ in series), default=start + 1)
        top.hlines(
            recent_mean,
            start,
            max(end, start + 1),
            color="#d62728",
            linestyle="--",
            linewidth=1,
            label=f"since the change {recent_mean:.2f}",
        )
        if change_point is not None:
            for axis in (top, bottom):
                axis.axvline(change_point, color="#d62728", linewidth=1.2)
            top.annotate(
                "change point",
                (change_point, 1.0),
                xytext=(4, -12),
                textcoords="offset points",
                color="#d62728",
                fontsize=8,
            )
        top.set_ylim(-0.02, 1.05)
        top.set_ylabel("score (0 bad .. 1 good)")
        top.set_title(textwrap.fill(title, 100), fontsize=9)
        top.legend(loc="lower left", fontsize=8)
        if statistics:
            sx, sy = zip(*statistics, strict=True)
            bottom.plot(sx, sy, color="#9467bd", linewidth=1.2, label="detection statistic")
        bottom.axhline(
            threshold, color="black", linestyle=":", linewidth=1, label=f"threshold {threshold:.1f}"
        )
        bottom.set_xlabel("ratings since the reference window began")
        bottom.set_ylabel("statistic")
        bottom.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        return buffer.getvalue()
    finally:
        plt.close(fig)

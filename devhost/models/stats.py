"""What the simulator served, per (deployment, tenant) cell, aggregated on read.

The hot path touches one cell (a dict lookup) and bumps plain ints; the report is built only
when /admin/stats is read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

NO_TENANT = "-"


@dataclass(slots=True)
class Counters:
    requests: int = 0
    """Calls that reached a known deployment (the other counters split them)."""
    ok: int = 0
    throttled: int = 0
    faults: int = 0
    errors: int = 0
    """400s for a bad body, once the deployment was known."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    quality_sum: float = 0.0
    verdicts: int = 0
    """Answers given a verdict (with answer_verdicts on; one per choice)."""
    good: int = 0
    filtered: int = 0
    """Prompts refused and answers withheld by the content filter (content_filter.py)."""

    def add(self, other: Counters) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def report(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "throttled": self.throttled,
            "faults": self.faults,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "quality_mean": round(self.quality_sum / self.ok, 6) if self.ok else None,
            "verdicts": self.verdicts,
            "good": self.good,
            "good_rate": round(self.good / self.verdicts, 6) if self.verdicts else None,
            "filtered": self.filtered,
        }


class Stats:
    def __init__(self) -> None:
        self._cells: dict[tuple[str, str], Counters] = {}
        self.rejected: Counter[str] = Counter()
        """Calls refused before a deployment was known: unauthorized, not_found, bad_request."""

    def cell(self, deployment: str, tenant: str) -> Counters:
        key = (deployment, tenant)
        c = self._cells.get(key)
        if c is None:
            c = self._cells[key] = Counters()
        return c

    def reset(self) -> None:
        self._cells.clear()
        self.rejected.clear()

    def report(self) -> dict[str, Any]:
        """{"totals", "deployments": {d: {..., "tenants": {t: ...}}},
        "tenants": {t: {..., "deployments": {d: ...}}}, "rejected": {reason: n}}"""
        totals = Counters()
        by_dep: dict[str, Counters] = {}
        by_tenant: dict[str, Counters] = {}
        for (dep, tenant), c in sorted(self._cells.items()):
            totals.add(c)
            by_dep.setdefault(dep, Counters()).add(c)
            by_tenant.setdefault(tenant, Counters()).add(c)
        return {
            "totals": totals.report(),
            "deployments": {
                d: {
                    **c.report(),
                    "tenants": {t: v.report() for (dd, t), v in self._cells.items() if dd == d},
                }
                for d, c in by_dep.items()
            },
            "tenants": {
                t: {
                    **c.report(),
                    "deployments": {d: v.report() for (d, tt), v in self._cells.items() if tt == t},
                }
                for t, c in by_tenant.items()
            },
            "rejected": dict(self.rejected),
        }

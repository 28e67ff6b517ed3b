"""Which deployments may serve a tenant's request, best first.

- pooled: the tenant's pooled deployments, by priority, and within one priority spread at random
  in proportion to capacity (tokens per minute), so a 200k TPM deployment takes twice the traffic
  of a 100k one;
- dedicated: only the deployments the tenant owns, ordered the same way; then, only when its
  registry entry sets `fallback_to_pooled`, the pooled deployments it may use, ordered the same way;
- tuned: the tenant's current tuned deployment, then its base, then any other pooled deployment
  the tenant may use (a tuned tenant not tuned yet: its pooled deployments, as a pooled tenant).

What "may use" means for each shape of registry entry is the table in `shared.tenancy.registry`
(and docs/contracts.md).

The whole list is returned (primary, then fallbacks) for the resilience layer to fail over along.
Every candidate is checked against the tenant once more here, whatever the registry says, so a
tenant is never routed to another tenant's dedicated or tuned deployment.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from itertools import groupby

from shared.contracts import RejectionReason
from shared.tenancy.registry import Deployment, IsolationMode, Registry, Tenant


class RoutingError(Exception):
    """No candidate can be offered; `reason` is a rejection reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class IsolationViolation(Exception):
    """The registry would send a tenant to another tenant's deployment: a bug, never routed."""


def reachable(tenant: Tenant, deployment: Deployment) -> bool:
    """May this tenant's data reach this deployment at all? Its own dedicated or tuned ones, and
    pooled ones unless it is dedicated without `fallback_to_pooled`; never another tenant's."""
    if deployment.shared:
        return deployment.owner_tenant is None and tenant.reaches_pooled
    return deployment.owner_tenant == tenant.id


def weighted_order(deployments: Iterable[Deployment], rng: random.Random) -> list[Deployment]:
    """By priority (lower first); within a priority, a random order weighted by capacity.

    Each deployment draws the key u ** (1 / weight) and the keys are sorted high to low
    (Efraimidis-Spirakis), which makes P(first) = weight / sum(weights).
    """
    ordered: list[Deployment] = []
    by_priority = sorted(deployments, key=lambda d: d.priority)
    for _, group in groupby(by_priority, key=lambda d: d.priority):
        keyed = [(rng.random() ** (1.0 / d.capacity.tokens_per_minute), d) for d in group]
        ordered += [d for _, d in sorted(keyed, key=lambda kd: kd[0], reverse=True)]
    return ordered


class Router:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def candidates(self, registry: Registry, tenant: Tenant) -> list[Deployment]:
        """Usable deployments for the tenant, primary first; RoutingError when there are none."""
        allowed = [d for d in registry.allowed_for(tenant) if d.usable]
        if tenant.mode is IsolationMode.TUNED:
            ordered = self._tuned_order(registry, tenant, allowed)
        elif tenant.mode is IsolationMode.DEDICATED:
            own = [d for d in allowed if not d.shared]
            pooled = [d for d in allowed if d.shared]  # fallback_to_pooled (or a bad registry)
            ordered = weighted_order(own, self._rng) + weighted_order(pooled, self._rng)
        else:
            ordered = weighted_order(allowed, self._rng)
        for d in ordered:
            if not reachable(tenant, d):
                raise IsolationViolation(
                    f"tenant {tenant.id!r} must not reach deployment {d.name!r} "
                    f"({d.mode}, owner {d.owner_tenant!r})"
                )
        if not ordered:
            raise RoutingError(
                RejectionReason.NO_USABLE_DEPLOYMENT,
                f"tenant {tenant.id!r} ({tenant.mode}) has no usable deployment",
            )
        return ordered

    def _tuned_order(
        self, registry: Registry, tenant: Tenant, allowed: Sequence[Deployment]
    ) -> list[Deployment]:
        by_name = {d.name: d for d in allowed}
        first: list[Deployment] = []
        tuned = registry.deployment_by_name.get(tenant.tuned_deployment or "")
        if tuned is not None:
            first = [by_name[n] for n in (tuned.name, tuned.base) if n and n in by_name]
        rest = [d for d in allowed if d not in first and d.shared]
        return first + weighted_order(rest, self._rng)

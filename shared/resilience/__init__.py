"""Resilience against throttling and faults: retry, circuit breakers, rate budgets, tenant quotas,
and the resilient model client that composes them."""

"""The snapshot of `collect.py` as readable tables (rich), one per kind of thing.

Tables: tenants (results, rejections, usage totals, reply queue depth), usage by deployment,
queues (active, scheduled, dead-lettered), dead letters with their reasons, recent rejections,
recent results, recent breaker and quota events. An empty list prints one line saying so.

Libraries weighed: rich (tables that fit the terminal's width, no curses); tabulate prints plain
tables too, but wraps nothing, and long rejection details would run off the screen.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _print(console: Console, table: Table, empty: str) -> None:
    if table.row_count:
        console.print(table)
    else:
        console.print(f"[bold]{table.title}[/bold]: {empty}")


def render(snapshot: dict[str, Any], console: Console) -> None:
    depth = {q["name"]: q for q in snapshot["queues"]}
    tenants = _table(
        "Tenants",
        "tenant",
        "mode",
        "answered",
        "failed",
        "rejected",
        "calls",
        "tokens",
        "waiting",
        "DLQ",
    )
    tenants.columns[0].no_wrap = tenants.columns[1].no_wrap = True
    for tenant, t in snapshot["tenants"].items():
        queue = depth.get(t["reply_queue"], {})
        tenants.add_row(
            tenant,
            t["mode"],
            str(t["results"]["succeeded"]),
            str(t["results"]["failed"]),
            str(t["rejections"]["total"]),
            str(t["usage"]["calls"]),
            str(t["usage"]["total_tokens"]),
            str(queue.get("active", "-")),
            str(queue.get("dead_letter", "-")),
        )
    _print(console, tenants, "none in the registry")

    usage = _table("Usage by deployment", "tenant", "deployment", "calls", "tokens")
    for tenant, t in snapshot["tenants"].items():
        for deployment, u in t["usage"]["by_deployment"].items():
            usage.add_row(tenant, deployment, str(u["calls"]), str(u["total_tokens"]))
    _print(console, usage, "no model calls yet")

    queues = _table("Queues", "queue", "active", "scheduled", "dead-lettered", "total")
    for q in snapshot["queues"]:
        queues.add_row(
            q["name"], str(q["active"]), str(q["scheduled"]), str(q["dead_letter"]), str(q["total"])
        )
    _print(console, queues, "none")

    dead = _table("Dead letters", "queue", "tenant", "message id", "reason", "description")
    for d in snapshot["dead_letters"]:
        dead.add_row(
            d["queue"],
            d["tenant_id"] or "-",
            d["message_id"] or "-",
            d["reason"] or "-",
            d["description"] or "",
        )
    _print(console, dead, "none")

    rejected = _table("Recent rejections", "tenant", "message id", "reason", "detail")
    for tenant, t in [*snapshot["tenants"].items(), ("(unknown)", None)]:
        records = (t["rejections"] if t else snapshot["unknown_rejections"])["recent"]
        for r in records:
            rejected.add_row(tenant, r["message_id"] or "-", r["reason"] or "-", r["detail"] or "")
    _print(console, rejected, "none")

    results = _table("Recent results", "tenant", "request id", "status", "deployment", "tokens")
    for tenant, t in snapshot["tenants"].items():
        for r in t["results"]["recent"]:
            results.add_row(
                tenant,
                r["request_id"] or "-",
                r["status"] if not r["failure"] else f"{r['status']} ({r['failure']})",
                r["deployment"] or "-",
                str(r["total_tokens"] or 0),
            )
    _print(console, results, "none yet")

    events = _table(
        "Recent breaker and quota events", "at", "event", "tenant", "deployment", "detail"
    )
    for e in snapshot["events"]:
        events.add_row(
            e["at"], e["event"], e["tenant_id"] or "", e["deployment"] or "", e["detail"]
        )
    _print(console, events, "none")

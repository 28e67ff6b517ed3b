"""Breaker and quota events read back from host log lines (devhost/inspect/events.py)."""

from __future__ import annotations

from devhost.envfile import line, read_env_file, write_env_file
from devhost.inspect.events import parse_events

LINES = [
    "2026-11-30 10:45:41,021 WARNING shared.resilience.breaker: breaker.transition "
    'deployment=fabrikam-ft-v1 from_state=closed to_state=open why="retry-after 20s"',
    "2026-11-30 06:37:05,698 INFO shared.inference.handler: inference.rescheduled message_id=m "
    "reason=tenant_quota:requests_per_minute retry_after_s=51.32 tenant_id=flood",
    # a reschedule for busy deployments is not a quota event
    "2026-11-30 10:45:42,330 INFO shared.inference.handler: inference.rescheduled message_id=c "
    "reason=deployments_busy retry_after_s=12.0 tenant_id=contoso",
    "2026-11-30 10:45:42,330 INFO shared.inference.handler: inference.completed tenant_id=x",
    'a broken line breaker.transition deployment="unclosed',
]


def test_only_breaker_and_quota_events_are_kept() -> None:
    events = list(parse_events(LINES))
    assert events == [
        {
            "at": "2026-11-30 10:45:41",
            "event": "breaker.transition",
            "tenant_id": None,
            "deployment": "fabrikam-ft-v1",
            "detail": "closed -> open (retry-after 20s)",
        },
        {
            "at": "2026-11-30 06:37:05",
            "event": "inference.rescheduled",
            "tenant_id": "flood",
            "deployment": None,
            "detail": "tenant_quota:requests_per_minute, retry in 51.32 s",
        },
    ]


def test_env_file_lines_round_trip_and_paste_into_a_shell(tmp_path: object) -> None:
    from pathlib import Path

    connection = "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=K;SharedAccessKey=a=b;X=1;"
    assert line("ServiceBusConnection", connection) == f"ServiceBusConnection='{connection}'"
    path = write_env_file(
        Path(str(tmp_path)) / "devhost.env",
        {"ServiceBusConnection": connection, "PLAIN": "http://h:1/api"},
    )
    assert read_env_file(path) == {"ServiceBusConnection": connection, "PLAIN": "http://h:1/api"}
    import subprocess

    shell = subprocess.run(
        ["bash", "-c", f'set -a; . "{path}"; printf %s "$ServiceBusConnection"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == connection

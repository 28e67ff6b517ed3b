"""The knobs of batch processing, from the app settings (`shared.settings`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_upload_bytes: int = 256 * 1024 * 1024
    """An upload larger than this is refused whole (`file_too_large`), before it is read."""
    max_row_bytes: int = 192 * 1024
    """A row longer than this is refused (`row_too_large`): its message must fit the queue."""
    quota_share: float = 0.5
    """The part of the tenant's per-minute quota its batch rows may use; the fan-out paces rows
    to it and the resilient client refuses a batch row beyond it (shared.resilience.priority)."""
    pace_margin: float = 0.9
    """Rows are scheduled at this fraction of the share, so a paced row rarely finds it full."""
    send_rows: int = 200
    """Rows per send (the Service Bus adapter also splits by the queue's batch size limit)."""
    checkpoint_rows: int = 2000
    """The record notes the fan-out's progress every this many rows (a resumed one skips them)."""
    gather_concurrency: int = 32
    """Row results read at once while the results file is written."""
    gather_stale_s: float = 300.0
    """A gathering that has not finished after this long is taken over by the next caller."""

"""The app proves the copies it puts on `inference-requests` itself, where they leave it.

Two kinds of message reach the inference queue from the app rather than from a tenant:
- a rescheduled request (`shared.resilience.reschedule`): a copy of a message that was proven on
  its way in, with a new message id and a later scheduled time;
- a batch row (`shared.batch.fanout`): a request built from a line of
  `uploads/<tenant>/batch/*.jsonl`, a prefix only that tenant may write (a SAS for its prefix).
Both carry the tenant's id and must pass the same check as a tenant's message, so the port they
leave through signs them: `ProvingReplySender` and `ProvingRowSender` wrap the reply port and
the row sender, and for a message to `inference-requests` replace any `x-tenant-proof*`
properties with a proof made by `TenantProofs.prove_copy` (the tenant's newest active key, the
message's own id and reply_to, the time it is scheduled for, else now). Messages to other
queues (replies, fine-tune requests) pass unchanged.

Only this app's code sends through these ports, and only after the message was admitted (a
reschedule) or from the tenant's own upload prefix (a batch); nothing a tenant sends is signed
by them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from shared.batch.fanout import RowMessage, RowSender
from shared.contracts import REQUEST_TYPE
from shared.inference.replies import Reply, ReplySender
from shared.security.proof import PROPERTIES
from shared.security.tenant_check import TenantProofs
from shared.storage import names

PROVEN_QUEUES = frozenset({names.INFERENCE_REQUESTS})


class ProvingReplySender:
    def __init__(self, inner: ReplySender, proofs: TenantProofs) -> None:
        self.inner = inner
        self._proofs = proofs

    async def send(self, reply: Reply) -> None:
        if reply.queue in PROVEN_QUEUES:
            proven = await self._proofs.prove_copy(
                reply.body,
                message_id=reply.message_id,
                reply_to=reply.reply_to,
                contract_type=REQUEST_TYPE,
                at=reply.scheduled_enqueue_time_utc,
            )
            reply = dataclasses.replace(
                reply, application_properties=_with(reply.application_properties, proven)
            )
        await self.inner.send(reply)

    async def close(self) -> None:
        await self.inner.close()


class ProvingRowSender:
    def __init__(self, inner: RowSender, proofs: TenantProofs) -> None:
        self.inner = inner
        self._proofs = proofs

    async def send_rows(self, queue: str, rows: Sequence[RowMessage]) -> None:
        if queue in PROVEN_QUEUES:
            rows = [await self._proven(row) for row in rows]
        await self.inner.send_rows(queue, rows)

    async def _proven(self, row: RowMessage) -> RowMessage:
        proven = await self._proofs.prove_copy(
            row.body,
            message_id=row.message_id,
            reply_to=None,
            contract_type=REQUEST_TYPE,
            at=row.scheduled_enqueue_time_utc,
        )
        return dataclasses.replace(
            row, application_properties=_with(row.application_properties, proven)
        )

    async def close(self) -> None:
        await self.inner.close()


def _with(properties: Mapping[str, Any], proven: dict[str, str]) -> dict[str, Any]:
    """The properties with any proof a tenant or an earlier round put there replaced."""
    return {**{k: v for k, v in properties.items() if k not in PROPERTIES}, **proven}

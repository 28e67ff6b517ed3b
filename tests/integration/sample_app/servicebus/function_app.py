"""A throwaway app for the local host's tests: Service Bus queue triggers that record what they got.

The body is JSON: `{"sleep": seconds, "fail": true}`; both optional.
"""

from __future__ import annotations

import asyncio
import json
import time

import azure.functions as func

from tests.integration.sample_app.recorder import record

app = func.FunctionApp()

_in_flight = 0


@app.function_name("work")
@app.service_bus_queue_trigger(
    arg_name="msg", queue_name="%SAMPLE_QUEUE%", connection="SampleServiceBus"
)
async def work(msg: func.ServiceBusMessage) -> None:
    global _in_flight  # noqa: PLW0603 - the sample measures its own concurrency
    order = json.loads(msg.get_body() or b"{}")
    _in_flight += 1
    record(
        "started",
        function="work",
        message_id=msg.message_id,
        delivery_count=msg.delivery_count,
        in_flight=_in_flight,
        application_properties=msg.application_properties,
        correlation_id=msg.correlation_id,
        content_type=msg.content_type,
        subject=msg.label,
        enqueued=msg.enqueued_time_utc,
        lock_token=msg.lock_token,
        sequence_number=msg.sequence_number,
    )
    try:
        await asyncio.sleep(float(order.get("sleep", 0)))
        if order.get("fail"):
            raise RuntimeError("asked to fail")
    finally:
        _in_flight -= 1
    record("finished", function="work", message_id=msg.message_id)


@app.function_name("work_sync")
@app.service_bus_queue_trigger(
    arg_name="message", queue_name="%SAMPLE_SYNC_QUEUE%", connection="SampleServiceBus"
)
def work_sync(message: func.ServiceBusMessage) -> None:
    order = json.loads(message.get_body() or b"{}")
    record("started", function="work_sync", message_id=message.message_id)
    time.sleep(float(order.get("sleep", 0)))
    record("finished", function="work_sync", message_id=message.message_id)

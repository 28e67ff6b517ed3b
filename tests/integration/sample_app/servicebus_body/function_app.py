"""A throwaway app for the local host's tests: records the body bytes each message arrives with.

It never fails on a body, as the real app does not (a body it cannot read is a rejection), so a
message that is not completed was lost by the host, not by the function.
"""

from __future__ import annotations

import azure.functions as func

from tests.integration.sample_app.recorder import record

app = func.FunctionApp()


@app.function_name("body")
@app.service_bus_queue_trigger(
    arg_name="msg", queue_name="%SAMPLE_QUEUE%", connection="SampleServiceBus"
)
def body(msg: func.ServiceBusMessage) -> None:
    record("body", message_id=msg.message_id, body_hex=msg.get_body().hex())

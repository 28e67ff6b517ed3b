"""The switchboard: every trigger of the Function app, each handing plain data to `shared/`.

No logic lives here. Each function turns its trigger payload into a `shared` object and awaits
one handler; the handler's outcome or exception is what the host acts on.
"""

from __future__ import annotations

import azure.functions as func

from shared.inference.handler import handle_inference_request
from shared.messages import InboundMessage
from shared.storage import names

app = func.FunctionApp()


def inbound_message(msg: func.ServiceBusMessage) -> InboundMessage:
    """The trigger's message as the handlers take it."""
    return InboundMessage(
        body=msg.get_body(),
        message_id=msg.message_id or "",
        reply_to=msg.reply_to,
        reply_to_session_id=msg.reply_to_session_id,
        session_id=msg.session_id,
        correlation_id=msg.correlation_id,
        application_properties=dict(msg.application_properties or {}),
        delivery_count=msg.delivery_count,
        enqueued_time=msg.enqueued_time_utc,
    )


@app.function_name("infer")
@app.service_bus_queue_trigger(
    arg_name="msg",
    queue_name=names.INFERENCE_REQUESTS,
    connection=names.SERVICEBUS_CONNECTION,
)
async def infer(msg: func.ServiceBusMessage) -> None:
    """inference-requests -> result blob, usage line, reply. Returns: completed; raises: retried."""
    await handle_inference_request(inbound_message(msg))

"""A throwaway app for the local host's tests: a timer every second, one run on startup only."""

from __future__ import annotations

import azure.functions as func

from tests.integration.sample_app.recorder import record

app = func.FunctionApp()


@app.function_name("tick")
@app.timer_trigger(arg_name="timer", schedule="*/1 * * * * *")
async def tick(timer: func.TimerRequest) -> None:
    record("tick", past_due=timer.past_due, status=getattr(timer, "schedule_status", None))


@app.function_name("on_startup")
@app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True)
def on_startup(timer: func.TimerRequest) -> None:
    record("startup", past_due=timer.past_due)

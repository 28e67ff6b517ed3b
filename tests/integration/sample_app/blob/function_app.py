"""A throwaway app for the local host's tests: a blob trigger that records each blob it got.
Blobs whose name starts with `fail` raise."""

from __future__ import annotations

import azure.functions as func

from tests.integration.sample_app.recorder import record

app = func.FunctionApp()


@app.function_name("on_upload")
@app.blob_trigger(
    arg_name="blob", path="%SAMPLE_CONTAINER%/in/{name}", connection="AzureWebJobsStorage"
)
def on_upload(blob: func.InputStream) -> None:
    data = blob.read()
    record("blob", name=blob.name, length=blob.length, uri=blob.uri, content=data.decode())
    if (blob.name or "").split("/")[-1].startswith("fail"):
        raise ValueError("asked to fail")

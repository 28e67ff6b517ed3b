"""A throwaway app for the local host's tests: HTTP triggers that echo, fail and answer plainly."""

from __future__ import annotations

import json

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="items/{id:int}", methods=["GET", "POST"])
async def item(req: func.HttpRequest) -> func.HttpResponse:
    echo = {
        "method": req.method,
        "route_params": dict(req.route_params),
        "params": dict(req.params),
        "body": req.get_body().decode(),
        "header": req.headers.get("x-sample"),
        "url": req.url,
    }
    return func.HttpResponse(
        json.dumps(echo), status_code=201, mimetype="application/json", headers={"x-echo": "1"}
    )


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("asked to fail")


@app.route(route="files/{*path}", methods=["GET"])
def files(req: func.HttpRequest) -> str:
    return f"path={req.route_params.get('path', '')}"


@app.route(route="nothing", methods=["DELETE"])
def nothing(req: func.HttpRequest) -> None:
    return None

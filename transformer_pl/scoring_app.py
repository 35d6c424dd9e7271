"""The HTTP server of `tpl serve`: MLflow's scoring app (the routes and answers of `mlflow models
serve`) behind a cap on the request body, with errors that say only what went wrong.

MLflow's server reads a body whole before the model's own limits (rows, characters, decoding)
can refuse it, so one huge request costs the server its memory. Here a body beyond the model's
`serve.max_request_bytes` (registered with it, like the other limits) is answered with a 413
naming the limit, without being read past the cap. And MLflow's error answers carry the request
back ("Failed to predict data '<the request>'") and, for unexpected errors, the server's stack
trace: here the client gets the error code and the model's own message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MODEL_URI_VARIABLE = "TPL_SERVE_MODEL_URI"  # what `create_app` serves: set by `tpl serve`
LIMIT_NAME = "serve.max_request_bytes"
# What MLflow's scoring server puts before the model's message when predict raises.
REQUEST_ECHO = re.compile(r"^Failed to predict data '.*'\. \nError: ", re.DOTALL)


class RequestBytesLimit:
    """ASGI middleware: an HTTP request whose body is longer than `max_bytes` (as its
    Content-Length declares, or counted as it streams in) gets a 413 naming the limit and never
    reaches `app`; its bytes are read and dropped, never held. Any other request reaches `app`
    unchanged, its body replayed whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        too_long = declared.isdigit() and int(declared) > self.max_bytes
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:  # a refused body is still read, and dropped: the client hears the answer
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            too_long = too_long or size > self.max_bytes
            if too_long:
                chunks.clear()
            else:
                chunks.append(chunk)
            more = message.get("more_body", False)
        if too_long:
            await self._refuse(send, size)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body: what the server says next (a disconnect)
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: int) -> None:
        message = f"a request body of {size} bytes; at most {self.max_bytes} ({LIMIT_NAME})"
        error = {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": message}
        content = json.dumps(error).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode("ascii")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


def quiet_error(body: bytes) -> bytes:
    """An MLflow error answer ({"error_code", "message", "stack_trace"?}) without the stack
    trace and without the request echoed before the message; any other body unchanged."""
    try:
        error = json.loads(body)
    except ValueError:
        return body
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return body
    error.pop("stack_trace", None)
    error["message"] = REQUEST_ECHO.sub("", error["message"])
    return json.dumps(error).encode("utf-8")


class QuietErrors:
    """ASGI middleware: an answer with a status of 400 or more goes out through `quiet_error`
    (its Content-Length set anew); any other answer passes unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None  # an error's start, sent once its body is complete
        chunks: list[bytes] = []

        async def send_quietly(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = quiet_error(b"".join(chunks))
                headers = [
                    (name, value)
                    for name, value in held.get("headers", ())
                    if name.lower() != b"content-length"
                ]
                headers.append((b"content-length", str(len(body)).encode("ascii")))
                await send({**held, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await self.app(scope, receive, send_quietly)


def create_app() -> ASGIApp:
    """The served app (a uvicorn factory): the model at `$TPL_SERVE_MODEL_URI` in MLflow's
    scoring app, its errors quieted, under the byte cap registered with it (ServeParams' default
    for a model registered without limits)."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    from transformer_pl.serving import BundleModel
    from transformer_pl.stage_sections import ServeParams

    model = mlflow.pyfunc.load_model(os.environ[MODEL_URI_VARIABLE])
    python_model = model.unwrap_python_model()
    limits = python_model.limits if isinstance(python_model, BundleModel) else ServeParams()
    return RequestBytesLimit(QuietErrors(scoring_server.init(model)), limits.max_request_bytes)

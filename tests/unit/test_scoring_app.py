"""What `tpl serve` puts around MLflow's scoring app (a byte cap, quiet errors), as an ASGI server
drives it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from transformer_pl.scoring_app import QuietErrors, RequestBytesLimit, quiet_error

MAX_BYTES = 100


class EchoApp:
    """Answers 200 with the number of body bytes it read; remembers whether it was called."""

    def __init__(self) -> None:
        self.called = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.called = True
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


def serve_request(chunks: list[bytes], declared: int | None = None) -> tuple[EchoApp, int, bytes]:
    """Drive the middleware with one request sent in `chunks`; (app, status, body) back."""
    app = EchoApp()
    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(RequestBytesLimit(app, MAX_BYTES)(scope, receive, send))
    status = next(message["status"] for message in sent if "status" in message)
    body = b"".join(message.get("body", b"") for message in sent)
    return app, status, body


def test_a_body_within_the_cap_reaches_the_app_whole() -> None:
    app, status, body = serve_request([b"x" * 60, b"y" * 40], declared=100)
    assert app.called and status == 200 and body == b"100"


@pytest.mark.parametrize(
    ("chunks", "declared", "says"),
    [
        ([b"x" * 101], 101, "a request body of 101 bytes"),  # declared too long
        ([b"x" * 60, b"y" * 60], None, "a request body of 120 bytes"),  # streamed
        ([b"x" * 60, b"y" * 60], 10, "a request body of 120 bytes"),  # declared short
    ],
    ids=["content-length", "chunked", "understated-length"],
)
def test_a_body_over_the_cap_gets_a_413_naming_the_limit(
    chunks: list[bytes], declared: int | None, says: str
) -> None:
    app, status, body = serve_request(chunks, declared)
    assert not app.called and status == 413
    error = json.loads(body)
    assert error["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert error["message"] == f"{says}; at most 100 (serve.max_request_bytes)"


def test_a_bodiless_request_passes_through() -> None:
    app, status, body = serve_request([b""], declared=None)
    assert app.called and status == 200 and body == b"0"


ECHOED = {
    "error_code": "INVALID_PARAMETER_VALUE",
    "message": "Failed to predict data '   text\n0  my private text'. \nError: 17 rows; at most 16",
    "stack_trace": 'Traceback (most recent call last):\n  File "/srv/app.py", line 1',
}


def test_quiet_error_drops_the_echoed_request_and_the_stack_trace() -> None:
    quiet = json.loads(quiet_error(json.dumps(ECHOED).encode()))
    assert quiet == {"error_code": "INVALID_PARAMETER_VALUE", "message": "17 rows; at most 16"}
    assert quiet_error(b"not json") == b"not json"
    assert quiet_error(b'{"predictions": []}') == b'{"predictions": []}'


class ErrorApp:
    """Answers with `status` and the JSON body ECHOED, in two chunks."""

    def __init__(self, status: int) -> None:
        self.status = status

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        body = json.dumps(ECHOED).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body[:10], "more_body": True})
        await send({"type": "http.response.body", "body": body[10:]})


@pytest.mark.parametrize(("status", "quieted"), [(400, True), (200, False)])
def test_errors_go_out_quiet_and_other_answers_unchanged(status: int, quieted: bool) -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    asyncio.run(QuietErrors(ErrorApp(status))({"type": "http"}, receive, send))
    body = b"".join(message.get("body", b"") for message in sent)
    assert sent[0]["status"] == status
    assert ("stack_trace" not in json.loads(body)) is quieted
    assert int(dict(sent[0]["headers"])[b"content-length"]) == len(body)

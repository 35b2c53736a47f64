"""Request-size bound: an ASGI middleware refusing bodies over a byte limit with 413.

It checks ``Content-Length`` first and also counts the bytes of bodies sent without one (chunked),
so no request body larger than the limit is ever held in memory.
"""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

__all__ = ["BodySizeLimit"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodySizeLimit:
    """Wrap an ASGI app so that HTTP request bodies above ``max_bytes`` get 413 Payload Too Large."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _refuse(send, 400, "Content-Length is not a number")
                return
            if declared > self.max_bytes:
                await _refuse(send, 413, f"request body of {declared} bytes is over the limit of {self.max_bytes}")
                return
            await self.app(scope, receive, send)
            return
        # no declared length: read the body up to the limit, then replay it to the app
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await _refuse(send, 413, f"request body is over the limit of {self.max_bytes} bytes")
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

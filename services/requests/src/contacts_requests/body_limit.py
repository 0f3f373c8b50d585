"""A ceiling on request bodies, checked before anything else reads them (authentication
included): a declared `Content-Length` over the limit is answered 413 at once, and a body sent
without one (chunked) is read only up to the limit. No route of the API or the pages takes more
than a few hundred bytes; 64 KiB leaves room and keeps a flood from costing memory."""

from __future__ import annotations

import json
from typing import Any

MAX_BODY_BYTES = 64 * 1024


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413 problem details and never reaches `app`.

    A body within the limit is buffered (at most `max_bytes`) and handed on unchanged."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # only ever http.disconnect from here on
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        problem = {
            "type": "about:blank",
            "title": "Request body too large",
            "status": 413,
            "detail": f"A request body may hold at most {self.max_bytes} bytes.",
        }
        content = json.dumps(problem).encode()
        headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(content)).encode()), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": content})

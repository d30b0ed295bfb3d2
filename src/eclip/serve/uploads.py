"""A quota for what HTTP clients may post: request bodies capped, Gradio's upload route swept.

Gradio's upload route stores whatever is posted to it, up to its per-file limit but for any
number of files per request, and keeps it until its cache is cleared, whether or not a job ever
uses it. `BodyLimit`, an ASGI middleware in front of the whole app, caps every request body before
it is read (uploads at the upload limit plus the multipart overhead, any other post at a small
size; a body of unknown length is refused), makes room in Gradio's area before an upload is read
and sweeps it after (`Workspace.sweep_gradio`: oldest first, to its quota in bytes and files, and
what is older than `max_age`).
"""
from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from eclip.serve.workspace import Workspace

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around an upload's bytes
OTHER_BODY = 1 << 20  # a job's JSON (texts, choices, file references) is a few kB


class BodyLimit:
    """ASGI middleware: refuse bodies over their limit (413) or of unknown length (411); keep uploads in quota."""

    def __init__(self, app: ASGIApp, workspace: Workspace, upload_bytes: int, other_bytes: int = OTHER_BODY,
                 max_age: float = 3600.0) -> None:
        self.app = app
        self.workspace = workspace
        self.upload_bytes = upload_bytes + MULTIPART_SLACK
        self.other_bytes = other_bytes
        self.max_age = max_age
        self._incoming = 0  # bytes of the uploads being read now
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        upload = scope["path"].rstrip("/").endswith("/upload")
        limit = self.upload_bytes if upload else self.other_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is None or not length.strip().isdigit():
            await _refuse(send, 411, "a request body needs a Content-Length header")
            return
        if int(length) > limit:
            await _refuse(send, 413, f"request body of {int(length)} bytes is over this server's limit of {limit} bytes")
            return
        if not upload:
            await self.app(scope, receive, send)
            return
        with self._lock:
            self._incoming += int(length)
        try:
            await anyio.to_thread.run_sync(lambda: self.workspace.sweep_gradio(self._incoming))
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self._incoming -= int(length)
            await anyio.to_thread.run_sync(lambda: self.workspace.sweep_gradio(self._incoming, self.max_age))


async def _refuse(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})

"""Request bodies are bounded before anything reads them whole.

(FastAPI's own ``max_body_size`` answers a plain-text 413, not a problem.)"""

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, problem_response


class BodySizeLimitMiddleware:
    """413 at once for a declared Content-Length over the limit; a chunked body that
    grows past it fails the read that crosses the limit, so no request fills memory."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"The request body is larger than the limit of {self.max_bytes} bytes."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = problem_response(
                Request(scope),
                slug=PayloadTooLarge.slug,
                title=PayloadTooLarge.title,
                status=PayloadTooLarge.status,
                detail=self._detail(),
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPException from a body read; the problem
                    # handler renders it.
                    raise HTTPException(413, detail=self._detail())
            return message

        await self.app(scope, counting_receive, send)

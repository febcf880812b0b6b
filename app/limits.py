"""Request bodies are bounded before anything reads them whole.

(FastAPI's own ``max_body_size`` answers a plain-text 413, not a problem.)"""

import re

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge
from app.problems import problem_response

# File uploads are streamed by their routes, never read whole, so they have their own
# (larger) bound instead of the global one.
UPLOAD_PATHS = re.compile(
    r"^/v1/coupon-sets/[^/]+/(?:redemption-)?imports/?$|^/v1/deliveries/[^/]+/recipients/?$"
    r"|^/ui/sets/[^/]+/imports/?$"  # the dashboard's import form (app/ui/sets.py)
)


class BodySizeLimitMiddleware:
    """413 at once for a declared Content-Length over the limit; a chunked body that
    grows past it fails the read that crosses the limit, so no request fills memory.
    Uploads (``UPLOAD_PATHS``) are bounded by ``max_upload_bytes`` instead."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, max_upload_bytes: int | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = UPLOAD_PATHS.match(scope["path"]) is not None
        limit = self.max_upload_bytes if upload else self.max_bytes
        detail = f"The request body is larger than the limit of {limit} bytes."
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            too_large = PayloadTooLarge(detail, headers={"Connection": "close"})
            response = problem_response(Request(scope), too_large)
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTPException from a body read; the problem
                    # handler renders it.
                    raise HTTPException(413, detail=detail)
            return message

        await self.app(scope, counting_receive, send)

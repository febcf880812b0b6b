"""Bounds on request heads, enforced in the HTTP protocol before anything is buffered.

uvicorn's httptools protocol keeps every header it is sent and waits for ever for a
head that never ends. ``BoundedHttpToolsProtocol`` adds three bounds, for ``make run``
and the container alike (``app.serve`` passes it to uvicorn):

- the head (request line and headers) may take ``COUPONS_MAX_HEADER_BYTES`` bytes;
  past that the connection gets a ``431`` problem and is closed — counted as the bytes
  arrive, so memory stays within the bound plus one read;
- at most ``COUPONS_MAX_HEADERS`` header fields (``431`` likewise);
- a connection must finish each head within ``COUPONS_HEADER_TIMEOUT_SECONDS`` of its
  first byte (or of connecting): one that trickles a header line now and then
  (slowloris) is closed with a ``408``."""

import asyncio
import json

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import Settings, get_settings

_LINGER_SECONDS = 2.0


class _TooManyHeaders(Exception):
    pass


def _problem(status: int, reason: str, slug: str, detail: str) -> bytes:
    body = json.dumps(
        {
            "type": f"urn:coupons:problem:{slug}",
            "title": reason,
            "status": status,
            "detail": detail,
        }
    ).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads (see the module)."""

    limits: Settings | None = None  # set by app.serve; workers read the environment

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        settings = self.limits or get_settings()
        self._max_bytes = settings.max_header_bytes
        self._max_count = settings.max_headers
        self._timeout = settings.header_timeout_seconds
        self._in_head = True
        self._head_bytes = 0
        self._head_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._closing = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # refused: what still arrives is dropped unread
        if not self._in_head:
            super().data_received(data)
            return
        self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _TooManyHeaders):
                self._refuse(f"A request may have at most {self._max_count} header fields.")
                return
            self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        if self._in_head and self._head_bytes > self._max_bytes:
            self._refuse(f"The request line and headers may take at most {self._max_bytes} bytes.")

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_count = 0
        if self._head_timer is None:
            self._arm()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        if self._head_count > self._max_count:
            raise _TooManyHeaders
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # Whatever arrives after this request's body is the next request's head.
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self._timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.logger.info("closing a connection that did not send its headers in time")
            self._answer_and_close(
                _problem(408, "Request Timeout", "request-timeout", "The headers took too long.")
            )

    def _refuse(self, detail: str) -> None:
        self._disarm()
        self.logger.info("refused a request head: %s", detail)
        self._answer_and_close(
            _problem(
                431,
                "Request Header Fields Too Large",
                "request-header-fields-too-large",
                detail,
            )
        )

    def _answer_and_close(self, response: bytes) -> None:
        """Send ``response`` and close gracefully: closing at once with unread bytes in the
        socket would send a reset that can destroy the answer before the client reads
        it, so the write side is shut and what arrives is dropped for a moment first."""
        self._disarm()
        self._closing = True
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def _bad_request(self) -> None:
        self._disarm()
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

"""A real HTTP receiver of webhooks for the tests: a threaded server on 127.0.0.1 that
records every request and answers as the test says (status, headers, a delay)."""

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float
    # How many requests with this webhook-id came before this one.
    seen_before: int

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, *secrets: str) -> dict[str, Any]:
        """The body, after the signature was checked with the standardwebhooks library
        under each secret given (every one must match)."""
        payload: dict[str, Any] = {}
        for secret in secrets:
            payload = Webhook(secret).verify(self.body, self.headers)
        return payload


# An answer: (status, headers, seconds to wait first).
Answer = tuple[int, dict[str, str], float]
Behaviour = Callable[[Delivery], Answer]


@dataclass
class Receiver:
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    behaviour: Behaviour = lambda _: (200, {}, 0.0)
    in_flight: dict[str, int] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of_type(self, kind: str) -> list[Delivery]:
        return [d for d in self.deliveries if json.loads(d.body)["type"] == kind]

    def wait_for(self, predicate: Callable[["Receiver"], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {len(self.deliveries)} deliveries")
            time.sleep(0.05)

    async def until(self, predicate: Callable[["Receiver"], bool], within: float = 15.0) -> None:
        """``wait_for`` for tests whose app runs in the same event loop."""
        deadline = time.monotonic() + within
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {len(self.deliveries)} deliveries")
            await asyncio.sleep(0.05)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            with receiver.lock:
                msg_id = headers.get("webhook-id", "")
                before = sum(1 for d in receiver.deliveries if d.id == msg_id)
                delivery = Delivery(headers, body, time.monotonic(), before)
                receiver.deliveries.append(delivery)
                if receiver.in_flight.get(msg_id):
                    receiver.overlaps.append(msg_id)
                receiver.in_flight[msg_id] = receiver.in_flight.get(msg_id, 0) + 1
            try:
                status, extra, delay = receiver.behaviour(delivery)
                if delay:
                    time.sleep(delay)
                payload = b"ok"
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with receiver.lock:
                    receiver.in_flight[msg_id] -= 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    ThreadingHTTPServer.request_queue_size = 1024  # the dispatcher opens many connections
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()

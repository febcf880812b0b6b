"""Request heads are bounded in the HTTP protocol: size and count (431), and time (closed).

A real uvicorn server on a loopback port, with the protocol ``app.serve`` uses, in front
of a tiny ASGI app (the bounds act before any route, so no database is involved)."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from app.http_limits import BoundedHttpToolsProtocol
from app.settings import Settings

MAX_BYTES = 8192
MAX_HEADERS = 20
TIMEOUT = 0.5


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = json.dumps({"headers": len(scope["headers"]), "body": size}).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def port(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    limits = Settings(
        environment="test",
        max_header_bytes=MAX_BYTES,
        max_headers=MAX_HEADERS,
        header_timeout_seconds=TIMEOUT,
    )
    monkeypatch.setattr(BoundedHttpToolsProtocol, "limits", limits)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = int(sock.getsockname()[1])
    config = uvicorn.Config(
        _echo, host="127.0.0.1", port=free, http=BoundedHttpToolsProtocol, log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    yield free
    server.should_exit = True
    await task


async def _exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


def _head(*headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} / HTTP/1.1", "Host: x", "Connection: close", *headers, "", ""]
    return "\r\n".join(lines).encode()


async def test_an_ordinary_request_passes(port: int) -> None:
    answer = await _exchange(port, _head(*[f"X-{i}: v" for i in range(MAX_HEADERS - 2)]))
    assert answer.startswith(b"HTTP/1.1 200")


async def test_a_large_body_is_not_counted_as_head(port: int) -> None:
    body = b"x" * (MAX_BYTES * 20)
    head = _head(f"Content-Length: {len(body)}", method="POST")
    answer = await _exchange(port, head, body)
    assert answer.startswith(b"HTTP/1.1 200")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["body"] == len(body)


async def test_too_many_headers_are_431(port: int) -> None:
    answer = await _exchange(port, _head(*[f"X-{i}: v" for i in range(MAX_HEADERS + 1)]))
    assert answer.startswith(b"HTTP/1.1 431")
    problem = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert problem["type"] == "urn:coupons:problem:request-header-fields-too-large"
    assert str(MAX_HEADERS) in problem["detail"]


async def test_a_huge_header_is_refused_before_it_is_read(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(reader.read())
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    try:
        # The server answers and stops listening long before 10 MB are sent.
        while sent < 10_000_000 and not answer.done():
            writer.write(b"a" * 65536)
            await writer.drain()
            sent += 65536
    except ConnectionError:
        pass
    assert (await asyncio.wait_for(answer, timeout=5)).startswith(b"HTTP/1.1 431")
    writer.close()
    assert sent < 10_000_000


async def test_a_head_that_trickles_in_is_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    answer = b""
    try:
        read = asyncio.create_task(reader.read())
        for i in range(int(TIMEOUT * 10 / 0.1)):  # a header line every 0.1 s, for 10x the limit
            if read.done():
                break
            writer.write(f"X-{i % 5}: v\r\n".encode())
            await writer.drain()
            await asyncio.sleep(0.1)
        answer = await asyncio.wait_for(read, timeout=5)
    except ConnectionError:
        pass
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408")


async def test_an_idle_connection_is_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await asyncio.wait_for(reader.read(), timeout=5)).startswith(b"HTTP/1.1 408")
    writer.close()

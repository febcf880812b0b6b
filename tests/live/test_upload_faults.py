"""Uploads that go wrong on the wire, against a running server over a raw socket: a
chunked body past the upload limit, and a client that goes away mid-body."""

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.conftest import ADMIN_SECRET, _libpq
from tests.helpers import create_set
from tests.live.conftest import serve

HEADERS = {"Authorization": f"Bearer {ADMIN_SECRET}"}
LIMIT = 300_000
BOUNDARY = "b0undary"


def _head(url: str, path: str, content_type: str) -> bytes:
    host = urlsplit(url).netloc
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN_SECRET}\r\n"
        f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


_MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
_FILE_START = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="c.csv"\r\n'
    "Content-Type: text/csv\r\n\r\n"
).encode()


def _rows(start: int, count: int) -> bytes:
    return b"".join(f"C-{n:08d}\r\n".encode() for n in range(start, start + count))


# What goes on the wire for each kind of upload: path, content type, the start of the body.
UPLOADS = {
    "codes": ("/v1/coupon-sets/big/imports", _MULTIPART, _FILE_START + b"code\r\n"),
    # A repeat at once: the fast COPY gives way and the rest is spooled for the staged path.
    "codes-staged": (
        "/v1/coupon-sets/big/imports",
        _MULTIPART,
        _FILE_START + b"code\r\nSAME\r\nSAME\r\n",
    ),
    "redemptions": (
        "/v1/coupon-sets/big/redemption-imports",
        _MULTIPART,
        _FILE_START + b"code,redeemed_at\r\n",
    ),
    "recipients": ("/v1/deliveries/{delivery}/recipients", "text/csv", b"recipient_id\r\n"),
}


async def _open(
    url: str, kind: str, delivery: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    path, content_type, start = UPLOADS[kind]
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(_head(url, path.format(delivery=delivery), content_type) + _chunk(start))
    await writer.drain()
    return reader, writer


async def _idle_in_transaction(database_url: str) -> int:
    connection = await asyncpg.connect(_libpq(database_url))
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await connection.close()


async def _jobs(http: httpx.AsyncClient, key: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    for path in ("imports", "redemption-imports"):
        items += (await http.get(f"/v1/coupon-sets/{key}/{path}")).json()["items"]
    return items


async def _until(condition: object, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not reached in time")


@pytest.fixture(scope="module")
def limited(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """One server for this module, with a small upload limit and INFO logs; at the end,
    SIGTERM must stop it at once (nothing hung on an upload) and its log show no error."""
    log = tmp_path_factory.mktemp("uploads") / "server.log"
    with serve(database_url, log, max_upload_bytes=str(LIMIT), log_level="INFO") as (
        url,
        process,
    ):
        yield url, log
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        assert time.monotonic() - began < 10
    text = log.read_text()
    assert "ERROR" not in text, text
    assert "Traceback" not in text, text


@pytest.mark.parametrize("kind", list(UPLOADS))
async def test_a_chunked_upload_over_the_limit_is_413_at_once_and_leaves_nothing(
    limited: tuple[str, Path], database_url: str, app: object, kind: str
) -> None:
    url, _ = limited
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=30) as http:
        await create_set(http, key="big")
        delivery = await http.post("/v1/deliveries", json={"label": "d", "coupon_set_id": "big"})
        assert delivery.status_code == 201, delivery.text
        reader, writer = await _open(url, kind, delivery.json()["id"])
        sent, n = 0, 0
        answer = asyncio.create_task(reader.read(65_536))
        # Keep sending past the limit until the server answers (socket buffers hold a
        # few MB), then wait without ending the body: the answer may not need it.
        while not answer.done() and sent < 30 * LIMIT:
            block = _rows(n, 2_000)
            n += 2_000
            with contextlib.suppress(ConnectionError):
                writer.write(_chunk(block))
                await writer.drain()
            sent += len(block)
            await asyncio.sleep(0.005)
        response = await asyncio.wait_for(answer, 10)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        assert response.startswith(b"HTTP/1.1 413"), response[:200]
        assert b"application/problem+json" in response

        async def failed() -> bool:
            jobs = await _jobs(http, "big")
            return bool(jobs) and jobs[0]["status"] == "failed"

        if kind != "recipients":
            await _until(failed)
        codes = await http.get("/v1/coupon-sets/big/codes")
        assert codes.json()["items"] == []

        async def returned() -> bool:
            return await _idle_in_transaction(database_url) == 0

        await _until(returned)
        assert (await http.get("/v1/coupon-sets/big")).status_code == 200


async def test_a_client_gone_mid_upload_is_an_info_line_and_a_failed_job(
    limited: tuple[str, Path], database_url: str, app: object
) -> None:
    url, log = limited
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=30) as http:
        await create_set(http, key="big")
        _, writer = await _open(url, "codes", "")
        for n in range(0, 20_000, 2_000):
            writer.write(_chunk(_rows(n, 2_000)))
            await writer.drain()

        async def started() -> bool:
            return bool(await _jobs(http, "big"))

        await _until(started)
        writer.transport.abort()  # the socket closed mid-body, no final chunk

        async def failed() -> bool:
            return (await _jobs(http, "big"))[0]["status"] == "failed"

        await _until(failed)
        assert (await http.get("/v1/coupon-sets/big/codes")).json()["items"] == []
        metrics = (await http.get("/metrics")).text
        assert not [
            line
            for line in metrics.splitlines()
            if line.startswith("http_requests_total") and 'status="5xx"' in line
        ], metrics
        assert await _idle_in_transaction(database_url) == 0
    assert "the client went away during POST /v1/coupon-sets/big/imports" in log.read_text()

"""kill -9 of the service during a confirm, when the dead process's database backends
outlive it (still holding the confirm's locks): the restarted service fails the delivery
and gives its codes back within 60 s.

The service reaches PostgreSQL through a TCP relay that, like a network that lost the
connection's end, keeps its side to PostgreSQL open when the service dies: its backends
then wait for a client that will never come back, holding what they held."""

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import ADMIN_SECRET, _libpq
from tests.live.conftest import serve
from tests.live.test_delivery_concurrency import _delivery

HEADERS = {"Authorization": f"Bearer {ADMIN_SECRET}"}
TARGETS = 20_000


class Relay:
    """Copies bytes between clients and PostgreSQL, on an event loop of its own thread
    (the test's loop blocks while a server starts); a client that goes away does not
    close its connection to PostgreSQL (until ``close()``)."""

    def __init__(self, host: str, port: int, socket_dir: str | None = None) -> None:
        # The embedded server listens on a Unix socket only: relay to it there.
        self.target = (host, port)
        self.socket = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir else None
        self.upstream: list[asyncio.StreamWriter] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> int:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop
        )
        self.server = started.result(10)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.socket is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(self.socket)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.upstream.append(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, end: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65_536):
                    dst.write(data)
                    await dst.drain()
            if end:
                dst.close()

        # PostgreSQL's end is passed on to the client; the client's never is.
        await asyncio.gather(pipe(reader, up_writer, end=False), pipe(up_reader, writer, end=True))

    def close(self) -> None:
        def close_all() -> None:
            for writer in self.upstream:
                writer.close()
            self.server.close()

        self.loop.call_soon_threadsafe(close_all)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _state(database_url: str, delivery_id: str) -> tuple[str, int, int]:
    """The delivery's status, and the codes of its set assigned / free."""
    connection = await asyncpg.connect(_libpq(database_url))
    try:
        status = await connection.fetchval(
            "SELECT status FROM deliveries WHERE id = $1::uuid", delivery_id
        )

        assigned = await connection.fetchval(
            "SELECT count(*) FROM codes WHERE delivery_id = $1", delivery_id
        )
        free = await connection.fetchval("SELECT count(*) FROM codes WHERE status = 'available'")
        return str(status), int(assigned), int(free)
    finally:
        await connection.close()


async def _holders_of_confirm_locks(database_url: str) -> int:
    connection = await asyncpg.connect(_libpq(database_url))
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )
    finally:
        await connection.close()


@pytest.mark.timeout(300)
async def test_a_confirm_killed_with_its_backends_left_behind_is_failed_within_60_s(
    database_url: str, app: object, tmp_path: Path
) -> None:
    url = make_url(database_url)
    socket_dir = url.query.get("host")
    socket_dir = socket_dir if isinstance(socket_dir, str) and socket_dir.startswith("/") else None
    relay = Relay(url.host or "127.0.0.1", url.port or 5432, socket_dir)
    relayed = url.set(
        host="127.0.0.1",
        port=relay.start(),
        query={k: v for k, v in url.query.items() if k not in ("host", "port")},
    )
    try:
        with serve(
            relayed.render_as_string(hide_password=False),
            tmp_path / "first.log",
            confirm_batch_size="200",
            confirm_wait_seconds="0",
        ) as (first, process):
            async with httpx.AsyncClient(base_url=first, headers=HEADERS, timeout=60) as http:
                created = await http.post(
                    "/v1/coupon-sets", json={"label": "crash", "key": "crash"}
                )
                assert created.status_code == 201, created.text
                generated = await http.post(
                    "/v1/coupon-sets/crash/codes/generate", json={"count": TARGETS, "length": 12}
                )
                assert generated.status_code == 201, generated.text
                delivery_id = await _delivery(http, "crash", range(TARGETS))
                confirm = await http.post(f"/v1/deliveries/{delivery_id}/confirm")
                assert confirm.status_code == 202, confirm.text
                for _ in range(300):
                    body = (await http.get(f"/v1/deliveries/{delivery_id}")).json()
                    if body["processed"] > 0:
                        break
                    await asyncio.sleep(0.05)
                assert body["status"] == "sending", body
            process.kill()
            process.wait()
        # The dead process's backends are still there, holding the confirm's lock, and
        # its heartbeat is fresh: the restart must wait for it to go stale.
        status, assigned, _ = await _state(database_url, delivery_id)
        assert status == "sending"
        assert assigned > 0
        assert await _holders_of_confirm_locks(database_url) > 0

        with serve(database_url, tmp_path / "second.log") as (second, _):
            began = time.monotonic()
            while time.monotonic() - began < 60:
                status, assigned, free = await _state(database_url, delivery_id)
                if status != "sending":
                    break
                await asyncio.sleep(1)
            assert status == "failed", f"still {status} after 60 s"
            assert assigned == 0
            assert free == TARGETS
            async with httpx.AsyncClient(base_url=second, headers=HEADERS, timeout=60) as http:
                body = (await http.get(f"/v1/deliveries/{delivery_id}")).json()
                assert body["failure_reason"].startswith("interrupted"), body
                again = await http.post(f"/v1/deliveries/{delivery_id}/confirm")
                assert again.status_code in (200, 202), again.text
    finally:
        relay.close()

"""A real server for concurrency tests: ``python -m app.serve`` in a subprocess, on the
test database, so requests really run in parallel over real connections."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_SECRET

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not become ready:\n{log.read_text()}")
        time.sleep(0.2)


@contextmanager
def serve(
    database_url: str, log: Path, **settings: str
) -> Iterator[tuple[str, "subprocess.Popen[bytes]"]]:
    """``python -m app.serve`` on ``database_url``; COUPONS_* ``settings`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUPONS_")}
    port = _free_port()
    env |= {
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "COUPONS_ENVIRONMENT": "test",
        "COUPONS_ADMIN_API_KEY": ADMIN_SECRET,
        "COUPONS_LOG_LEVEL": "WARNING",
        # No webhook sending unless a test asks (its dispatcher would race the cleanup).
        "COUPONS_WEBHOOK_DISPATCH": "false",
        **{f"COUPONS_{name.upper()}": value for name, value in settings.items()},
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def live_instance(database_url: str, log: Path) -> Iterator[str]:
    """An instance for the concurrency tests (no rate limit in the way); its log must
    show no traceback when it stops."""
    # It sends no webhooks: the events tests start servers that do. The feed's long
    # polls answer within a second (the fuzz test draws waits of up to 30 s).
    with serve(
        database_url,
        log,
        redeem_rate_limit="100000/second",
        db_pool_timeout="30",
        webhook_dispatch="false",
        events_max_wait_seconds="1",
    ) as (
        url,
        _,
    ):
        yield url
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="session")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_instance(database_url, tmp_path_factory.mktemp("live") / "server.log") as url:
        yield url


@pytest.fixture
async def live(live_server: str, app: object) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the live server with the admin key. (``app`` gives the per-test
    cleanup and direct database access.)"""
    async with httpx.AsyncClient(
        base_url=live_server,
        headers={"Authorization": f"Bearer {ADMIN_SECRET}"},
        # Idle connections expire well before the server's 5 s keep-alive, so a request
        # never races the server closing its connection.
        limits=httpx.Limits(max_connections=400, max_keepalive_connections=400, keepalive_expiry=1),
        timeout=60,
    ) as client:
        yield client

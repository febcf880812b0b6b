"""``make run`` end to end: the embedded database, first-start key, clean stop, kept data."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUPONS_")}
        env.pop("DATABASE_URL", None)
        env |= {"COUPONS_DATA_DIR": str(data_dir), "PORT": str(self.port)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.serve"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.communicate()[0]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.process.kill()
        pytest.fail("the server did not become ready within 60 s")

    def stop(self, sig: signal.Signals) -> str:
        self.process.send_signal(sig)
        output, _ = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, output
        return output


def _postgres_running(data_dir: Path) -> bool:
    return (data_dir / "postgres" / "postmaster.pid").exists()


@pytest.mark.timeout(180)
def test_run_serves_on_an_embedded_database_and_keeps_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    first = Server(data_dir)
    assert _postgres_running(data_dir)
    # The first start finds no admin key, so it makes one and prints it once.
    output = first.stop(signal.SIGTERM)
    assert not _postgres_running(data_dir), "SIGTERM stops the embedded database too"
    match = re.search(r"\b(cpn_[A-Za-z0-9_-]{43})\b", output)
    assert match, output
    secret = match.group(1)
    assert output.count(secret) == 1, "the key is printed once and never logged"

    second = Server(data_dir)
    headers = {"Authorization": f"Bearer {secret}"}
    created = httpx.post(
        f"{second.url}/v1/coupon-sets", json={"label": "Kept", "key": "kept"}, headers=headers
    )
    assert created.status_code == 201, created.text
    output = second.stop(signal.SIGINT)
    assert "cpn_" not in output, "no second key on a later start"
    assert not _postgres_running(data_dir)

    third = Server(data_dir)
    fetched = httpx.get(f"{third.url}/v1/coupon-sets/kept", headers=headers)
    # The server `make run` starts bounds request heads (app/http_limits.py).
    crowded = httpx.get(f"{third.url}/healthz", headers={f"X-{i}": "v" for i in range(150)})
    third.stop(signal.SIGTERM)
    assert fetched.status_code == 200
    assert fetched.json()["label"] == "Kept"
    assert crowded.status_code == 431
    assert crowded.headers["content-type"] == "application/problem+json"

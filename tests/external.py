"""Programs the suite starts for itself from the machine's packages: Redis, and the
Chromium that drives the dashboard's tests (a program added here goes into the package
list of ``.ci/run`` in the same commit).

A test that needs one calls ``require(program, package)``: where the program is not
installed, ``make test`` skips the test and says so in its summary (``-ra``); under
``.ci/run``, which installs the packages first and sets COUPONS_TEST_REQUIRE_SERVICES=1,
a missing program is a failure instead, so CI never skips these tests."""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def require(program: str, package: str) -> str:
    """The path of ``program``, or a loud skip (a failure under CI)."""
    path = shutil.which(program) or next(
        (str(p) for p in (Path("/usr/sbin") / program, Path("/usr/bin") / program) if p.exists()),
        None,
    )
    if path:
        return path
    message = f"{program} is not installed (apt-get install -y {package}); .ci/run installs it"
    if os.environ.get("COUPONS_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited with {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def chromium_path() -> str:
    """Debian's Chromium, for Playwright (tests/ui). Playwright never downloads a browser
    here: it is pointed at this one with ``executable_path``."""
    return require("chromium", "chromium")


@contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away Redis on a free loopback port; yields its redis:// URI."""
    program = require("redis-server", "redis-server")
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - a program from the PATH, fixed arguments
        [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)

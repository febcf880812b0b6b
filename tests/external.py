"""Programs the suite starts for itself from the machine's packages: Redis, PgBouncer,
and the Chromium that drives the dashboard's tests (a program added here goes into the
package list of ``.ci/run`` in the same commit).

A test that needs one calls ``require(program, package)``: where the program is not
installed, ``make test`` skips the test and says so in its summary (``-ra``); under
``.ci/run``, which installs the packages first and sets COUPONS_TEST_REQUIRE_SERVICES=1,
a missing program is a failure instead, so CI never skips these tests."""

import os
import shutil
import socket
import subprocess
import tempfile
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


def _unprivileged(command: list[str], owner: Path | None = None) -> list[str]:
    """``command`` as an unprivileged user when the tests run as root (PgBouncer refuses
    to run as root): the owner of ``owner`` (a server's socket folder, which only its
    owner may enter) when that is not root, else ``nobody``; as it is otherwise.
    setpriv execs in place: the process started is the server itself, so terminating it
    stops the server."""
    if os.geteuid() != 0:
        return command
    user, group = "nobody", "nogroup"
    if owner is not None and owner.is_dir() and owner.stat().st_uid != 0:
        user, group = str(owner.stat().st_uid), str(owner.stat().st_gid)
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, f"--reuid={user}", f"--regid={group}", "--clear-groups", *command]
    return ["runuser", "-u", user, "--", *command]


@contextmanager
def pgbouncer_server(server_url: str, *, pool_size: int = 20) -> Iterator[str]:
    """A throw-away PgBouncer in transaction mode in front of the PostgreSQL of
    ``server_url`` (any database on it), on a free loopback port; yields
    ``server_url`` with PgBouncer's host and port. Its clients authenticate by trust
    (loopback only); it logs in to PostgreSQL with the URL's user and password."""
    program = require("pgbouncer", "pgbouncer")
    with run_pgbouncer(program, server_url, pool_size=pool_size) as (url, _):
        yield url


@contextmanager
def run_pgbouncer(
    program: str, server_url: str, *, pool_size: int = 20
) -> Iterator[tuple[str, "subprocess.Popen[bytes]"]]:
    """``pgbouncer_server`` with the program given (the benchmarks use it too); yields
    the URL and the process."""
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    host = url.host or str(url.query.get("host", "127.0.0.1"))  # or a socket's folder
    port = url.port or int(str(url.query.get("port", 5432)))
    user, password = url.username or "postgres", url.password or ""
    listen = free_port()
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    folder.chmod(0o755)  # read by the unprivileged user
    (folder / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={host} port={port}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {listen}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {folder / 'userlist.txt'}\n"
        "pool_mode = transaction\n"
        "max_client_conn = 2000\n"
        f"default_pool_size = {pool_size}\n"
        "ignore_startup_parameters = extra_float_digits\n"
        "server_reset_query =\n"
        "log_connections = 0\n"
        "log_disconnections = 0\n"
    )
    for file in folder.iterdir():
        file.chmod(0o644)
    log = (folder / "pgbouncer.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - a program from the PATH, fixed arguments
        _unprivileged([program, str(folder / "pgbouncer.ini")], Path(host)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_for_port(listen, process)
        except (AssertionError, TimeoutError):
            raise RuntimeError((folder / "pgbouncer.log").read_text()) from None
        bouncer = url.set(host="127.0.0.1", port=listen, query={})
        yield bouncer.render_as_string(hide_password=False), process
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)

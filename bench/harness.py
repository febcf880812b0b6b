"""What the benchmarks share: server processes, the embedded PostgreSQL, CPU accounting.

Kept apart from the benchmarks themselves so each of them reads as its steps."""

import asyncio
import contextlib
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
T = TypeVar("T")


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def background(
    cmd: list[str], *, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, stopped (SIGTERM, then SIGKILL) however the block is left.

    Its own session, so a Ctrl-C reaches only this script, which then stops the
    servers in order (service before database) instead of all at once."""
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own fixed command line
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Interrupted(Exception):
    """SIGTERM, turned into an exception so every ``with`` block cleans up."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Interrupted


def in_workdir(prefix: str, logs: Sequence[str], run: Callable[[Path], T]) -> T | None:
    """``run`` in a throw-away folder, which it gets; None if it was interrupted (Ctrl-C
    or SIGTERM: every process it started is stopped on the way out). On an error, the
    last lines of the servers' ``logs`` in the folder are printed before it goes on."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        workdir = Path(tmp)
        try:
            return run(workdir)
        except (KeyboardInterrupt, Interrupted):
            print("\ninterrupted; everything started was stopped", file=sys.stderr)
            return None
        except Exception:
            for log in logs:
                if (workdir / log).exists():
                    print(f"--- {log} ---\n{tail(workdir / log)}", file=sys.stderr)
            raise


def run_benchmark(
    prefix: str,
    logs: Sequence[str],
    run: Callable[[Path], T],
    report: Callable[[T, Path], str],
    write: Callable[[str], None] | None,
) -> int:
    """A wrk benchmark's ``main``: ``run`` in a throw-away folder (see ``in_workdir``),
    then ``report`` of its results (which may print what went wrong, and returns its
    section of docs/benchmarks.md), printed and, unless ``write`` is None, written. The
    exit status: 2 without wrk, 130 if interrupted."""
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk (or brew install wrk)", file=sys.stderr)
        return 2
    section = in_workdir(prefix, logs, lambda workdir: report(run(workdir), workdir))
    if section is None:
        return 130
    print("\n" + section)
    if write is not None:
        write(section)
        print("written to docs/benchmarks.md")
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Until ``url`` answers 200 (the server migrated and listens), or fail with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s:\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------------- CPU


def _processes() -> dict[int, tuple[int, int]]:
    """Every process: pid -> (parent pid, utime + stime in clock ticks)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                found[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return found


def tree_ticks(root: int) -> dict[int, int]:
    """CPU ticks of ``root`` and all its descendants: a PostgreSQL server (postmaster,
    backends, checkpointer, ...) or an HTTP server with its worker processes. Other
    servers on the machine are left out."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in processes:
            found[pid] = processes[pid][1]
            todo.extend(children.get(pid, []))
    return found


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Cpu:
    """Cores used during a measurement (CPU seconds / wall seconds); 2.0 = both cores.
    ``server``: the HTTP server's processes (one, unless it runs workers)."""

    server: float = 0.0
    postgres: float = 0.0
    loadgen: float = 0.0
    machine: float = 0.0

    @property
    def other(self) -> float:
        """Everything else on the machine: this script, anything another user runs."""
        return max(self.machine - self.server - self.postgres - self.loadgen, 0.0)

    def describe(self) -> str:
        server = f"{self.server:.2f}" if self.server else "-"
        return (
            f"{server} / {self.postgres:.2f} / {self.loadgen:.2f} / {self.other:.2f} "
            f"({self.machine:.2f})"
        )


@contextlib.contextmanager
def measure_cpu(postmaster: int, server_pid: int | Sequence[int] | None = None) -> Iterator[Cpu]:
    """Where the CPU went while the block ran: the HTTP server (or servers: every pid of
    ``server_pid``), PostgreSQL, the load generator (wrk or pgbench: the children this
    script waits for), and the rest.

    Processes come and go (pgbench's backends end before it does), so a thread samples
    the process trees every 0.25 s and keeps the last figure of each process."""
    hz = os.sysconf("SC_CLK_TCK")
    servers = [server_pid] if isinstance(server_pid, int) else list(server_pid or [])
    roots = {"postgres": [postmaster], "server": servers}

    def ticks(name: str) -> dict[int, int]:
        return {pid: t for root in roots[name] for pid, t in tree_ticks(root).items()}

    start = {name: ticks(name) for name in roots}
    seen = {name: dict(found) for name, found in start.items()}
    stop = threading.Event()

    def sample() -> None:
        for name in roots:
            seen[name].update(ticks(name))

    def keep_sampling() -> None:
        while not stop.wait(0.25):
            sample()

    sampler = threading.Thread(target=keep_sampling, daemon=True)
    began = time.monotonic()
    gen0 = _children_cpu()
    busy0, total0 = _machine_ticks()
    sampler.start()
    try:
        cpu = Cpu()
        yield cpu
    finally:
        stop.set()
        sampler.join()
    sample()
    wall = time.monotonic() - began
    busy1, total1 = _machine_ticks()

    def cores(name: str) -> float:
        used = sum(t - start[name].get(pid, 0) for pid, t in seen[name].items())
        return used / hz / wall

    cpu.postgres = cores("postgres")
    cpu.server = cores("server")
    cpu.loadgen = (_children_cpu() - gen0) / wall
    cpu.machine = (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


def background_load(seconds: float = 3.0) -> float:
    """Cores busy before the benchmark starts anything: another user's tests, say."""
    busy0, total0 = _machine_ticks()
    time.sleep(seconds)
    busy1, total1 = _machine_ticks()
    return (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


# --------------------------------------------------------------------------- database


class Database:
    """A synchronous front to one asyncpg connection: the benchmarks drive processes and
    wait on them, which is simplest in plain synchronous code."""

    def __init__(self, dsn: str) -> None:
        self._runner = asyncio.Runner()
        self._conn: asyncpg.Connection = self._runner.run(asyncpg.connect(dsn))

    def execute(self, sql: str, *args: Any) -> str:
        return str(self._runner.run(self._conn.execute(sql, *args)))

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return list(self._runner.run(self._conn.fetch(sql, *args)))

    def value(self, sql: str, *args: Any) -> Any:
        return self._runner.run(self._conn.fetchval(sql, *args))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._runner.run(self._conn.close())
        self._runner.close()


@contextlib.contextmanager
def connect(dsn: str) -> Iterator[Database]:
    db = Database(dsn)
    try:
        yield db
    finally:
        db.close()


@dataclass
class Server:
    """The embedded PostgreSQL: where its socket is, and URLs of its databases."""

    socket_dir: str
    asyncpg_url: str  # postgresql+asyncpg://..., for the service's DATABASE_URL
    postmaster: int  # its pid, whose children are the server's processes

    def dsn(self, database: str) -> str:
        """A libpq URL (asyncpg, the naive app)."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def service_url(self, database: str) -> str:
        """A postgresql+asyncpg URL, for the service's DATABASE_URL."""
        url = make_url(self.asyncpg_url).set(database=database)
        return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def embedded_postgres(workdir: Path) -> Iterator[Server]:
    from app.embedded import EmbeddedPostgres

    data_dir = workdir / "pg"
    with EmbeddedPostgres(data_dir, delete_on_exit=True) as pg:
        url = pg.url()
        socket_dir = parse_qs(urlsplit(url).query)["host"][0]
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        yield Server(socket_dir=socket_dir, asyncpg_url=url, postmaster=postmaster)


def create_database(server: Server, name: str) -> None:
    with connect(server.dsn("postgres")) as db:
        db.execute(f'CREATE DATABASE "{name}"')


# -------------------------------------------------------------------------- the docs


def write_section(path: Path, title: str, section: str, intro: str = "# Benchmarks\n") -> None:
    """Replace the section headed ``title`` in ``path`` (or append it), keeping the
    intro and every other section; ``intro`` starts a file that does not exist yet."""
    text = path.read_text() if path.exists() else intro
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


# ---------------------------------------------------------------------- memory


def tree_rss_kb(root: int) -> int:
    """Resident memory of ``root`` and its descendants (uvicorn workers), in KiB."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            todo.extend(int(child) for child in children)
    return total


class MemorySampler:
    """The service's resident memory (its process tree) before, at its peak while a
    block runs (sampled every 20 ms) and after."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before_kb = tree_rss_kb(pid)
        self.peak_kb = self.before_kb
        self.after_kb = self.before_kb
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kb = max(self.peak_kb, tree_rss_kb(self.pid))
            self.samples += 1

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.after_kb = tree_rss_kb(self.pid)


# ---------------------------------------------------------------------- the machine


def source_version() -> str:
    """The commit measured, and whether the service's code differed from it (read-only)."""
    git = shutil.which("git")
    if git is None:
        return "unknown commit"
    head = subprocess.run(  # noqa: S603 - our own fixed command line
        [git, "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    if head.returncode != 0:
        return "unknown commit"
    dirty = subprocess.run(  # noqa: S603 - our own fixed command line
        [git, "status", "--porcelain", "--", "app", "migrations", "uv.lock"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    edited = " plus uncommitted changes to the service" if dirty else ""
    return f"commit {head.stdout.strip()}{edited}"


def machine(server: Server) -> dict[str, str]:
    """What the figures were measured on, for the report."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    mem_kb = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.MULTILINE)
    wrk = subprocess.run(  # noqa: S603 - our own fixed command line
        [shutil.which("wrk") or "wrk", "-v"], capture_output=True, text=True, check=False
    )
    with connect(server.dsn("postgres")) as db:
        pg = db.value("SHOW server_version")
        pg_settings = {
            name: db.value(f"SHOW {name}")
            for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections")
        }
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("uvicorn", "fastapi", "sqlalchemy", "asyncpg", "uvloop", "httptools")
    )
    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "ram": f"{int(mem_kb.group(1)) / 1024**2:.0f} GB" if mem_kb else "?",
        "os": f"{platform.system()} {platform.release()}",
        "postgres": f"PostgreSQL {pg} (embedded, "
        + ", ".join(f"{k}={v}" for k, v in pg_settings.items())
        + ")",
        "python": f"Python {platform.python_version()} ({versions})",
        # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer": name and version
        "wrk": " ".join((wrk.stdout or wrk.stderr).split()[:2]),
    }


# ------------------------------------------------------------------------------- docs

"""The assignment benchmark (targets B1 and B2): ``make bench-assign``.

``.venv/bin/python -m bench.assign`` starts a throw-away embedded PostgreSQL and, against
that one server, in one run:

1. anchor: pgbench running the best plain-SQL single-code claim (bench/claim.sql, each
   client keeping its last claimed id as its scan hint) at 1, 8, 16 and 64 clients, each
   on its own fresh pool of codes; the best of them is the anchor;
2. naive: a minimal FastAPI endpoint claiming one code per request (bench/naive_app.py);
3. service: ``POST /v1/coupon-sets/{set}/assignments`` of the real service;
4. drain: the service's rate while a pool drains from 100 % to 1 % free.

HTTP load comes from wrk (bench/post.lua: a distinct recipient per request) on the same
machine. The figures go to the "Assignment (B1, B2)" section of docs/benchmarks.md.
Every process started here is stopped on the way out, also on error or Ctrl-C.

The drain's pool is sized to what the service drains in about two minutes at its B1 rate
(the quality bar's 1,000,000 codes take far longer on 2 cores unless the service is
fast); ``--drain-codes`` fixes it. The service runs with the environment it is given, so
``COUPONS_WORKERS=2 make bench-assign`` measures two workers. Takes about 5 minutes."""

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    PYTHON,
    ROOT,
    Cpu,
    Database,
    Server,
    background,
    background_load,
    connect,
    create_database,
    embedded_postgres,
    free_port,
    machine,
    measure_cpu,
    run_benchmark,
    source_version,
    tail,
    wait_http,
    write_section,
)

BENCH = ROOT / "bench"
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Assignment (B1, B2)"

# Targets of the quality bar (shared/docs/quality.md).
B1_VS_ANCHOR = 0.5
B1_VS_NAIVE = 2.0
B1_P99_MS = 25.0
B2_END_VS_START = 0.8

DRAIN_WINDOW_S = 5.0  # the drain's rate is reported per window of this length
DRAIN_END_FREE = 0.01  # stop the drain at 1 % free: an empty pool answers 409

INTRO = """# Benchmarks

Figures written by the benchmarks in `bench/`, one section per benchmark; each section
names the command that refreshes it. Timings on a shared 2-core machine vary by up to 2x
between runs, so every target is a ratio against an anchor (usually `pgbench` running the
best plain SQL) measured in the same run on the same PostgreSQL server, or an absolute
bound loose enough for any ordinary machine. The targets are B1-B7 in the quality bar
(`shared/docs/quality.md`); the benchmarks are not part of the test suite's pass/fail.
"""


# ----------------------------------------------------------------------------- wrk


@dataclass
class Load:
    """One wrk run."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    first_errors: list[str]
    cpu: Cpu = field(default_factory=Cpu)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))


@dataclass
class WrkSettings:
    threads: int
    connections: int
    timeout_s: int = 10

    def describe(self) -> str:
        return (
            f"{self.threads} threads, {self.connections} connections (HTTP/1.1 keep-alive): "
            f"`wrk -t{self.threads} -c{self.connections} -d<seconds>s "
            f"--timeout={self.timeout_s}s -s bench/post.lua <url> -- <path> <body template> "
            f"{self.threads}`"
        )


def wrk_command(
    settings: WrkSettings,
    url: str,
    path: str,
    body: str,
    seconds: float,
    limit_per_thread: int = 0,
) -> list[str]:
    """wrk posting ``body`` (a bench/post.lua template) to ``path`` for ``seconds``."""
    return [
        shutil.which("wrk") or "wrk",
        f"-t{settings.threads}",
        f"-c{settings.connections}",
        f"-d{math.ceil(seconds)}s",
        f"--timeout={settings.timeout_s}s",
        "-s",
        str(BENCH / "post.lua"),
        url,
        "--",
        path,
        body,
        str(settings.threads),
        str(limit_per_thread),
    ]


def recipients_body() -> str:
    """A distinct recipient per request, never repeated across threads or runs."""
    tag = secrets.token_hex(4)
    return f'{{"recipient_id":"{tag}-{{thread}}-{{n}}","channel":"email"}}'


def parse_wrk(output: str) -> Load:
    result = re.search(r"^BENCH_RESULT (.*)$", output, re.MULTILINE)
    if result is None:
        raise RuntimeError(f"wrk gave no result:\n{output}")
    data = json.loads(result.group(1))
    return Load(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        statuses=data["statuses"],
        socket_errors=data["socket_errors"],
        first_errors=re.findall(r"^BENCH_ERROR (.*)$", output, re.MULTILINE),
    )


def run_wrk(
    settings: WrkSettings,
    url: str,
    path: str,
    seconds: float,
    *,
    token: str,
    server_pid: int,
    pg: Server,
    body: str | None = None,
) -> Load:
    """One wrk run, with the CPU it cost; ``body`` defaults to a new recipient each time."""
    env = {**os.environ, "BENCH_TOKEN": token}
    cmd = wrk_command(settings, url, path, body or recipients_body(), seconds)
    with measure_cpu(pg.postmaster, server_pid) as cpu:
        done = subprocess.run(  # noqa: S603 - our own fixed command line
            cmd, env=env, capture_output=True, text=True, check=True, timeout=seconds + 60
        )
    load = parse_wrk(done.stdout)
    load.cpu = cpu
    return load


# ---------------------------------------------------------------------- 1. the anchor

ANCHOR_DB = "anchor"
ANCHOR_CLIENTS = (1, 8, 16, 64)  # the anchor is the best of them
NAIVE_POOL = len(ANCHOR_CLIENTS) + 1  # pools 1..4: one per pgbench run; 5: the naive app


def fill_anchor(server: Server, codes_per_pool: int) -> None:
    """The plain table of the anchor and of the naive endpoint, one fresh pool per run.

    Indexes are built after the fill (faster), then VACUUM ANALYZE and CHECKPOINT so
    every run starts from a server's steady state (the service's pools get the same):
    the statistics autovacuum would leave, and old WAL segments ready for reuse. Without
    it, the checkpoint that the fill's WAL starts is still running when the load comes,
    and about every 16 MB of WAL a commit waited ~50 ms (by all signs while a new WAL
    segment file was written out), which showed in the p99."""
    create_database(server, ANCHOR_DB)
    with connect(server.dsn(ANCHOR_DB)) as db:
        db.execute(
            """
            CREATE TABLE codes (
                id bigserial PRIMARY KEY,
                pool_id int NOT NULL,
                code text NOT NULL,
                status text NOT NULL DEFAULT 'available',
                recipient_id text,
                assigned_at timestamptz
            )
            """
        )
        db.execute(
            """
            INSERT INTO codes (pool_id, code)
            SELECT p, 'A' || p || '-' || g
            FROM generate_series(1, $1::int) AS p, generate_series(1, $2::int) AS g
            ORDER BY p, g
            """,
            NAIVE_POOL,
            codes_per_pool,
        )
        db.execute("CREATE INDEX codes_free ON codes (pool_id, id) WHERE status = 'available'")
        db.execute("VACUUM ANALYZE codes")
        db.execute("CHECKPOINT")


def pgbench(
    server: Server,
    *,
    database: str,
    script: Path,
    clients: int,
    seconds: int,
    defines: Mapping[str, object],
) -> dict[str, Any]:
    """TPS of a pgbench ``script`` (prepared statements) with ``-D`` ``defines``."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    cmd = [
        str(POSTGRES_BIN_PATH / "pgbench"),
        *("-h", server.socket_dir, "-U", "postgres"),
        "-n",  # no vacuum of pgbench's own tables: there are none
        *("-M", "prepared"),
        *("-c", str(clients), "-j", str(min(clients, os.cpu_count() or 1))),
        *("-T", str(seconds)),
        *(arg for name, value in defines.items() for arg in ("-D", f"{name}={value}")),
        *("-f", str(script)),
        database,
    ]
    with measure_cpu(server.postmaster) as cpu:
        done = subprocess.run(  # noqa: S603 - our own fixed command line
            cmd, capture_output=True, text=True, check=True, timeout=seconds + 60
        )
    tps = re.search(r"^tps = ([\d.]+)", done.stdout, re.MULTILINE)
    latency = re.search(r"^latency average = ([\d.]+) ms", done.stdout, re.MULTILINE)
    failed = re.search(r"^number of failed transactions: (\d+)", done.stdout, re.MULTILINE)
    processed = re.search(
        r"^number of transactions actually processed: (\d+)", done.stdout, re.MULTILINE
    )
    if tps is None:
        raise RuntimeError(f"pgbench gave no tps:\n{done.stdout}\n{done.stderr}")
    return {
        "clients": clients,
        "tps": float(tps.group(1)),
        "latency_ms": float(latency.group(1)) if latency else None,
        "failed": int(failed.group(1)) if failed else 0,
        "transactions": int(processed.group(1)) if processed else None,
        "cpu": cpu,
    }


def measure_anchor(server: Server, seconds: int) -> list[dict[str, Any]]:
    runs = []
    for pool, clients in enumerate(ANCHOR_CLIENTS, start=1):
        # Each client starts its scan hint at 0 and keeps its last claimed id (claim.sql).
        run = pgbench(
            server,
            database=ANCHOR_DB,
            script=BENCH / "claim.sql",
            clients=clients,
            seconds=seconds,
            defines={"pool": pool, "hint": 0},
        )
        with connect(server.dsn(ANCHOR_DB)) as db:
            run["claimed"] = db.value(
                "SELECT count(*) FROM codes WHERE pool_id = $1 AND status = 'assigned'", pool
            )
        print(f"  pgbench {clients:>2} clients: {run['tps']:,.0f} claims/s", flush=True)
        runs.append(run)
    return runs


# ----------------------------------------------------------------------- 2. the naive app


def measure_naive(
    server: Server, workdir: Path, settings: WrkSettings, seconds: int, warmup: int
) -> Load:
    port = free_port()
    env = {
        **os.environ,
        "NAIVE_DSN": server.dsn(ANCHOR_DB),
        "NAIVE_POOL_ID": str(NAIVE_POOL),
    }
    cmd = [
        *(PYTHON, "-m", "uvicorn", "bench.naive_app:app"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--loop", "uvloop", "--http", "httptools"),
        *("--no-access-log", "--log-level", "warning"),
    ]
    log = workdir / "naive.log"
    url = f"http://127.0.0.1:{port}"
    with background(cmd, env=env, log=log) as proc:
        wait_http(f"{url}/openapi.json", proc, log)
        for duration in (warmup, seconds):  # the first is the warm-up
            load = run_wrk(
                settings, url, "/claim", duration, token="", server_pid=proc.pid, pg=server
            )
    print(f"  naive endpoint: {load.rate:,.0f} requests/s, p99 {load.p99_ms:.1f} ms", flush=True)
    return load


# ----------------------------------------------------------------------- 3. the service

SERVICE_DB = "coupons"
GENERATE_MAX = 1_000_000  # the most one generate call accepts


class Service:
    """The real service (``python -m app.serve``) on its own database, and an admin client."""

    def __init__(
        self,
        server: Server,
        url: str,
        proc: subprocess.Popen[bytes],
        key: str,
        source: str,
        workdir: Path,
    ) -> None:
        self.server = server
        self.workdir = workdir  # the run's scratch folder
        self.url = url
        self.proc = proc
        self.key = key
        self.source = source  # the code it runs: the commit when it started
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=900
        )

    def load(
        self, settings: WrkSettings, path: str, seconds: float, body: str | None = None
    ) -> Load:
        """wrk against the service (see ``run_wrk``)."""
        return run_wrk(
            settings,
            self.url,
            path,
            seconds,
            token=self.key,
            server_pid=self.proc.pid,
            pg=self.server,
            body=body,
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, path, json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def unique_set(self, key: str, codes: int) -> str:
        """A unique set with ``codes`` codes in its default pool; returns the pool's id."""
        self.call("POST", "/v1/coupon-sets", {"label": key, "key": key, "kind": "unique"})
        left = codes
        while left:
            count = min(left, GENERATE_MAX)
            self.call(
                "POST",
                f"/v1/coupon-sets/{key}/codes/generate",
                {"count": count, "length": 12, "charset": "unambiguous", "min_space_ratio": 2},
            )
            left -= count
        # The same starting state as the anchor's table (see fill_anchor).
        with connect(self.server.dsn(SERVICE_DB)) as db:
            db.execute("VACUUM ANALYZE codes")
            db.execute("CHECKPOINT")
        pools = self.call("GET", f"/v1/coupon-sets/{key}/pools")["items"]
        return str(next(p["id"] for p in pools if p["name"] == "default"))


@contextlib.contextmanager
def service(
    server: Server, workdir: Path, settings: dict[str, str] | None = None
) -> Iterator[Service]:
    """The service on its own database; ``settings``: environment variables on top of
    this script's (COUPONS_...)."""
    create_database(server, SERVICE_DB)
    port = free_port()
    key = "bench_" + secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "DATABASE_URL": server.service_url(SERVICE_DB),
        "COUPONS_ADMIN_API_KEY": key,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "COUPONS_LOG_LEVEL": "WARNING",  # INFO logs every request (uvicorn.access)
        **(settings or {}),
    }
    log = workdir / "service.log"
    source = source_version()
    with background([PYTHON, "-m", "app.serve"], env=env, log=log) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", proc, log)
        svc = Service(server, url, proc, key, source, workdir)
        try:
            yield svc
        finally:
            svc.http.close()


def measure_service(
    svc: Service, settings: WrkSettings, codes: int, seconds: int, warmup: int
) -> Load:
    started = time.monotonic()
    svc.unique_set("bench", codes)
    print(f"  {codes:,} codes generated in {time.monotonic() - started:.0f} s", flush=True)
    path = "/v1/coupon-sets/bench/assignments"
    for duration in (warmup, seconds):  # the first is the warm-up
        load = svc.load(settings, path, duration)
    print(f"  service: {load.rate:,.0f} requests/s, p99 {load.p99_ms:.1f} ms", flush=True)
    return load


# ------------------------------------------------------------------------- 4. the drain


@dataclass
class Drain:
    codes: int
    load: Load
    free_at_end: int
    windows: list[tuple[float, float]]  # (free fraction at the window's start, claims/s)

    @property
    def ratio(self) -> float:
        return self.windows[-1][1] / self.windows[0][1]


def drain_size(rate: float, seconds: int) -> int:
    """A pool the service drains in about ``seconds``: the quality bar's 1,000,000 codes
    take far too long on a 2-core machine unless the service is fast."""
    return int(min(max(round(rate * seconds, -4), 20_000), 1_000_000))


# The free codes of the drained pool, read straight from the service's table once the
# load has stopped. Nothing polls the database during the drain: while codes are being
# claimed this count is slow (up to 0.6 s, the partial index full of entries of codes
# claimed since the last vacuum), and polling it took half a core from the server.
FREE_SQL = "SELECT count(*) FROM codes WHERE pool_id = $1 AND status = 'available'"

# Claims per window of DRAIN_WINDOW_S seconds, from the first claim on.
WINDOWS_SQL = """
    WITH t AS (SELECT min(assigned_at) AS t0 FROM codes WHERE pool_id = $1)
    SELECT floor(extract(epoch FROM assigned_at - t0) / $2)::int AS w, count(*) AS n
    FROM codes, t
    WHERE pool_id = $1 AND assigned_at IS NOT NULL
    GROUP BY w ORDER BY w
"""


def run_until_done(cmd: list[str], token: str, done_file: Path) -> str:
    """Run wrk until its thread has had its last response (bench/post.lua creates
    ``done_file``.1), then interrupt it (SIGINT: wrk still prints its results, which
    are returned); wrk would otherwise wait for the end of its duration."""
    env = {**os.environ, "BENCH_TOKEN": token, "BENCH_DONE_FILE": str(done_file)}
    marker = done_file.with_name(done_file.name + ".1")
    marker.unlink(missing_ok=True)
    with subprocess.Popen(  # noqa: S603 - our own fixed command line
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as wrk:
        try:
            while wrk.poll() is None and not marker.exists():
                time.sleep(0.1)
            wrk.send_signal(signal.SIGINT)
            out, _ = wrk.communicate(timeout=60)
        except BaseException:
            wrk.kill()
            raise
    return out


def rates_per_window(db: Database, pool_id: str, codes: int) -> list[tuple[float, float]]:
    """(free share at the window's start, claims/s) of each full window."""
    rows = db.fetch(WINDOWS_SQL, pool_id, DRAIN_WINDOW_S)
    windows, taken = [], 0
    for row in rows[:-1]:  # the last window was cut short by the stop
        windows.append((1 - taken / codes, row["n"] / DRAIN_WINDOW_S))
        taken += row["n"]
    if len(windows) < 2:
        raise RuntimeError(f"drain too short for two {DRAIN_WINDOW_S:.0f}-s windows: {rows}")
    return windows


def measure_drain(svc: Service, settings: WrkSettings, codes: int, max_seconds: float) -> Drain:
    """One continuous wrk run while the pool drains from 100 % to 1 % free. The rate per
    window comes afterwards from the codes' own ``assigned_at``: exact, and no gaps
    between windows as consecutive short wrk runs would leave.

    wrk runs one thread here, which stops by itself after its last claim: with one
    thread per half of the connections, the faster thread reached its share first and
    the drain ended at half the load, which showed as a fall of the last windows."""
    pool_id = svc.unique_set("bench-drain", codes)
    # Requests still in flight when wrk stops may claim too: the pool never empties
    # (an empty pool answers 409), and ends with 1 % free plus at most one request per
    # connection.
    claims = codes - int(codes * DRAIN_END_FREE) - settings.connections
    path = "/v1/coupon-sets/bench-drain/assignments"
    one_thread = WrkSettings(threads=1, connections=settings.connections)
    cmd = wrk_command(one_thread, svc.url, path, recipients_body(), max_seconds, claims)
    with measure_cpu(svc.server.postmaster, svc.proc.pid) as cpu:
        out = run_until_done(cmd, svc.key, done_file=svc.workdir / "drain-done")
    with connect(svc.server.dsn(SERVICE_DB)) as db:
        free = db.value(FREE_SQL, pool_id)
        windows = rates_per_window(db, pool_id, codes)
    load = parse_wrk(out)
    load.cpu = cpu
    drain = Drain(codes=codes, load=load, free_at_end=free, windows=windows)
    print(
        f"  drain: {windows[0][1]:,.0f} -> {windows[-1][1]:,.0f} claims/s "
        f"({drain.ratio:.2f}), {free:,} of {codes:,} codes left",
        flush=True,
    )
    return drain


# --------------------------------------------------------------------------- report


@dataclass
class Results:
    args: argparse.Namespace
    machine: dict[str, str]
    wrk: WrkSettings
    anchor: list[dict[str, Any]]
    naive: Load
    service: Load
    drain: Drain
    source: str  # the service's commit
    minutes: float
    background: float  # cores busy before the run started

    @property
    def best_anchor(self) -> dict[str, Any]:
        """The anchor: the pgbench run with the most claims/s."""
        return max(self.anchor, key=lambda run: float(run["tps"]))

    @property
    def anchor_rate(self) -> float:
        return float(self.best_anchor["tps"])


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _load_row(name: str, load: Load) -> str:
    return (
        f"| {name} | {load.rate:,.0f} | {load.p50_ms:.1f} ms | {load.p99_ms:.1f} ms | "
        f"{load.non_2xx:,} of {load.requests:,} | {load.cpu.describe()} |"
    )


def spread(items: list[Any], most: int) -> list[Any]:
    """At most ``most`` items, evenly spaced, the first and the last always in."""
    if len(items) <= most:
        return items
    step = (len(items) - 1) / (most - 1)
    return [items[round(i * step)] for i in range(most)]


def _ms_per_request(cores: float, rate: float) -> float:
    return cores / rate * 1000


def service_workers() -> int:
    """The uvicorn workers the service runs: its settings, read from the environment it
    inherits from this script (COUPONS_WORKERS, or the service's default)."""
    from app.settings import Settings

    try:
        return int(getattr(Settings(), "workers", 1))
    except ValueError:  # an invalid setting: the service refuses to start anyway
        return 1


def _processes(workers: int) -> str:
    return "single uvicorn process" if workers == 1 else f"{workers} uvicorn workers"


def where_the_time_went(res: Results) -> str:
    """CPU per request: what each layer costs, independent of how busy the machine was."""
    svc, naive, anchor = res.service, res.naive, res.best_anchor
    # One process can use one core; with workers, the supervisor idles beside them.
    workers = service_workers()
    usable = min(workers, len(os.sched_getaffinity(0)))
    if svc.cpu.server >= 0.9 * usable:
        bound = f"CPU-bound: its {_processes(workers)} used {svc.cpu.server:.2f} of {usable} cores"
    elif svc.cpu.machine >= 0.95 * len(os.sched_getaffinity(0)):
        bound = (
            f"limited by the machine: every core was busy (its {_processes(workers)} "
            f"{svc.cpu.server:.2f}, PostgreSQL {svc.cpu.postgres:.2f}, other {svc.cpu.other:.2f})"
        )
    else:
        bound = f"not CPU-bound in its {_processes(workers)} ({svc.cpu.server:.2f} cores)"
    return (
        f"Where the time went: during B1 the service was {bound}. CPU per request: service "
        f"{_ms_per_request(svc.cpu.server, svc.rate):.2f} ms in Python + "
        f"{_ms_per_request(svc.cpu.postgres, svc.rate):.2f} ms in PostgreSQL; naive endpoint "
        f"{_ms_per_request(naive.cpu.server, naive.rate):.2f} ms + "
        f"{_ms_per_request(naive.cpu.postgres, naive.rate):.2f} ms; pgbench "
        f"{_ms_per_request(anchor['cpu'].postgres, anchor['tps']):.2f} ms in PostgreSQL per "
        f"claim. wrk used {svc.cpu.loadgen:.2f} cores during B1."
    )


def render(res: Results) -> str:
    """The section of docs/benchmarks.md."""
    m, svc, drain = res.machine, res.service, res.drain
    vs_anchor = svc.rate / res.anchor_rate
    vs_naive = svc.rate / res.naive.rate
    shown = spread(drain.windows, 13)
    lines = [
        SECTION,
        "",
        f"`make bench-assign` (`.venv/bin/python -m bench.assign`), run on "
        f"{dt.date.today().isoformat()} on {res.source}, took {res.minutes:.1f} min. All "
        "figures below come from that one run against one embedded PostgreSQL server.",
        "",
        f"- Machine: {m['cpus']} cores (nproc) ({m['cpu']}), {m['ram']} RAM, {m['os']}; "
        f"{m['postgres']}; {m['python']}.",
        f"- Load generator: {m['wrk']}; {res.wrk.describe()}: a distinct recipient per "
        "request. It runs on the same machine and shares its two cores.",
        "- HTTP servers: uvicorn (uvloop, httptools), access log off. Naive app: one "
        f"process, 20 database connections. Service: `python -m app.serve`, "
        f"{_processes(service_workers())} (`COUPONS_WORKERS` as in the environment), its "
        "default database pool "
        "(10 + overflow 10 per process), `COUPONS_LOG_LEVEL=WARNING`.",
        "",
        "| what | claims/s | p50 | p99 | non-2xx | CPU cores: server / PostgreSQL / "
        "load generator / other (all) |",
        "|---|---|---|---|---|---|",
    ]
    for run in res.anchor:
        lines.append(
            f"| anchor: pgbench `bench/claim.sql`, {run['clients']} client"
            f"{'s' if run['clients'] > 1 else ''} | {run['tps']:,.0f} | "
            f"avg {run['latency_ms']:.2f} ms | | {run['failed']} failed, "
            f"{run['claimed']:,} claimed | "
            f"{run['cpu'].describe()} |"
        )
    lines += [
        _load_row("naive FastAPI endpoint (`bench/naive_app.py`)", res.naive),
        _load_row("**service** `POST /v1/coupon-sets/bench/assignments`", svc),
        _load_row(f"service while draining {drain.codes:,} codes (B2)", drain.load),
        "",
        "| target | measured | goal | |",
        "|---|---|---|---|",
        f"| B1 service / pgbench anchor (best: {res.best_anchor['clients']} clients) | "
        f"{vs_anchor:.2f}x | ≥ {B1_VS_ANCHOR}x | "
        f"{_verdict(vs_anchor >= B1_VS_ANCHOR)} |",
        f"| B1 service / naive endpoint | {vs_naive:.2f}x | ≥ {B1_VS_NAIVE:.0f}x | "
        f"{_verdict(vs_naive >= B1_VS_NAIVE)} |",
        f"| B1 service p99 | {svc.p99_ms:.1f} ms | ≤ {B1_P99_MS:.0f} ms | "
        f"{_verdict(svc.p99_ms <= B1_P99_MS)} |",
        f"| B2 rate in the last full window ({drain.windows[-1][0]:.0%} free at its start) "
        f"/ in the first (100 %) | {drain.ratio:.2f}x | "
        f"≥ {B2_END_VS_START}x | {_verdict(drain.ratio >= B2_END_VS_START)} |",
        "",
        where_the_time_went(res),
        "",
        f"Drain (B2): a pool of {drain.codes:,} codes, one continuous wrk run (one thread, "
        f"{res.wrk.connections} connections) that stopped by itself at "
        f"{drain.free_at_end / drain.codes:.1%} free ({drain.free_at_end:,} codes left). "
        f"Claims/s per {DRAIN_WINDOW_S:.0f}-s window (free share at the window's start; "
        f"{len(shown)} of {len(drain.windows)} full windows shown), counted from the codes' "
        "`assigned_at`; B2 compares the last full window with the first:",
        "",
        "| free | " + " | ".join(f"{free:.0%}" for free, _ in shown) + " |",
        "|---" * (len(shown) + 1) + "|",
        "| claims/s | " + " | ".join(f"{rate:,.0f}" for _, rate in shown) + " |",
        "",
        "How it is measured:",
        "",
        f"- Anchor: pgbench `-M prepared`, {res.args.pgbench_seconds} s per client count, "
        f"each on its own fresh pool of {res.args.anchor_codes:,} codes in a plain table "
        "(`codes`, partial index `(pool_id, id) WHERE status = 'available'`); each client "
        "keeps the id it claimed last as its scan hint (`RETURNING id AS hint \\gset`, "
        "started with `-D hint=0`), as the service keeps one per process; the best of the "
        "client counts is the B1 anchor. The naive endpoint drains a fifth pool of that "
        "table.",
        f"- Service: `python -m app.serve` on its own database of the same server; a unique "
        f"set with {res.args.codes:,} generated codes (`POST .../codes/generate`), then "
        f"{res.args.warmup} s of warm-up and {res.args.seconds} s measured. The naive "
        f"endpoint gets the same warm-up and {res.args.seconds} s. After their fill both "
        "tables get `VACUUM ANALYZE` and the server a `CHECKPOINT`: the statistics "
        "autovacuum would leave, and old WAL segments ready for reuse, as on a server "
        "that has been running (without it, about every 16 MB of WAL a commit waited "
        "~50 ms, by all signs for a new WAL segment file).",
        "- CPU: cores used during each measurement (CPU seconds / wall seconds, from /proc): "
        "the HTTP server's processes (1.00 = one process saturated), all processes of the "
        "benchmark's PostgreSQL server, the "
        "load generator, everything else (this script, other users); all: the whole "
        f"machine, 2.00 = both cores busy. Before the run {res.background:.2f} cores were "
        "already busy with other work.",
        "- non-2xx: responses other than 2xx (the service answers 201 for a new code); "
        "wrk socket errors (connect/read/write/timeout): "
        + "; ".join(
            f"{name} {sum(load.socket_errors.values())}"
            for name, load in (("naive", res.naive), ("service", svc), ("drain", drain.load))
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


def write_docs(section: str, path: Path = DOCS) -> None:
    """Replace this benchmark's section, keeping the intro and the other sections."""
    write_section(path, SECTION, section, INTRO)


def print_errors(res: Results, workdir: Path) -> None:
    loads = {"naive": res.naive, "service": res.service, "drain": res.drain.load}
    print_load_errors(loads, workdir, ("naive.log", "service.log"))


def print_load_errors(loads: dict[str, Load], workdir: Path, logs: tuple[str, ...]) -> None:
    """What went wrong under load, if anything: status counts, bodies, server logs."""
    for name, load in loads.items():
        if load.non_2xx or any(load.socket_errors.values()):
            print(f"\n{name}: statuses {load.statuses}, socket errors {load.socket_errors}")
            for error in load.first_errors:
                print(f"  first error of a thread: {error[:500]}")
    for log in logs:
        text = tail(workdir / log, 60)
        if text.strip():
            print(f"\n--- last lines of {log} ---\n{text}")


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.assign", description=__doc__)
    parser.add_argument("--anchor-codes", type=int, default=1_000_000, help="per pgbench pool")
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument("--codes", type=int, default=1_000_000, help="the service's B1 pool")
    parser.add_argument("--seconds", type=int, default=20, help="B1 HTTP measurements")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--drain-codes",
        type=int,
        default=0,
        help="the B2 pool; default: what the service drains in about --drain-seconds at "
        "its B1 rate (at least 20,000, at most 1,000,000)",
    )
    parser.add_argument("--drain-seconds", type=int, default=120)
    add_load_arguments(parser)
    return parser.parse_args(argv)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """What every wrk benchmark takes: the load's shape, and whether to write the docs."""
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--no-docs", action="store_true", help="print, do not write the docs")


def run(args: argparse.Namespace, workdir: Path) -> Results:
    started = time.monotonic()
    idle = background_load()
    print(f"background load before the run: {idle:.2f} cores", flush=True)
    settings = WrkSettings(threads=args.threads, connections=args.connections)
    with embedded_postgres(workdir) as server:
        info = machine(server)
        print(f"1/4 anchor: filling {NAIVE_POOL} x {args.anchor_codes:,} codes", flush=True)
        filled = time.monotonic()
        fill_anchor(server, args.anchor_codes)
        print(f"  filled in {time.monotonic() - filled:.0f} s", flush=True)
        anchor = measure_anchor(server, args.pgbench_seconds)
        print("2/4 naive FastAPI endpoint", flush=True)
        naive = measure_naive(server, workdir, settings, args.seconds, args.warmup)
        print("3/4 service", flush=True)
        with service(server, workdir) as svc:
            service_load = measure_service(svc, settings, args.codes, args.seconds, args.warmup)
            drain_codes = args.drain_codes or drain_size(service_load.rate, args.drain_seconds)
            print(f"4/4 drain of {drain_codes:,} codes", flush=True)
            # Time enough even if the rate fell to a third while draining (B2 then fails).
            longest = max(60.0, 3 * drain_codes / service_load.rate)
            drain = measure_drain(svc, settings, drain_codes, longest)
            source = svc.source
    return Results(
        args=args,
        machine=info,
        wrk=settings,
        anchor=anchor,
        naive=naive,
        service=service_load,
        drain=drain,
        source=source,
        minutes=(time.monotonic() - started) / 60,
        background=idle,
    )


def report(res: Results, workdir: Path) -> str:
    print_errors(res, workdir)
    return render(res)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    write = None if args.no_docs else write_docs
    return run_benchmark(
        "bench-assign-",
        ("naive.log", "service.log"),
        lambda workdir: run(args, workdir),
        report,
        write,
    )


if __name__ == "__main__":
    sys.exit(main())

"""B9 — instances: the assignment load (B1's) on one instance straight to PostgreSQL,
on one instance through PgBouncer (transaction mode, COUPONS_DB_PGBOUNCER=true), and on
two instances through PgBouncer, in one run on one database. Reports each rate, the
ratios (PgBouncer against direct: the hot path keeps >= 0.8x; two instances against one
direct: >= 0.9x), every error, and the CPU per request of the service's processes, of
PostgreSQL and of PgBouncer (from /proc).

On two cores the two instances share the cores the one had: the figure that matters is
the CPU per request, which says what an instance on cores of its own would do.

``python -m bench.instances [--codes N] [--seconds S] [--connections C]`` (``make
bench-instances``); needs wrk and pgbouncer. Writes its section of docs/benchmarks.md
unless --no-docs."""

import argparse
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import harness
from bench.assign import (
    SERVICE_DB,
    Load,
    Service,
    WrkSettings,
    add_load_arguments,
    parse_wrk,
    recipients_body,
    wrk_command,
)
from tests.external import run_pgbouncer

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## Instances behind PgBouncer (B9)"
PATH = "/v1/coupon-sets/bench/assignments"


@dataclass
class Run:
    name: str
    load: Load
    instances: int
    pooler_cores: float = 0.0

    @property
    def errors(self) -> int:
        return self.load.non_2xx + sum(self.load.socket_errors.values())

    def ms_per_request(self, cores: float) -> float:
        return 1000 * cores / self.load.rate if self.load.rate else 0.0


@dataclass
class Results:
    args: argparse.Namespace
    machine: dict[str, str]
    wrk: WrkSettings
    runs: list[Run] = field(default_factory=list)
    source: str = ""
    background: float = 0.0
    minutes: float = 0.0


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@contextlib.contextmanager
def instance(
    server: harness.Server, workdir: Path, name: str, database_url: str, settings: dict[str, str]
) -> Iterator[Service]:
    """One ``python -m app.serve`` on ``database_url`` (the database exists)."""
    port = harness.free_port()
    key = os.environ["BENCH_ADMIN_KEY"]
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATABASE_DIRECT_URL": server.service_url(SERVICE_DB),
        "COUPONS_ADMIN_API_KEY": key,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "COUPONS_LOG_LEVEL": "WARNING",
        **settings,
    }
    log = workdir / f"{name}.log"
    with harness.background([harness.PYTHON, "-m", "app.serve"], env=env, log=log) as proc:
        url = f"http://127.0.0.1:{port}"
        harness.wait_http(f"{url}/readyz", proc, log)
        svc = Service(server, url, proc, key, harness.source_version(), workdir)
        try:
            yield svc
        finally:
            svc.http.close()


def load(
    name: str,
    services: list[Service],
    settings: WrkSettings,
    seconds: float,
    server: harness.Server,
    pooler_pid: int | None,
) -> Run:
    """wrk against every service at once (the connections split between them); the CPU
    of all their processes, PostgreSQL's and PgBouncer's."""
    import subprocess

    share = WrkSettings(
        threads=max(1, settings.threads // len(services)),
        connections=max(1, settings.connections // len(services)),
        timeout_s=settings.timeout_s,
    )
    env = {**os.environ, "BENCH_TOKEN": services[0].key}
    pooler0 = _ticks(pooler_pid) if pooler_pid else 0
    began = time.monotonic()
    with harness.measure_cpu(server.postmaster, [svc.proc.pid for svc in services]) as cpu:
        procs = [
            subprocess.Popen(  # noqa: S603 - our own fixed command line
                wrk_command(share, svc.url, PATH, recipients_body(), seconds),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for svc in services
        ]
        outputs = [proc.communicate(timeout=seconds + 60)[0] for proc in procs]
    wall = time.monotonic() - began
    loads = [parse_wrk(output) for output in outputs]
    total = loads[0]
    for more in loads[1:]:
        total.requests += more.requests
        total.seconds = max(total.seconds, more.seconds)
        for status, n in more.statuses.items():
            total.statuses[status] = total.statuses.get(status, 0) + n
        for kind, n in more.socket_errors.items():
            total.socket_errors[kind] = total.socket_errors.get(kind, 0) + n
        total.first_errors += more.first_errors
        total.p50_ms = max(total.p50_ms, more.p50_ms)
        total.p99_ms = max(total.p99_ms, more.p99_ms)
    total.cpu = cpu
    pooler = (_ticks(pooler_pid) - pooler0) / os.sysconf("SC_CLK_TCK") / wall if pooler_pid else 0
    run = Run(name, total, len(services), pooler)
    print(f"  {name}: {total.rate:,.0f} requests/s, {run.errors} errors", flush=True)
    return run


def run(args: argparse.Namespace, workdir: Path) -> Results:
    started = time.monotonic()
    idle = harness.background_load()
    print(f"background load before the run: {idle:.2f} cores", flush=True)
    settings = WrkSettings(threads=args.threads, connections=args.connections)
    os.environ.setdefault("BENCH_ADMIN_KEY", "bench_" + os.urandom(18).hex())
    program = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    with harness.embedded_postgres(workdir) as server:
        res = Results(args=args, machine=harness.machine(server), wrk=settings, background=idle)
        harness.create_database(server, SERVICE_DB)
        direct = server.service_url(SERVICE_DB)
        behind = {"COUPONS_DB_PGBOUNCER": "true"}
        with run_pgbouncer(program, direct, pool_size=args.pool_size) as (bouncer, pooler):
            print("1/3 one instance, straight to PostgreSQL", flush=True)
            with instance(server, workdir, "direct", direct, {}) as svc:
                res.source = svc.source
                svc.unique_set("bench", args.codes)
                load("warm-up", [svc], settings, args.warmup, server, None)
                res.runs.append(load("1 direct", [svc], settings, args.seconds, server, None))
            print("2/3 one instance through PgBouncer", flush=True)
            with instance(server, workdir, "pooled", bouncer, behind) as svc:
                load("warm-up", [svc], settings, args.warmup, server, pooler.pid)
                res.runs.append(
                    load("1 via PgBouncer", [svc], settings, args.seconds, server, pooler.pid)
                )
            print("3/3 two instances through PgBouncer", flush=True)
            with (
                instance(server, workdir, "pooled-a", bouncer, behind) as a,
                instance(server, workdir, "pooled-b", bouncer, behind) as b,
            ):
                load("warm-up", [a, b], settings, args.warmup, server, pooler.pid)
                res.runs.append(
                    load("2 via PgBouncer", [a, b], settings, args.seconds, server, pooler.pid)
                )
    res.minutes = (time.monotonic() - started) / 60
    return res


def render(res: Results) -> str:
    direct, pooled, two = res.runs
    rows = []
    for r in res.runs:
        cpu = r.load.cpu
        rows.append(
            f"| {r.name} | {r.load.rate:,.0f} | {r.load.rate / direct.load.rate:.2f}x | "
            f"{r.errors} | {r.load.p99_ms:.1f} | {r.ms_per_request(cpu.server):.2f} | "
            f"{r.ms_per_request(cpu.postgres):.2f} | {r.ms_per_request(r.pooler_cores):.2f} | "
            f"{r.ms_per_request(cpu.server + cpu.postgres + r.pooler_cores):.2f} |"
        )
    b1 = pooled.load.rate / direct.load.rate
    b9 = two.load.rate / direct.load.rate
    errors = sum(r.errors for r in res.runs)
    return "\n".join(
        [
            SECTION,
            "",
            f"`make bench-instances` on {res.source}, {res.minutes:.0f} minutes; "
            f"{res.machine.get('cpu', '')}; background load {res.background:.2f} cores. "
            f"{res.args.codes:,} codes, {res.args.seconds} s per run, wrk: "
            f"{res.wrk.describe()} (split between the instances). PgBouncer "
            f"`pool_mode = transaction`, `default_pool_size = {res.args.pool_size}`.",
            "",
            "| run | assignments/s | vs 1 direct | errors | p99 ms | service CPU ms/req "
            "| PostgreSQL CPU ms/req | PgBouncer CPU ms/req | all ms/req |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"- B1 through PgBouncer: {b1:.2f}x direct "
            f"({'meets' if b1 >= 0.8 else 'misses'} >= 0.8x).",
            f"- B9, two instances through PgBouncer: {b9:.2f}x one direct "
            f"({'meets' if b9 >= 0.9 else 'misses'} >= 0.9x), "
            f"{'no error' if errors == 0 else f'{errors} errors'}.",
            "",
        ]
    )


def report(res: Results, workdir: Path) -> str:
    for r in res.runs:
        if r.errors:
            print(f"{r.name}: {r.load.statuses} {r.load.socket_errors}", file=sys.stderr)
            for line in r.load.first_errors[:5]:
                print(f"  {line}", file=sys.stderr)
    return render(res)


def write_docs(section: str) -> None:
    harness.write_section(DOCS, SECTION, section)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.instances", description=__doc__)
    parser.add_argument("--codes", type=int, default=1_000_000, help="the pool all runs share")
    parser.add_argument("--seconds", type=int, default=20, help="per measured run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--pool-size", type=int, default=20, help="PgBouncer's default_pool_size")
    add_load_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists():
        print("pgbouncer is needed: apt-get install pgbouncer", file=sys.stderr)
        return 2
    return harness.run_benchmark(
        "bench-instances-",
        ("direct.log", "pooled.log", "pooled-a.log", "pooled-b.log"),
        lambda workdir: run(args, workdir),
        report,
        None if args.no_docs else write_docs,
    )


if __name__ == "__main__":
    sys.exit(main())

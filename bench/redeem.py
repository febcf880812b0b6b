"""The redemption benchmark (target B7): ``make bench-redeem``.

``.venv/bin/python -m bench.redeem`` starts a throw-away embedded PostgreSQL and, against
that one server, in one run:

1. anchors: pgbench ``-M prepared`` running the best plain SQL at 1, 8, 16 and 64
   clients (the best of them is the anchor): a unique redemption as one statement
   (bench/redeem_unique.sql: lock the code by its lookup, insert the redemption, mark
   the code) and a shared one with an O(1) usage counter (bench/redeem_shared.sql:
   ``UPDATE … SET uses = uses + 1 WHERE … AND uses < max_uses`` plus the insert);
2. service (``python -m app.serve``, the redeem rate limit lifted), 64 connections:
   redemptions of unique codes (a new code each request), redemptions of a new shared
   code, validations of unique codes, and redemptions of a shared code that has
   1,000,000 uses already.

HTTP load comes from wrk (bench/post.lua) on the same machine. Codes and past uses are
written straight into the tables (the benchmark is the redemption, not the fill). The
figures go to the "Redemption (B7)" section of docs/benchmarks.md. Takes about 5 minutes."""

import argparse
import datetime as dt
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.assign import (
    BENCH,
    DOCS,
    INTRO,
    SERVICE_DB,
    Load,
    Service,
    WrkSettings,
    _load_row,
    _ms_per_request,
    _processes,
    _verdict,
    add_load_arguments,
    pgbench,
    print_load_errors,
    service,
    service_workers,
)
from bench.harness import (
    Server,
    background_load,
    connect,
    create_database,
    embedded_postgres,
    machine,
    run_benchmark,
    write_section,
)

SECTION = "## Redemption (B7)"

# Targets of the quality bar (shared/docs/quality.md).
B7_VS_ANCHOR = 0.5
B7_P99_MS = 50.0
B7_USED_VS_NEW = 0.8

ANCHOR_DB = "anchor"
ANCHOR_CLIENTS = (1, 8, 16, 64)
MAX_USES = 100_000_000  # the shared codes' limit: never reached, always checked
LIFTED_RATE_LIMIT = "1000000000/second"

# -------------------------------------------------------------------------- 1. anchors


def fill_anchor(server: Server, codes: int) -> None:
    """Plain tables for the anchors: codes with a unique lookup, redemptions, and one
    usage counter per shared run. VACUUM ANALYZE and CHECKPOINT afterwards, as
    bench/assign.py does, so the load meets a server in its steady state."""
    create_database(server, ANCHOR_DB)
    with connect(server.dsn(ANCHOR_DB)) as db:
        db.execute(
            """
            CREATE TABLE codes (
                id bigserial PRIMARY KEY,
                lookup text NOT NULL,
                code text NOT NULL,
                status text NOT NULL DEFAULT 'available',
                redeemed_at timestamptz
            );
            CREATE TABLE redemptions (
                id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                set_id int,
                code_id bigint,
                code text NOT NULL,
                status text NOT NULL,
                redeemed_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE TABLE usage (set_id int PRIMARY KEY, uses bigint NOT NULL, max_uses bigint);
            CREATE SEQUENCE next_code;
            """
        )
        db.execute(
            "INSERT INTO codes (lookup, code) SELECT 'U' || g, 'U' || g "
            "FROM generate_series(1, $1::int) AS g",
            codes,
        )
        db.execute("CREATE UNIQUE INDEX codes_lookup ON codes (lookup)")
        db.execute("CREATE INDEX redemptions_code_id ON redemptions (code_id)")
        db.execute(
            "INSERT INTO usage SELECT s, 0, $1 FROM generate_series(1, $2::int) AS s",
            MAX_USES,
            len(ANCHOR_CLIENTS),
        )
        db.execute("VACUUM ANALYZE")
        db.execute("CHECKPOINT")


def measure_anchors(server: Server, seconds: int) -> dict[str, list[dict[str, Any]]]:
    """Each script at each client count; every redemption it counted is checked in the
    tables (a transaction that found no code to redeem would be a cheap no-op)."""
    runs: dict[str, list[dict[str, Any]]] = {"unique": [], "shared": []}
    for n, clients in enumerate(ANCHOR_CLIENTS, start=1):
        for kind, defines in (("unique", {}), ("shared", {"set": n})):
            with connect(server.dsn(ANCHOR_DB)) as db:
                before = db.value("SELECT count(*) FROM redemptions")
            run = pgbench(
                server,
                database=ANCHOR_DB,
                script=BENCH / f"redeem_{kind}.sql",
                clients=clients,
                seconds=seconds,
                defines=defines,
            )
            with connect(server.dsn(ANCHOR_DB)) as db:
                run["redeemed"] = db.value("SELECT count(*) FROM redemptions") - before
            if run["redeemed"] != run["transactions"]:
                raise RuntimeError(f"{kind} anchor: too few codes ({run}); raise --anchor-codes")
            print(f"  pgbench {kind} {clients:>2} clients: {run['tps']:,.0f}/s", flush=True)
            runs[kind].append(run)
    return runs


# -------------------------------------------------------------------------- 2. service


@dataclass
class Fill:
    """The service's sets: their ids and default pools, by key."""

    sets: dict[str, str]
    pools: dict[str, str]


UNIQUE, WARM_UP, VALIDATE, NEW, USED = "unique", "warm-up", "validate", "shared", "used"
# Each unique set's codes are <prefix><n>, n = 1, 2, ...: what bench/post.lua's {seq} walks.
PREFIXES = {UNIQUE: "U", WARM_UP: "W", VALIDATE: "V"}
SHARED_CODES = {NEW: "WELCOME", USED: "LOYAL"}


def fill_service(svc: Service, codes: int, used_uses: int) -> Fill:
    sets, pools = {}, {}
    for key in PREFIXES:
        sets[key] = svc.call("POST", "/v1/coupon-sets", {"label": key, "key": key})["id"]
        pools[key] = svc.call("GET", f"/v1/coupon-sets/{key}/pools")["items"][0]["id"]
    for key, code in SHARED_CODES.items():
        body = {"label": key, "key": key, "kind": "shared", "shared_code": code}
        sets[key] = svc.call("POST", "/v1/coupon-sets", {**body, "max_uses": MAX_USES})["id"]
    with connect(svc.server.dsn(SERVICE_DB)) as db:
        for key, prefix in PREFIXES.items():
            # The warm-up only needs a few seconds' worth.
            count = codes // 4 if key == WARM_UP else codes
            db.execute(
                "INSERT INTO codes (set_id, pool_id, code, lookup) "
                "SELECT $1::uuid, $2::uuid, $3 || g, lower($3) || g "
                "FROM generate_series(1, $4::int) g",
                sets[key],
                pools[key],
                prefix,
                count,
            )
        # Past uses of the used code, as the engine keeps them: rows and the counter.
        db.execute(
            "INSERT INTO redemptions (id, set_id, code, status, redeemed_at) "
            "SELECT gen_random_uuid(), $1::uuid, $2, 'redeemed', now() - interval '1 day' "
            "FROM generate_series(1, $3::int)",
            sets[USED],
            SHARED_CODES[USED],
            used_uses,
        )
        db.execute(
            "INSERT INTO set_usage (set_id, uses) VALUES ($1::uuid, $2)", sets[USED], used_uses
        )
        db.execute("VACUUM ANALYZE")
        db.execute("CHECKPOINT")
    return Fill(sets, pools)


@dataclass
class Runs:
    unique: Load
    shared: Load
    validate: Load
    used: Load
    used_uses_at_end: int = 0  # the used code's counter after the run


def measure_service(svc: Service, wrk: WrkSettings, seconds: int, warmup: int) -> Runs:
    def load(body: str, warm_body: str | None = None, path: str = "/v1/redemptions") -> Load:
        svc.load(wrk, path, warmup, warm_body or body)
        return svc.load(wrk, path, seconds, body)

    runs = Runs(
        unique=load('{"code":"U{seq}"}', '{"code":"W{seq}"}'),
        shared=load(f'{{"code":"{SHARED_CODES[NEW]}"}}'),
        validate=load('{"code":"V{seq}"}', path="/v1/redemptions/validate"),
        used=load(f'{{"code":"{SHARED_CODES[USED]}"}}'),
    )
    for name in ("unique", "shared", "validate", "used"):
        run = getattr(runs, name)
        print(f"  service {name}: {run.rate:,.0f}/s, p99 {run.p99_ms:.1f} ms", flush=True)
    with connect(svc.server.dsn(SERVICE_DB)) as db:
        # The counters agree with the rows they count (the engine's invariant).
        wrong = db.value(
            "SELECT count(*) FROM set_usage u WHERE u.uses <> (SELECT count(*) FROM "
            "redemptions r WHERE r.set_id = u.set_id AND r.status IN ('redeemed', 'held'))"
        )
        if wrong:
            raise RuntimeError(f"{wrong} usage counters disagree with their redemptions")
        runs.used_uses_at_end = db.value(
            "SELECT uses FROM set_usage u JOIN coupon_sets s ON s.id = u.set_id WHERE s.key = $1",
            USED,
        )
    return runs


# --------------------------------------------------------------------------- report


@dataclass
class Results:
    args: argparse.Namespace
    machine: dict[str, str]
    wrk: WrkSettings
    anchors: dict[str, list[dict[str, Any]]]
    runs: Runs
    source: str
    minutes: float
    background: float

    def best(self, kind: str) -> dict[str, Any]:
        return max(self.anchors[kind], key=lambda run: float(run["tps"]))


def _cpu_per_request(load: Load) -> str:
    return (
        f"{_ms_per_request(load.cpu.server, load.rate):.2f} ms in Python + "
        f"{_ms_per_request(load.cpu.postgres, load.rate):.2f} ms in PostgreSQL"
    )


def render(res: Results, workdir: Path) -> str:
    """The section of docs/benchmarks.md, after printing what went wrong, if anything."""
    print_errors(res, workdir)
    m, runs, wrk = res.machine, res.runs, res.wrk
    unique, shared = res.best("unique"), res.best("shared")
    services = (
        ("**service** redeem a unique code (`POST /v1/redemptions`)", runs.unique),
        ("**service** redeem a new shared code", runs.shared),
        ("**service** validate a unique code (`POST /v1/redemptions/validate`)", runs.validate),
        (f"**service** redeem a shared code with {res.args.used_uses:,} uses", runs.used),
    )
    ratios = (
        ("unique redemptions / unique anchor", runs.unique.rate / unique["tps"], unique),
        ("shared redemptions / shared anchor", runs.shared.rate / shared["tps"], shared),
        ("validations / unique anchor", runs.validate.rate / unique["tps"], unique),
    )
    used_vs_new = runs.used.rate / runs.shared.rate
    lines = [
        SECTION,
        "",
        f"`make bench-redeem` (`.venv/bin/python -m bench.redeem`), run on "
        f"{dt.date.today().isoformat()} on {res.source}, took {res.minutes:.1f} min. All "
        "figures below come from that one run against one embedded PostgreSQL server.",
        "",
        f"- Machine: {m['cpus']} cores (nproc) ({m['cpu']}), {m['ram']} RAM, {m['os']}; "
        f"{m['postgres']}; {m['python']}.",
        f"- Load generator: {m['wrk']}; {wrk.describe()} (a new code per request for unique "
        "codes: `U{seq}`; the same code for a shared one). It shares the machine's cores.",
        f"- Service: `python -m app.serve`, {_processes(service_workers())} "
        "(`COUPONS_WORKERS` as in the environment), its default database pools, "
        f"`COUPONS_REDEEM_RATE_LIMIT={LIFTED_RATE_LIMIT}` (the limiter still runs), "
        "`COUPONS_LOG_LEVEL=WARNING`.",
        "",
        "| what | per s | p50 | p99 | non-2xx | CPU cores: server / PostgreSQL / "
        "load generator / other (all) |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("unique", "shared"):
        for run in res.anchors[kind]:
            lines.append(
                f"| anchor: pgbench `bench/redeem_{kind}.sql`, {run['clients']} client"
                f"{'s' if run['clients'] > 1 else ''} | {run['tps']:,.0f} | "
                f"avg {run['latency_ms']:.2f} ms | | {run['failed']} failed, "
                f"{run['redeemed']:,} redeemed | {run['cpu'].describe()} |"
            )
    lines += [_load_row(name, load) for name, load in services]
    lines += ["", "| target | measured | goal | |", "|---|---|---|---|"]
    for name, ratio, anchor in ratios:
        lines.append(
            f"| B7 {name} (best: {anchor['clients']} clients) | {ratio:.2f}x | "
            f"≥ {B7_VS_ANCHOR}x | {_verdict(ratio >= B7_VS_ANCHOR)} |"
        )
    worst = max(load.p99_ms for _, load in services)
    lines += [
        f"| B7 p99, the worst of the four service runs | {worst:.1f} ms | "
        f"≤ {B7_P99_MS:.0f} ms | {_verdict(worst <= B7_P99_MS)} |",
        f"| B7 shared code with {res.args.used_uses:,} uses / new | {used_vs_new:.2f}x | "
        f"≥ {B7_USED_VS_NEW}x | {_verdict(used_vs_new >= B7_USED_VS_NEW)} |",
        "",
        "CPU per request: "
        + "; ".join(
            f"{name}: {_cpu_per_request(load)}"
            for name, load in (
                ("unique", runs.unique),
                ("shared", runs.shared),
                ("validate", runs.validate),
                ("used shared", runs.used),
            )
        )
        + f". pgbench, in PostgreSQL per redemption: unique "
        f"{_ms_per_request(unique['cpu'].postgres, unique['tps']):.2f} ms, shared "
        f"{_ms_per_request(shared['cpu'].postgres, shared['tps']):.2f} ms.",
        "",
        "How it is measured:",
        "",
        f"- Anchors: pgbench `-M prepared`, {res.args.pgbench_seconds} s per script and "
        f"client count, in their own database: `codes` ({res.args.anchor_codes:,} rows, a "
        "unique index on `lookup`), `redemptions` (an index on `code_id`), `usage` (one "
        "counter row per shared run, every client on it). Unique: each transaction takes "
        "the next code of a sequence. Every redemption counted was checked in the table.",
        f"- Service: on its own database of the same server; unique sets of "
        f"{res.args.codes:,} codes (`U1`, `U2`, ... and `V1`, ... for validations), "
        f"written in SQL, and the used shared code's {res.args.used_uses:,} past uses "
        "written as rows with their counter. Each load: "
        f"{res.args.warmup} s of warm-up (unique redemptions warm up on codes of their "
        f"own), then {res.args.seconds} s measured; after the run every usage counter "
        "equalled its set's redemptions that count (the used code's: "
        f"{runs.used_uses_at_end:,}).",
        "- CPU: cores used during each measurement (CPU seconds / wall seconds, from /proc); "
        "server = the service's processes, all = the whole machine (2.00 = both cores). "
        f"Before the run {res.background:.2f} cores were busy with other work.",
    ]
    return "\n".join(lines) + "\n"


def write_docs(section: str) -> None:
    write_section(DOCS, SECTION, section, INTRO)


def print_errors(res: Results, workdir: Path) -> None:
    loads = {name: getattr(res.runs, name) for name in ("unique", "shared", "validate", "used")}
    print_load_errors(loads, workdir, ("service.log",))


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.redeem", description=__doc__)
    parser.add_argument("--anchor-codes", type=int, default=2_000_000, help="for pgbench")
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument("--codes", type=int, default=500_000, help="per unique set")
    parser.add_argument("--used-uses", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=20, help="each HTTP measurement")
    parser.add_argument("--warmup", type=int, default=3)
    add_load_arguments(parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> Results:
    started = time.monotonic()
    wrk = WrkSettings(threads=args.threads, connections=args.connections)
    idle = background_load()
    print(f"background load before the run: {idle:.2f} cores", flush=True)
    with embedded_postgres(workdir) as server:
        info = machine(server)
        print(f"1/2 anchors: {args.anchor_codes:,} codes", flush=True)
        fill_anchor(server, args.anchor_codes)
        anchors = measure_anchors(server, args.pgbench_seconds)
        print("2/2 service", flush=True)
        with service(server, workdir, {"COUPONS_REDEEM_RATE_LIMIT": LIFTED_RATE_LIMIT}) as svc:
            filled = time.monotonic()
            fill_service(svc, args.codes, args.used_uses)
            print(f"  filled in {time.monotonic() - filled:.0f} s", flush=True)
            runs = measure_service(svc, wrk, args.seconds, args.warmup)
            source = svc.source
    minutes = (time.monotonic() - started) / 60
    return Results(args, info, wrk, anchors, runs, source, minutes, idle)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(
        "bench-redeem-",
        ("service.log",),
        lambda workdir: run(args, workdir),
        lambda res, workdir: render(res, workdir),
        None if args.no_docs else write_docs,
    )


if __name__ == "__main__":
    sys.exit(main())

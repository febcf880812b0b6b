"""The statistics benchmark (target B6): ``make bench-stats``.

``.venv/bin/python -m bench.stats`` starts a throw-away embedded PostgreSQL and the
service on it, and in one run:

1. seeds a unique set of 10,000,000 codes in four pools (60 % available, 30 % assigned,
   8 % redeemed, 2 % void) and 49 more sets of 1,000 codes, by ``COPY`` into ``codes``
   (the statistics' statement triggers fire, as for any import); the recipient
   ``contact-1`` holds a code in each of the 50 sets; then ANALYZE and a wait until the
   folder has folded the deltas;
2. the cost of the counting on the import path: ``COPY`` of ``--copy-codes`` codes into
   a pool of another set with the triggers of ``codes`` enabled, then disabled;
3. reads, one client after another (latency, not throughput): p50/p95/p99 of
   ``GET .../stats``, ``GET .../pools``, ``GET /v1/coupon-sets?limit=50``, the code
   list filtered by ``status`` (a rare one: ``void``, and ``redeemed``), ``pool`` and
   ``recipient_id``, ``GET /v1/recipients/{id}/coupons`` (measured by its path: a 404
   there means the route does not exist in this build) and a 30-day timeline;
4. B1 with and without the counting, in the same run: wrk assignments (64 connections,
   bench/post.lua) on a pool of ``--b1-codes`` codes, alternating rounds with the
   statistics' trigger of ``UPDATE codes`` enabled and disabled (``ALTER TABLE codes
   DISABLE TRIGGER stats_codes_changed_update``); the cost is 1 - on ÷ off;
5. the recount afterwards: the claims made with the trigger off were not counted, so
   ``POST /v1/stats/recount`` must find exactly them, and repair them; its duration.

The figures go to the "Statistics (B6)" section of docs/benchmarks.md. Every process
started here is stopped on the way out. Takes about 8 minutes (most of it the COPY and
eight B1 rounds); ``--big-codes 20000 --b1-codes 20000 --copy-codes 5000 --seconds 2 --rounds 1
--requests 20 --no-docs`` is a smoke run of half a minute."""

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.assign import (
    DOCS,
    INTRO,
    SERVICE_DB,
    Load,
    Service,
    WrkSettings,
    add_load_arguments,
    print_load_errors,
    service,
)
from bench.harness import (
    background_load,
    connect,
    embedded_postgres,
    machine,
    run_benchmark,
    write_section,
)

SECTION = "## Statistics (B6)"
B6_P95_MS = 50.0
B6_CONTACT_P95_MS = 20.0
B6_COST = 0.10
CONTACT = "contact-1"
RARE_RECIPIENT = "big60"  # holds one code of the big set (see _line)
POOLS = ("default", "p2", "p3", "p4")
COPY_CHUNK = 100_000
_UPDATE_TRIGGER = "stats_codes_changed_update"


# ---------------------------------------------------------------------------- 1. seed


def _line(set_id: str, pool_id: str, prefix: str, n: int, now: datetime, mixed: bool) -> str:
    """One code as a COPY text line: available, or (``mixed``) a status from n
    (60/30/8/2 %), assigned over the last 14 days."""
    code = f"{prefix}{n:09d}"
    kind = n % 100 if mixed else 0
    if kind < 60:
        return f"{set_id}\t{pool_id}\t{code}\t{code.lower()}\tavailable\t\\N\t\\N\t\\N\t\\N\n"
    at = (now - timedelta(minutes=n % (14 * 24 * 60))).isoformat()
    recipient = f"{prefix.lower()}{n}"
    if kind < 90:
        return (
            f"{set_id}\t{pool_id}\t{code}\t{code.lower()}\tassigned\t{recipient}\t{at}\t\\N\t\\N\n"
        )
    if kind < 98:
        return (
            f"{set_id}\t{pool_id}\t{code}\t{code.lower()}\tredeemed\t{recipient}\t{at}\t{at}\t\\N\n"
        )
    return f"{set_id}\t{pool_id}\t{code}\t{code.lower()}\tvoid\t\\N\t\\N\t\\N\t{at}\n"


async def _copy_codes(
    dsn: str, set_id: str, pool_ids: list[str], prefix: str, count: int, *, mixed: bool = True
) -> float:
    """``count`` codes into the set's pools (round robin) by COPY; its seconds."""
    now = datetime.now(UTC)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, count, COPY_CHUNK):
            lines = (
                _line(set_id, pool_ids[n % len(pool_ids)], prefix, n, now, mixed)
                for n in range(start, min(count, start + COPY_CHUNK))
            )
            yield "".join(lines).encode()

    columns = [
        "set_id", "pool_id", "code", "lookup", "status", "recipient_id", "assigned_at",
        "redeemed_at", "voided_at",
    ]  # fmt: skip
    connection = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        await connection.copy_to_table("codes", source=chunks(), columns=columns)
        return time.monotonic() - started
    finally:
        await connection.close()


def _pool_ids(svc: Service, set_key: str) -> dict[str, str]:
    return {
        p["name"]: p["id"] for p in svc.call("GET", f"/v1/coupon-sets/{set_key}/pools")["items"]
    }


def _unique_set(svc: Service, key: str, pools: tuple[str, ...] = ("default",)) -> dict[str, str]:
    """A unique set with these pools; {pool name: id} and its own id under ``"set"``."""
    created = svc.call("POST", "/v1/coupon-sets", {"label": key, "key": key, "kind": "unique"})
    for name in pools[1:]:
        svc.call("POST", f"/v1/coupon-sets/{key}/pools", {"name": name})
    return {**_pool_ids(svc, key), "set": str(created["id"])}


def _give_contact(dsn: str, set_id: str) -> None:
    """``contact-1`` holds one assigned code of the set (the first available one)."""
    with connect(dsn) as db:
        db.execute(
            "UPDATE codes SET status = 'assigned', recipient_id = $2, assigned_at = now() "
            "WHERE id = (SELECT min(id) FROM codes WHERE set_id = $1 AND status = 'available')",
            uuid.UUID(set_id),
            CONTACT,
        )


def _wait_folded(dsn: str, limit_s: float = 600) -> float:
    started = time.monotonic()
    with connect(dsn) as db:
        while db.value("SELECT count(*) FROM stats_deltas") and (
            time.monotonic() - started < limit_s
        ):
            time.sleep(0.5)
    return time.monotonic() - started


@dataclass
class Seeded:
    big_codes: int
    copy_s: float
    fold_s: float
    sets: int


def seed(svc: Service, args: argparse.Namespace) -> Seeded:
    dsn = svc.server.dsn(SERVICE_DB)
    big = _unique_set(svc, "big", POOLS)
    pool_ids = [big[name] for name in POOLS]
    copy_s = asyncio.run(_copy_codes(dsn, big["set"], pool_ids, "BIG", args.big_codes))
    print(f"  {args.big_codes:,} codes copied in {copy_s:.0f} s", flush=True)
    _give_contact(dsn, big["set"])
    for n in range(2, args.sets + 1):
        small = _unique_set(svc, f"set-{n:02d}")
        asyncio.run(_copy_codes(dsn, small["set"], [small["default"]], f"S{n:02d}-", 1000))
        _give_contact(dsn, small["set"])
    with connect(dsn) as db:
        db.execute("ANALYZE")
    fold_s = _wait_folded(dsn)
    print(f"  folded {fold_s:.1f} s after the last COPY", flush=True)
    return Seeded(args.big_codes, copy_s, fold_s, args.sets)


# ----------------------------------------------------------------- 2. the import path


@dataclass
class ImportCost:
    codes: int
    on_s: float
    off_s: float


def import_cost(svc: Service, codes: int) -> ImportCost:
    dsn = svc.server.dsn(SERVICE_DB)
    target = _unique_set(svc, "copied")
    on_s = asyncio.run(_copy_codes(dsn, target["set"], [target["default"]], "ON", codes))
    with connect(dsn) as db:
        db.execute("ALTER TABLE codes DISABLE TRIGGER USER")
    try:
        off_s = asyncio.run(_copy_codes(dsn, target["set"], [target["default"]], "OFF", codes))
    finally:
        with connect(dsn) as db:
            db.execute("ALTER TABLE codes ENABLE TRIGGER USER")
    print(f"  COPY {codes:,}: {on_s:.1f} s counted, {off_s:.1f} s not", flush=True)
    return ImportCost(codes, on_s, off_s)


# ----------------------------------------------------------------------- 3. the reads


@dataclass
class Latency:
    name: str
    path: str
    statuses: dict[int, int]
    ms: list[float]

    def quantile(self, q: int) -> float:
        return statistics.quantiles(self.ms, n=100, method="inclusive")[q - 1]


def _reads(recipient: str) -> list[tuple[str, str, float]]:
    """(name, path, p95 target in ms)."""
    return [
        ("set stats", "/v1/coupon-sets/big/stats", B6_P95_MS),
        ("pools", "/v1/coupon-sets/big/pools", B6_P95_MS),
        ("set list, 50 sets", "/v1/coupon-sets?limit=50", B6_P95_MS),
        ("codes ?status=void", "/v1/coupon-sets/big/codes?status=void&limit=100", B6_P95_MS),
        (
            "codes ?status=redeemed",
            "/v1/coupon-sets/big/codes?status=redeemed&limit=100",
            B6_P95_MS,
        ),
        ("codes ?pool=p3", "/v1/coupon-sets/big/codes?pool=p3&limit=100", B6_P95_MS),
        (
            "codes ?recipient_id",
            f"/v1/coupon-sets/big/codes?recipient_id={recipient}&limit=100",
            B6_P95_MS,
        ),
        ("a contact's coupons", f"/v1/recipients/{CONTACT}/coupons", B6_CONTACT_P95_MS),
        ("timeline, 30 days", "/v1/coupon-sets/big/stats/timeline?bucket=day", B6_P95_MS),
    ]


def measure_reads(svc: Service, requests: int) -> list[Latency]:
    results = []
    for name, path, _ in _reads(RARE_RECIPIENT):
        statuses: dict[int, int] = {}
        ms = []
        for n in range(requests + requests // 10):  # the first tenth warms up
            started = time.perf_counter()
            response = svc.http.get(path)
            elapsed = (time.perf_counter() - started) * 1000
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if n >= requests // 10:
                ms.append(elapsed)
        latency = Latency(name, path, statuses, ms)
        print(f"  {name}: p95 {latency.quantile(95):.1f} ms {statuses}", flush=True)
        results.append(latency)
    return results


# --------------------------------------------------------------------------- 4. B1


@dataclass
class B1:
    on: list[Load] = field(default_factory=list)
    off: list[Load] = field(default_factory=list)
    # Claims committed while the trigger was disabled, counted in the database: the
    # ALTER TABLEs wait for the claims in flight, so the boundaries are exact (wrk's
    # own count misses requests still in flight when it stops).
    uncounted: int = 0

    @staticmethod
    def _rate(loads: list[Load]) -> float:
        return sum(load.requests for load in loads) / sum(load.seconds for load in loads)

    @property
    def on_rate(self) -> float:
        return self._rate(self.on)

    @property
    def off_rate(self) -> float:
        return self._rate(self.off)

    @property
    def cost(self) -> float:
        return 1 - self.on_rate / self.off_rate


def _set_update_trigger(svc: Service, enabled: bool) -> int:
    """Enable or disable the trigger; the assigned codes of the B1 set just after."""
    verb = "ENABLE" if enabled else "DISABLE"
    with connect(svc.server.dsn(SERVICE_DB)) as db:
        db.execute(f"ALTER TABLE codes {verb} TRIGGER {_UPDATE_TRIGGER}")
        return int(
            db.value(
                "SELECT count(*) FROM codes c JOIN coupon_sets s ON s.id = c.set_id "
                "WHERE s.key = 'b1' AND c.status = 'assigned'"
            )
        )


def measure_b1(svc: Service, settings: WrkSettings, args: argparse.Namespace) -> B1:
    b1 = _unique_set(svc, "b1")
    dsn = svc.server.dsn(SERVICE_DB)
    asyncio.run(_copy_codes(dsn, b1["set"], [b1["default"]], "B1-", args.b1_codes, mixed=False))
    with connect(dsn) as db:
        db.execute("VACUUM ANALYZE codes")
        db.execute("CHECKPOINT")
    _wait_folded(dsn)
    path = "/v1/coupon-sets/b1/assignments"
    svc.load(settings, path, args.warmup)
    result = B1()
    for round_no in range(args.rounds):
        for counted in (True, False) if round_no % 2 == 0 else (False, True):
            before = _set_update_trigger(svc, counted)
            try:
                load = svc.load(settings, path, args.seconds)
            finally:
                after = _set_update_trigger(svc, True)
            if not counted:
                result.uncounted += after - before
            (result.on if counted else result.off).append(load)
            state = "counted" if counted else "not counted"
            print(f"  B1 {state}: {load.rate:,.0f}/s, p99 {load.p99_ms:.1f} ms", flush=True)
    return result


# ------------------------------------------------------------------------ 5. recount


@dataclass
class Recount:
    seconds: float
    report: dict[str, Any]


def measure_recount(svc: Service) -> Recount:
    started = time.monotonic()
    report = svc.call("POST", "/v1/stats/recount")
    return Recount(time.monotonic() - started, report)


# ---------------------------------------------------------------------------- report


@dataclass
class Results:
    machine: dict[str, str]
    source: str
    seeded: Seeded
    imports: ImportCost
    reads: list[Latency]
    b1: B1
    recount: Recount
    wrk: WrkSettings
    minutes: float
    background: float


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def render(res: Results) -> str:
    targets = {name: target for name, _, target in _reads(RARE_RECIPIENT)}
    read_rows = "\n".join(
        f"| {r.name} | `{r.path}` | {r.quantile(50):.1f} | {r.quantile(95):.1f} | "
        f"{r.quantile(99):.1f} | {', '.join(f'{s}: {n}' for s, n in sorted(r.statuses.items()))}"
        f" | ≤ {targets[r.name]:.0f} ms: "
        f"{_verdict(r.quantile(95) <= targets[r.name] and set(r.statuses) == {200})} |"
        for r in res.reads
    )
    b1 = res.b1
    b1_rows = "\n".join(
        f"| {'counted' if load in b1.on else 'not counted'} | {load.rate:,.0f} | "
        f"{load.p50_ms:.1f} ms | {load.p99_ms:.1f} ms | {load.non_2xx:,} of {load.requests:,} |"
        for pair in zip(b1.on, b1.off, strict=True)
        for load in pair
    )
    missed = res.recount.report.get("repaired", 0)
    imports = res.imports
    expected = 2 * b1.uncounted + imports.codes
    return f"""{SECTION}

`make bench-stats` ({res.minutes:.0f} min; {res.source}). {res.machine["cpus"]} CPUs
({res.machine["cpu"]}), {res.machine["postgres"]}; {res.machine["python"]}; load from
{res.machine["wrk"]}, {res.wrk.describe()}. Background load before the run:
{res.background:.2f} cores.

Seeded by `COPY` into `codes`: a set of {res.seeded.big_codes:,} codes in four pools
(60 % available, 30 % assigned, 8 % redeemed, 2 % void) and {res.seeded.sets - 1} sets
of 1,000; `contact-1` holds a code in each. The COPY of the big set took
{res.seeded.copy_s:.0f} s with the statistics' triggers on; the folder had folded its
deltas {res.seeded.fold_s:.1f} s after it.

**Reads** (one client, sequential requests; milliseconds):

| read | path | p50 | p95 | p99 | statuses | target (p95) |
|---|---|---|---|---|---|---|
{read_rows}

**B1 with and without the counting** (rounds alternate; the statistics' trigger on
updates of `codes` is disabled for "not counted"): counted {b1.on_rate:,.0f} assignments/s,
not counted {b1.off_rate:,.0f}/s: the counting costs **{b1.cost:.1%}** of B1 (target
≤ {B6_COST:.0%}: {_verdict(b1.cost <= B6_COST)}).

| run | assignments/s | p50 | p99 | non-2xx |
|---|---|---|---|---|
{b1_rows}

**Import path:** `COPY` of {imports.codes:,} codes: {imports.on_s:.1f} s counted,
{imports.off_s:.1f} s with the triggers of `codes` disabled
({imports.on_s / imports.off_s - 1:+.0%}).

**Recount** of every set afterwards: {res.recount.seconds:.1f} s; it found and repaired
{missed:,} miscounted codes. Expected: the {b1.uncounted:,} claims made with the
trigger disabled, twice each (available -1, assigned +1), and the {imports.codes:,}
codes copied with the triggers disabled: {expected:,}, {_verdict(missed == expected)}.
"""


def report(res: Results, workdir: Path) -> str:
    loads = {f"on {n}": load for n, load in enumerate(res.b1.on)}
    loads |= {f"off {n}": load for n, load in enumerate(res.b1.off)}
    print_load_errors(loads, workdir, ("service.log",))
    return render(res)


def run(args: argparse.Namespace, workdir: Path) -> Results:
    started = time.monotonic()
    idle = background_load()
    settings = WrkSettings(threads=args.threads, connections=args.connections)
    with embedded_postgres(workdir) as server:
        info = machine(server)
        with service(server, workdir) as svc:
            print(f"1/5 seeding {args.big_codes:,} + {args.sets - 1} sets", flush=True)
            seeded = seed(svc, args)
            print("2/5 the import path", flush=True)
            imports = import_cost(svc, args.copy_codes)
            print("3/5 reads", flush=True)
            reads = measure_reads(svc, args.requests)
            print("4/5 B1 with and without the counting", flush=True)
            b1 = measure_b1(svc, settings, args)
            print("5/5 recount", flush=True)
            recount = measure_recount(svc)
            source = svc.source
    return Results(
        machine=info,
        source=source,
        seeded=seeded,
        imports=imports,
        reads=reads,
        b1=b1,
        recount=recount,
        wrk=settings,
        minutes=(time.monotonic() - started) / 60,
        background=idle,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.stats", description=__doc__)
    parser.add_argument("--big-codes", type=int, default=10_000_000)
    parser.add_argument("--sets", type=int, default=50, help="sets in all, the big one too")
    parser.add_argument("--copy-codes", type=int, default=1_000_000, help="import-path COPY")
    parser.add_argument("--requests", type=int, default=200, help="per read")
    parser.add_argument("--b1-codes", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=20, help="per B1 run")
    parser.add_argument("--rounds", type=int, default=4, help="B1 counted/not-counted pairs")
    parser.add_argument("--warmup", type=int, default=10, help="seconds of B1 first, not counted")
    add_load_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def write(section: str) -> None:
        write_section(DOCS, SECTION, section, INTRO)

    return run_benchmark(
        "bench-stats-",
        ("service.log",),
        lambda workdir: run(args, workdir),
        report,
        None if args.no_docs else write,
    )


if __name__ == "__main__":
    sys.exit(main())

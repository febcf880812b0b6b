"""The events benchmark (target B8): ``make bench-events``.

``.venv/bin/python -m bench.events`` starts a throw-away embedded PostgreSQL, the
service (one process, its dispatcher on, private addresses allowed) and a local webhook
receiver (bench/webhook_receiver.py, uvicorn), and measures in one run:

1. delivery rate: ``--events`` events committed at once (audit rows of assignments,
   written by one statement), then the time until the receiver has every one: events
   per second from one instance, pump and sends included;
2. B1 with and without an endpoint: assignments under wrk (as in bench.assign) in
   rounds that alternate between an endpoint subscribed to ``code.assigned`` disabled
   and enabled (its deliveries running meanwhile, in the same process, yielding to the
   requests: COUPONS_WEBHOOK_BUSY_SHARE); how many of the events reached the receiver
   during those rounds, and how long the rest took after the load;
3. a receiver down: the receiver stopped for ``--down-seconds`` (60) while wrk assigns,
   then started again; the run waits until every event of the endpoint was delivered
   and checks, by ``webhook-id``, that each arrived (after de-duplication: exactly once)
   and how many were sent more than once.

The retry schedule is shortened for the run (``SCHEDULE``: 1, 2, 4, ... seconds, about
18 hours in all) so the backlog drains within minutes after the receiver is back, as
it would a few minutes later with the default one. Figures go to the "Events out (B8)"
section of docs/benchmarks.md. Every process started is stopped on the way out."""

import argparse
import os
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.assign import (
    DOCS,
    INTRO,
    SERVICE_DB,
    Load,
    Service,
    WrkSettings,
    add_load_arguments,
    service,
)
from bench.harness import (
    PYTHON,
    background,
    background_load,
    connect,
    embedded_postgres,
    free_port,
    machine,
    run_benchmark,
    write_section,
)

SECTION = "## Events out (B8)"
B8_EVENTS_PER_S = 2000
B8_B1_COST = 0.15
SCHEDULE = ",".join(str(2**n) for n in range(16))
SETTINGS = {
    "COUPONS_WEBHOOK_DISPATCH": "true",
    "COUPONS_WEBHOOK_ALLOW_PRIVATE": "true",
    "COUPONS_WEBHOOK_RETRY_SCHEDULE": SCHEDULE,
    "COUPONS_WEBHOOK_CONNECT_TIMEOUT_SECONDS": "2",
    "COUPONS_WEBHOOK_TIMEOUT_SECONDS": "5",
}


class Receiver:
    """The receiver process, started and stopped at will; its ids file outlives it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.ids = workdir / "received.txt"
        self.ids.touch()
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._started: Any = None

    @contextmanager
    def running(self) -> Any:
        env = {**os.environ, "RECEIVER_LOG": str(self.ids)}
        cmd = [
            PYTHON, "-m", "uvicorn", "bench.webhook_receiver:app", "--port", str(self.port),
            "--no-access-log", "--log-level", "warning", "--http", "httptools",
        ]  # fmt: skip
        log = self.workdir / "receiver.log"
        with background(cmd, env=env, log=log) as proc:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            yield proc

    def received(self) -> list[str]:
        return [line for line in self.ids.read_text().splitlines() if line]


@dataclass
class B1:
    """B1 in rounds that alternate (without, with, with, without, ...): the endpoint is
    disabled for "without" (nothing is fanned out to it, the pump still reads every
    event), enabled for "with"."""

    without: list[Load] = field(default_factory=list)
    with_: list[Load] = field(default_factory=list)
    # During the rounds with the endpoint: events assigned, events the receiver got.
    assigned: int = 0
    received: int = 0
    # After the last round: seconds until every event of the endpoint was delivered.
    catch_up_s: float = 0.0

    @staticmethod
    def rate(loads: list[Load]) -> float:
        seconds = sum(load.seconds for load in loads)
        return sum(load.requests for load in loads) / seconds if seconds else 0.0


@dataclass
class Results:
    args: argparse.Namespace
    machine: dict[str, str]
    background: float
    source: str
    delivered: int
    delivery_seconds: float
    b1: B1
    down_events: int
    down_unique: int
    down_missing: int
    down_duplicates: int
    down_drain_seconds: float
    minutes: float

    @property
    def events_per_s(self) -> float:
        return self.delivered / self.delivery_seconds if self.delivery_seconds else 0.0

    @property
    def b1_cost(self) -> float:
        without = B1.rate(self.b1.without)
        return 1 - B1.rate(self.b1.with_) / without if without else 0.0


def _endpoint(svc: Service, url: str, events: list[str]) -> str:
    made = svc.call("POST", "/v1/webhook-endpoints", {"url": url, "events": events})
    return str(made["id"])


def _wait_delivered(svc: Service, endpoint: str, expected: int, limit: float) -> float:
    """Seconds until every attempt of ``endpoint`` succeeded (at least ``expected``)."""
    started = time.monotonic()
    with connect(svc.server.dsn(SERVICE_DB)) as db:
        while time.monotonic() - started < limit:
            done = db.value(
                "SELECT count(*) FILTER (WHERE status = 'succeeded') FROM webhook_attempts "
                "WHERE endpoint_id = $1::uuid",
                endpoint,
            )
            if done >= expected:
                return time.monotonic() - started
            time.sleep(0.05)
    raise RuntimeError(f"only {done} of {expected} delivered after {limit:.0f} s")


def _fanned_out(dsn: str, endpoint: str) -> list[str]:
    """The endpoint's event ids, once the dispatcher has fanned out every event (the
    count stays the same for a second)."""
    with connect(dsn) as db:
        last: list[str] = []
        while True:
            ids = [
                r["event_id"]
                for r in db.fetch(
                    "SELECT event_id FROM webhook_attempts WHERE endpoint_id = $1::uuid",
                    endpoint,
                )
            ]
            if ids and len(ids) == len(last):
                return ids
            last = ids
            time.sleep(1.0)


def measure_delivery(svc: Service, receiver: Receiver, events: int) -> tuple[int, float]:
    endpoint = _endpoint(svc, receiver.url, ["code.assigned"])
    with connect(svc.server.dsn(SERVICE_DB)) as db:
        set_id = db.value("SELECT id FROM coupon_sets WHERE key = 'bench'")
        started = time.monotonic()
        db.execute(
            "INSERT INTO audit_events (set_id, action, code, recipient_id, details) "
            "SELECT $1, 'assign', 'EVT-' || n, 'r-' || n, '{\"pool\": \"default\"}' "
            "FROM generate_series(1, $2) AS n",
            set_id,
            events,
        )
    _wait_delivered(svc, endpoint, events, limit=600)
    took = time.monotonic() - started
    svc.http.delete(f"/v1/webhook-endpoints/{endpoint}").raise_for_status()
    return events, took


def _enable(svc: Service, endpoint: str, enabled: bool) -> None:
    svc.call("PATCH", f"/v1/webhook-endpoints/{endpoint}", {"enabled": enabled})


def measure_b1(
    svc: Service,
    receiver: Receiver,
    endpoint: str,
    settings: WrkSettings,
    path: str,
    args: argparse.Namespace,
) -> B1:
    result = B1()
    for round_no in range(args.rounds):
        for with_endpoint in (False, True) if round_no % 2 == 0 else (True, False):
            _enable(svc, endpoint, with_endpoint)
            got = len(receiver.received())
            load = svc.load(settings, path, args.seconds)
            if with_endpoint:
                result.with_.append(load)
                result.assigned += load.requests
                result.received += len(receiver.received()) - got
            else:
                result.without.append(load)
            state = "with" if with_endpoint else "without"
            print(f"  B1 {state} the endpoint: {load.rate:,.0f}/s", flush=True)
    _enable(svc, endpoint, True)
    ids = _fanned_out(svc.server.dsn(SERVICE_DB), endpoint)
    result.catch_up_s = _wait_delivered(svc, endpoint, len(ids), limit=900)
    return result


def run(args: argparse.Namespace, workdir: Path) -> Results:
    started = time.monotonic()
    idle = background_load()
    print(f"background load before the run: {idle:.2f} cores", flush=True)
    settings = WrkSettings(threads=args.threads, connections=args.connections)
    path = "/v1/coupon-sets/bench/assignments"
    with embedded_postgres(workdir) as server:
        info = machine(server)
        receiver = Receiver(workdir)
        with service(server, workdir, SETTINGS) as svc:
            print(f"filling the pool: {args.codes:,} codes", flush=True)
            svc.unique_set("bench", args.codes)
            with receiver.running():
                print(f"1/3 delivery: {args.events:,} events", flush=True)
                delivered, seconds = measure_delivery(svc, receiver, args.events)
                print(f"  {delivered / seconds:,.0f} events/s", flush=True)
                print("2/3 B1 without and with an endpoint on code.assigned", flush=True)
                svc.load(settings, path, args.warmup)
                endpoint = _endpoint(svc, receiver.url, ["code.assigned"])
                b1 = measure_b1(svc, receiver, endpoint, settings, path, args)
            print(f"3/3 receiver down for {args.down_seconds} s under load", flush=True)
            svc.load(settings, path, args.down_seconds)  # the receiver is down
            with receiver.running():
                ids = _fanned_out(server.dsn(SERVICE_DB), endpoint)
                back = time.monotonic()
                _wait_delivered(svc, endpoint, len(ids), limit=1800)
                drained = time.monotonic() - back
            counts = Counter(receiver.received())
            missing = sum(1 for i in ids if counts[i] == 0)
            duplicates = sum(counts[i] - 1 for i in ids if counts[i] > 1)
            source = svc.source
    return Results(
        args=args,
        machine=info,
        background=idle,
        source=source,
        delivered=delivered,
        delivery_seconds=seconds,
        b1=b1,
        down_events=len(ids),
        down_unique=len(ids) - missing,
        down_missing=missing,
        down_duplicates=duplicates,
        down_drain_seconds=drained,
        minutes=(time.monotonic() - started) / 60,
    )


def _rates(loads: list[Load]) -> str:
    return ", ".join(f"{load.rate:,.0f}" for load in loads)


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render(res: Results) -> str:
    m = res.machine
    rate_ok = res.events_per_s >= B8_EVENTS_PER_S
    cost_ok = res.b1_cost <= B8_B1_COST
    lost_ok = res.down_missing == 0
    b1 = res.b1
    without, with_ = B1.rate(b1.without), B1.rate(b1.with_)
    p99 = max(load.p99_ms for load in b1.with_)
    p99_without = max(load.p99_ms for load in b1.without)
    share = b1.received / b1.assigned if b1.assigned else 0.0
    rows = [
        ("measure", "result", "target", "verdict"),
        ("---", "---", "---", "---"),
        (
            "events delivered by one instance to a local receiver",
            f"{res.events_per_s:,.0f}/s ({res.delivered:,} in {res.delivery_seconds:.1f} s)",
            f"≥ {B8_EVENTS_PER_S:,}/s",
            _verdict(rate_ok),
        ),
        (
            "B1 without an endpoint",
            f"{without:,.0f}/s (rounds: {_rates(b1.without)}), p99 ≤ {p99_without:.1f} ms",
            "",
            "",
        ),
        (
            "B1 with an endpoint on `code.assigned`",
            f"{with_:,.0f}/s (rounds: {_rates(b1.with_)}), p99 ≤ {p99:.1f} ms",
            "",
            "",
        ),
        ("cost of the endpoint", f"{res.b1_cost:.1%}", f"≤ {B8_B1_COST:.0%}", _verdict(cost_ok)),
        (
            "delivered during the rounds with the endpoint",
            f"{b1.received:,} of {b1.assigned:,} events ({share:.0%}); the rest within "
            f"{b1.catch_up_s:.0f} s after the load",
            "",
            "",
        ),
        (
            f"receiver down {res.args.down_seconds} s under load",
            f"{res.down_events:,} events, {res.down_missing} missing, "
            f"{res.down_duplicates} sent more than once (de-duplicated by `webhook-id`)",
            "none missing",
            _verdict(lost_ok),
        ),
        ("backlog delivered after it came back", f"{res.down_drain_seconds:.0f} s", "", ""),
    ]
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    return f"""{SECTION}

`make bench-events` on {m.get("cpu", "?")}, {m.get("postgres", "PostgreSQL")}; the service
at {res.source}, one process; background load before the run {res.background:.2f} cores;
{res.minutes:.1f} minutes. wrk {res.args.connections} connections, {res.args.threads}
threads; retry schedule for the run `{SCHEDULE}` s.

{table}"""


def write_docs(section: str) -> None:
    write_section(DOCS, SECTION, section, INTRO)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--codes", type=int, default=1_000_000, help="the B1 pool")
    parser.add_argument("--events", type=int, default=100_000, help="for the delivery rate")
    parser.add_argument("--seconds", type=int, default=20, help="each B1 round")
    parser.add_argument("--rounds", type=int, default=2, help="B1 without/with pairs")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--down-seconds", type=int, default=60)
    add_load_arguments(parser)
    return parser.parse_args(argv)


def report(res: Results, workdir: Path) -> str:
    return render(res)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    write = None if args.no_docs else write_docs
    return run_benchmark(
        "bench-events-",
        ("service.log", "receiver.log"),
        lambda workdir: run(args, workdir),
        report,
        write,
    )


if __name__ == "__main__":
    sys.exit(main())

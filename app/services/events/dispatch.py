"""The dispatcher: one per process (``EventDispatcher``, created by the lifespan), all
instances sharing the work through the database.

- **Pump.** Reads the events after the shared cursor (``event_cursor``, one row locked
  with SKIP LOCKED: one instance pumps at a time, the others skip), writes one attempt
  per subscribed, enabled endpoint, evaluates the low-stock alerts of the pools the
  events touched, and moves the cursor, all in one transaction: an event is fanned out
  exactly once, or not yet.
- **Senders.** Claim due attempts (``FOR UPDATE SKIP LOCKED``; each claim leases the row
  for the send's timeout plus a margin, so a process killed mid-send leaves it due again
  and another instance or a restart sends it), send them concurrently with one
  ``aiohttp.ClientSession``, and record each outcome: delivered, retried later (exponential
  back-off with jitter, or the receiver's ``Retry-After``), or failed after the last try.
- **Housekeeping.** Expiry warnings of sets, retention, the queue's metrics.
- **Yielding to requests.** Pump and senders are background work: while the process
  serves HTTP requests, each step is followed by a pause that keeps the dispatcher's
  steps to ``COUPONS_WEBHOOK_BUSY_SHARE`` of the time (docs/events.md, "Under load").

Uses plain connections from the driver pool and opens its own transactions."""

import asyncio
import contextlib
import email.utils
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import aiohttp
import asyncpg
from fastapi import Depends, Request
from prometheus_client import CollectorRegistry, Counter, Gauge

from app.errors import UrlNotAllowed
from app.metrics import InFlight
from app.services.events import alerts, feed, signing, sql
from app.services.events.catalogue import (
    STOCK_ONLY_ACTIONS,
    audit_actions,
    outbox_types,
)
from app.services.events.urls import Resolver, Target, check_url
from app.settings import Settings, retry_delays

logger = logging.getLogger(__name__)

PUMP_BATCH = 1000
MAX_RESPONSE_BYTES = 65_536
LEASE_MARGIN = 5.0
HOUSEKEEPING_EVERY = 5.0
PURGE_EVERY = 3600.0
JITTER = 0.2
MAX_RETRY_AFTER = 86_400.0
MAX_PAUSE = 2.0  # the longest pause after one step while requests are served
ERROR_CHARS = 500
# Audit actions after which a pool's alerts are evaluated.
_STOCK_ACTIONS = frozenset(("assign", "unassign", "return", *STOCK_ONLY_ACTIONS))


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status: int | None
    ms: int
    error: str | None
    retry_after: float | None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from ``Retry-After`` (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max((moment - datetime.now(UTC)).total_seconds(), 0.0), MAX_RETRY_AFTER)


def next_delay(tries: int, schedule: tuple[float, ...], retry_after: float | None) -> float | None:
    """Seconds until the next try after ``tries`` failed ones, or None: give up."""
    if tries > len(schedule):
        return None
    if retry_after is not None:
        return max(retry_after, 0.1)
    base = schedule[tries - 1]
    return base * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter, not a secret


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "coupons_webhook_attempts",
            "Webhook tries by outcome: delivered, retry (failed, tried again later), failed "
            "(the last try failed)",
            ["outcome"],
            registry=registry,
        )
        self.depth = Gauge(
            "coupons_webhook_queue_depth",
            "Webhook attempts due now and not yet sent",
            registry=registry,
        )
        self.lag = Gauge(
            "coupons_webhook_lag_seconds",
            "How long the oldest due webhook attempt has waited",
            registry=registry,
        )
        self.events = Counter(
            "coupons_events_pumped", "Events fanned out to webhook endpoints", registry=registry
        )
        self.paused = Counter(
            "coupons_webhook_paused_seconds",
            "Seconds the dispatcher's pump and senders paused to leave the CPU to requests "
            "(COUPONS_WEBHOOK_BUSY_SHARE)",
            registry=registry,
        )


class EventDispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        registry: CollectorRegistry,
        in_flight: InFlight | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.in_flight = in_flight or InFlight()
        self.schedule = retry_delays(settings.webhook_retry_schedule)
        self.lease = settings.webhook_timeout_seconds + LEASE_MARGIN
        self.production = settings.environment == "production"
        self.resolver = Resolver(allow_private=settings.webhook_allow_private)
        self.metrics = Metrics(registry)
        self._pumped = asyncio.Event()  # the pump wrote attempts: the senders look now
        self._idle = asyncio.Event()  # never set: the pump polls
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._actions = audit_actions(None) + list(STOCK_ONLY_ACTIONS)
        self._outbox_types = outbox_types(None)

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, background: bool = True) -> None:
        """The HTTP client (a test ping needs it), and unless ``background`` is false
        the pump, senders and housekeeping. Called in the running event loop."""
        concurrency = self.settings.webhook_concurrency
        # aiohttp rather than httpx: measured on this project's 2-core machine, one
        # signed POST to a local receiver cost the client 1.1 ms of CPU with httpx
        # (sharded clients, keep-alive) and 0.1 ms with aiohttp (docs/benchmarks.md, B8).
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(
                total=self.settings.webhook_timeout_seconds,
                sock_connect=self.settings.webhook_connect_timeout_seconds,
            ),
            trust_env=False,  # no proxy from the environment: the address checked is the one called
            cookie_jar=aiohttp.DummyCookieJar(),  # receivers' cookies are not kept
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),  # signing.headers sets its own
        )
        if not background:
            return
        senders = 2
        self._tasks = [
            asyncio.create_task(self._forever(self.pump_once, self._idle, "pump")),
            *(
                asyncio.create_task(
                    self._forever(
                        lambda: self.send_once(max(1, concurrency // senders)),
                        self._pumped,
                        "send",
                    )
                )
                for _ in range(senders)
            ),
            asyncio.create_task(self._housekeeping()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _forever(self, step: Any, wake: asyncio.Event, name: str) -> None:
        """``step`` again and again; when it found nothing, wait for a wake-up or the
        poll interval. Errors (the database away) are logged and retried."""
        while True:
            started = time.monotonic()
            try:
                busy = await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event %s step failed; trying again", name, exc_info=True)
                busy = False
                await asyncio.sleep(1.0)
            await self.yield_to_requests(time.monotonic() - started)
            if not busy:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.settings.events_poll_seconds)

    def pause_after(self, worked: float) -> float:
        """How long to pause after a step that took ``worked`` seconds: 0 unless the
        process is serving requests now; then so long that the steps take at most
        ``COUPONS_WEBHOOK_BUSY_SHARE`` of the time (the step's wall time stands for its
        CPU; under load it counts the requests served meanwhile too, so it errs long)."""
        share = self.settings.webhook_busy_share
        if share >= 1 or self.in_flight.requests <= 0:
            return 0.0
        return min(worked * (1 - share) / share, MAX_PAUSE)

    async def yield_to_requests(self, worked: float) -> None:
        pause = self.pause_after(worked)
        if pause > 0:
            self.metrics.paused.inc(pause)
            await asyncio.sleep(pause)

    # ------------------------------------------------------------------ pump

    async def pump_once(self) -> bool:
        """One batch of events fanned out; True when there may be more."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql.LOCK_CURSOR)
            if row is None:
                await conn.execute(sql.INIT_CURSOR)
                row = await conn.fetchrow(sql.LOCK_CURSOR)
                if row is None:  # another instance pumps
                    return False
            position = feed.Position(row["txid"], row["src"], row["source_id"])
            events = await feed.read(
                conn,
                after=position,
                actions=self._actions,
                outbox_types=self._outbox_types,
                limit=PUMP_BATCH,
            )
            if not events:
                return False
            public = [e for e in events if e.action not in STOCK_ONLY_ACTIONS]
            if public:
                await conn.execute(
                    sql.FAN_OUT,
                    [e.id for e in public],
                    [e.type for e in public],
                    [e.body() for e in public],
                )
            touched: set[tuple[uuid.UUID, str | None]] = set()
            for e in events:
                # Redemptions are left out: they use assigned codes, not the free stock.
                if e.action not in _STOCK_ACTIONS or e.data.get("set_id") is None:
                    continue
                set_id = uuid.UUID(str(e.data["set_id"]))
                pool = e.data.get("pool") if e.action not in ("import_codes", "void") else None
                touched.add((set_id, pool if isinstance(pool, str) else None))
            await alerts.evaluate(conn, touched)
            last = events[-1].position
            await conn.execute(sql.MOVE_CURSOR, last.txid, last.src, last.source_id)
        self.metrics.events.inc(len(public))
        if public:
            self._pumped.set()
        return len(events) == PUMP_BATCH

    # ------------------------------------------------------------------ send

    async def send_once(self, batch: int) -> bool:
        """Claim up to ``batch`` due attempts, send them at once, record the outcomes."""
        async with self.pool.acquire() as conn:
            claimed = await conn.fetch(sql.CLAIM, batch, self.lease)
        if not claimed:
            return False
        outcomes = await asyncio.gather(*(self._deliver(row) for row in claimed))
        ids, tries, statuses, delays, codes, ms, errors = [], [], [], [], [], [], []
        health: dict[uuid.UUID, bool] = {}
        for row, outcome in zip(claimed, outcomes, strict=True):
            ids.append(row["id"])
            tries.append(row["tries"])
            codes.append(outcome.status)
            ms.append(outcome.ms)
            errors.append(outcome.error)
            endpoint = row["endpoint_id"]
            health[endpoint] = health.get(endpoint, False) or outcome.ok
            if outcome.ok:
                statuses.append("succeeded")
                delays.append(0.0)
                self.metrics.attempts.labels("delivered").inc()
                continue
            delay = next_delay(row["tries"], self.schedule, outcome.retry_after)
            if delay is None:
                statuses.append("failed")
                delays.append(0.0)
                self.metrics.attempts.labels("failed").inc()
            else:
                statuses.append("pending")
                delays.append(delay)
                self.metrics.attempts.labels("retry").inc()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(sql.RECORD, ids, tries, statuses, delays, codes, ms, errors)
            endpoints = sorted(health, key=str)
            await conn.execute(sql.HEALTH, endpoints, [health[e] for e in endpoints])
            failing = [e for e in endpoints if not health[e]]
            if failing:
                await conn.execute(
                    sql.DISABLE, failing, self.settings.webhook_disable_after_seconds
                )
        return len(claimed) == batch

    async def _deliver(self, row: asyncpg.Record) -> Outcome:
        secrets_ = [row["secret"]] + ([row["previous_secret"]] if row["previous_secret"] else [])
        return await self.send(row["url"], secrets_, msg_id=row["event_id"], body=row["body"])

    async def send(self, url: str, secrets_: list[str], *, msg_id: str, body: str) -> Outcome:
        """One signed POST, its address checked again now; never raises."""
        assert self._http is not None, "start() first"
        started = time.monotonic()
        response_status: int | None = None
        retry_after: float | None = None
        try:
            async with asyncio.timeout(self.settings.webhook_timeout_seconds):
                target = check_url(
                    url,
                    allow_private=self.settings.webhook_allow_private,
                    production=self.production,
                )
                request_url, extra, sni = await self._route(target)
                headers = signing.headers(
                    secrets_, msg_id=msg_id, timestamp=int(time.time()), body=body
                )
                async with self._http.post(
                    request_url,
                    data=body.encode(),
                    headers=headers | extra,
                    allow_redirects=False,
                    server_hostname=sni,
                ) as response:
                    response_status = response.status
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                    # At most this much of the answer is read; a connection left with
                    # an unread rest is closed, not reused.
                    read = 0
                    while read < MAX_RESPONSE_BYTES:
                        chunk = await response.content.readany()
                        if not chunk:
                            break
                        read += len(chunk)
        except UrlNotAllowed as exc:
            return self._outcome(started, None, f"url-not-allowed: {exc.detail}", None)
        except TimeoutError:
            return self._outcome(started, response_status, "timed out", None)
        except (aiohttp.ClientError, OSError) as exc:
            return self._outcome(
                started, response_status, f"{type(exc).__name__}: {exc}".rstrip(": "), None
            )
        if 200 <= response_status < 300:
            return self._outcome(started, response_status, None, None, ok=True)
        return self._outcome(started, response_status, f"HTTP {response_status}", retry_after)

    @staticmethod
    def _outcome(
        started: float, status: int | None, error: str | None, retry_after: float | None,
        *, ok: bool = False,
    ) -> Outcome:  # fmt: skip
        ms = int((time.monotonic() - started) * 1000)
        return Outcome(ok, status, ms, error[:ERROR_CHARS] if error else None, retry_after)

    async def _route(self, target: Target) -> tuple[str, dict[str, str], str | None]:
        """Where to connect: unless private addresses are allowed, the checked address
        the host resolves to now, with the name kept for Host and TLS (SNI, and the
        certificate is checked against it: the third value)."""
        if self.settings.webhook_allow_private:
            return target.url, {}, None
        address = (await self.resolver.resolve(target))[0]
        if target.literal is not None:
            return target.url, {}, None
        shown = f"[{address}]" if address.version == 6 else str(address)
        netloc = f"{shown}:{target.port}"
        url = target.parts._replace(netloc=netloc).geturl()
        default = 443 if target.parts.scheme == "https" else 80
        host = target.host if target.port == default else f"{target.host}:{target.port}"
        return url, {"host": host}, target.host if target.parts.scheme == "https" else None

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        last_purge = 0.0
        while True:
            try:
                async with self.pool.acquire() as conn:
                    await conn.execute(sql.WARN_EXPIRING)
                    queue = await conn.fetchrow(sql.QUEUE)
                    self.metrics.depth.set(queue["depth"])
                    self.metrics.lag.set(queue["lag"])
                    if time.monotonic() - last_purge > PURGE_EVERY:
                        days = self.settings.events_retention_days
                        await conn.execute(sql.PURGE_OUTBOX, days)
                        await conn.execute(sql.PURGE_ATTEMPTS, days)
                        last_purge = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event housekeeping failed; trying again", exc_info=True)
            await asyncio.sleep(min(HOUSEKEEPING_EVERY, self.settings.events_poll_seconds * 10))

    def wake(self) -> None:
        """Something is due now (a test ping, a manual retry): the senders look at once."""
        self._pumped.set()


async def _dispatcher(request: Request) -> EventDispatcher:
    dispatcher: EventDispatcher = request.app.state.events
    return dispatcher


Dispatcher = Annotated[EventDispatcher, Depends(_dispatcher)]

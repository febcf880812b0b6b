"""The confirm: every targeted recipient gets a code, in a few set-based statements per
batch of targets (``sql.CLAIM_BATCH``, ``sql.SHARE_BATCH``).

This is the one module of the package that opens its own transactions, on plain asyncpg
connections it takes from the pool: each batch is its own short transaction, so a
million-target delivery never holds one long transaction that would slow every other
claim. The whole confirm is all or nothing from the outside: when it cannot finish
(codes ran out under a concurrent load, the service stopped, the database failed) the
codes it took go back to the pool and the delivery is ``failed`` with the reason, so
confirming again starts from a clean state and never gives anyone a second code. The
messages can only be exported once the delivery is ``finished``, so a code taken back
was never sent.

A running confirm holds an advisory lock (``locks.Namespace.CONFIRM``), ``locks.Held``
by a transaction on a connection of its own for as long as it runs (transaction-scoped,
so it works through PgBouncer): a delivery ``sending`` whose lock is free was left by a
process that is gone. The backends of a process killed with ``kill -9`` can outlive it,
holding that lock, for as long as PostgreSQL takes to notice the client went (minutes or
hours when the connection's end was never seen, as behind a broken network or a proxy):
so a running confirm also renews the delivery's ``heartbeat_at`` every
``HEARTBEAT_SECONDS``, and every batch transaction working on it holds a shared
``CONFIRM_WORKER`` lock. A delivery ``sending`` whose heartbeat is older than
``STALE_SECONDS`` is a dead process's: every process looks for such deliveries every
``WATCH_SECONDS`` (and at start), ends the backends holding either lock, gives the codes
back and marks it ``failed``. ``Confirmations`` is the process object (created at
start-up) that runs them."""

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app import locks
from app.errors import InsufficientCodes, NotFound
from app.models.api_key import ApiKey
from app.models.coupon_set import CouponSet
from app.models.delivery import Delivery, DeliveryStatus
from app.schemas.delivery import DeliveryPublic
from app.services.assignments import ensure_usable
from app.services.deliveries import sql
from app.services.deliveries.analysis import plan, report
from app.services.deliveries.drafts import key, load, public_of
from app.services.deliveries.giveback import Run, give_back, run_of

logger = logging.getLogger(__name__)

BATCH = 20_000
HEARTBEAT_SECONDS = 5
STALE_SECONDS = 30  # six missed heartbeats
WATCH_SECONDS = 10


class _Stopped(Exception):
    """The service is stopping: the confirm gives its codes back and ends ``failed``."""


class _Shortage(Exception):
    """Codes ran out while a confirm was running (taken by concurrent claims)."""


class _RetryFromStart(Exception):
    """Too few codes above the scan hint: the batch is rolled back and looks again from
    the start of the pool, where codes given back meanwhile may be."""


def _lock_name(delivery_id: uuid.UUID) -> str:
    """The advisory lock a running confirm holds; it is free again the moment the
    holding connection ends, so a crashed confirm is recognised as such."""
    return locks.name(locks.Namespace.CONFIRM, delivery_id)


def _worker_lock_name(delivery_id: uuid.UUID) -> str:
    """Held shared by every batch transaction of the confirm (its row locks with it)."""
    return locks.name(locks.Namespace.CONFIRM_WORKER, delivery_id)


class Confirmations:
    """The confirms running in this process; stopped cleanly at shutdown."""

    def __init__(self, pool: asyncpg.Pool, *, batch_size: int = BATCH, workers: int = 2) -> None:
        self.pool = pool
        self.batch_size = batch_size
        self.workers = workers
        self.tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        self.stopping.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def recover(self) -> None:
        """At start, then every ``WATCH_SECONDS``: a delivery left ``sending`` by a
        process that is gone (its lock is free, or its heartbeat stopped) gives its codes
        back and becomes ``failed``; confirming again starts over. A database that is not
        there yet only postpones this to the next look."""
        await self._look()
        self._watchdog = asyncio.create_task(self._watch(), name="confirm-watchdog")

    async def _watch(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(WATCH_SECONDS)
            await self._look()

    async def _look(self) -> None:
        try:
            await self._recover()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("could not look for interrupted deliveries: %s", exc)

    async def _recover(self) -> None:
        async with self.pool.acquire() as connection:
            for left in await connection.fetch(sql.SENDING, STALE_SECONDS):
                delivery_id = left["id"]
                if delivery_id in self.tasks:  # running here
                    continue
                name = _lock_name(delivery_id)
                reason = "interrupted: the service restarted"
                held = await locks.hold(self.pool, name, wait=False)
                if held is None and left["stale"]:
                    await _end_backends(connection, delivery_id)
                    held = await locks.hold(self.pool, name, wait=False)
                    reason = "interrupted: the process running the confirm stopped"
                if held is None:
                    continue
                try:
                    # Read again under the lock: a confirm that finished after the list
                    # was read let its lock go too, and is not to be touched.
                    row = await connection.fetchrow(sql.RUN, delivery_id)
                    if row is not None and row["status"] == DeliveryStatus.sending:
                        logger.warning("delivery %s was left sending: failing it", delivery_id)
                        await _fail(connection, run_of(row), reason)
                finally:
                    await held.release()

    async def _heartbeat(self, delivery_id: uuid.UUID) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.pool.execute(sql.HEARTBEAT, delivery_id)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("no heartbeat for delivery %s: %s", delivery_id, exc)

    async def confirm(
        self, *, delivery_id: str, actor: ApiKey, wait: float
    ) -> tuple[uuid.UUID, bool]:
        """Start (or find) the confirm of a delivery; wait up to ``wait`` seconds for it.
        Returns the id and whether the delivery is no longer ``sending``."""
        delivery_key = key(delivery_id)
        running = self.tasks.get(delivery_key)
        if running is None:
            held = await locks.hold(self.pool, _lock_name(delivery_key), wait=False)
            if held is None:  # confirming elsewhere
                status = await self.pool.fetchval(sql.STATUS, delivery_key)
                if status is None:
                    raise NotFound(f"No delivery has the id '{delivery_key}'.")
                return delivery_key, bool(status != DeliveryStatus.sending)
            try:
                connection: asyncpg.Connection = await self.pool.acquire()
            except BaseException:
                await held.release()
                raise
            try:
                started = await _begin(connection, delivery_key, actor)
            except BaseException:
                await self.pool.release(connection)
                await held.release()
                raise
            if started is None:  # finished already
                await self.pool.release(connection)
                await held.release()
                return delivery_key, True
            running = asyncio.create_task(self._work(connection, held, started))
            self.tasks[delivery_key] = running
            running.add_done_callback(lambda _: self.tasks.pop(delivery_key, None))
        try:
            await asyncio.wait_for(asyncio.shield(running), timeout=wait)
        except TimeoutError:
            return delivery_key, False
        return delivery_key, True

    async def _work(self, connection: asyncpg.Connection, held: locks.Held, run: Run) -> None:
        beat = asyncio.create_task(self._heartbeat(run.delivery_id))
        try:
            try:
                await self._claim_all(connection, run)
            except _Shortage as exc:
                await _fail(connection, run, f"insufficient-codes: {exc}")
            except _Stopped:
                await _fail(connection, run, "interrupted: the service stopped")
            except asyncio.CancelledError:
                await _fail(connection, run, "interrupted: the confirm was cancelled")
                raise
            except Exception as exc:
                logger.exception("confirm of delivery %s failed", run.delivery_id)
                await _fail(connection, run, f"error: {type(exc).__name__}")
        except Exception:
            # The database is gone: the lock goes with its connection, and the next
            # start (or confirm) finds the delivery sending with a free lock.
            logger.exception("could not record the end of delivery %s", run.delivery_id)
            connection.terminate()
        finally:
            beat.cancel()
            try:
                await self.pool.release(connection)
            finally:
                # Even when the connection could not be given back: a lock left held
                # would keep the delivery "running" until the watchdog ended the
                # backend, here, of this very process.
                await held.release()

    async def _claim_all(self, connection: asyncpg.Connection, run: Run) -> None:
        """On the run's own connection and on ``workers - 1`` more from the pool."""
        async with contextlib.AsyncExitStack() as stack:
            extra = [
                await stack.enter_async_context(self.pool.acquire())
                for _ in range(self.workers - 1)
            ]
            await _claim_all([connection, *extra], run, self.stopping, self.batch_size)


async def _confirmations(request: Request) -> Confirmations:
    confirmations: Confirmations = request.app.state.confirmations
    return confirmations


ConfirmationsDep = Annotated[Confirmations, Depends(_confirmations)]


async def confirm_delivery(
    session: AsyncSession,
    confirmations: Confirmations,
    *,
    delivery_id: str,
    actor: ApiKey,
    wait: float,
) -> tuple[DeliveryPublic, bool]:
    """Confirm a delivery (on the confirm's own connections), then read it as it is now
    in the request's session. Returns it and whether it is no longer ``sending``."""
    delivery_key, settled = await confirmations.confirm(
        delivery_id=delivery_id, actor=actor, wait=wait
    )
    delivery = await load(session, str(delivery_key))
    if delivery.status == DeliveryStatus.failed and (delivery.failure_reason or "").startswith(
        "insufficient-codes"
    ):
        raise InsufficientCodes(
            f"The confirm failed and gave its codes back: {delivery.failure_reason}.",
            delivery_status=delivery.status,
        )
    return await public_of(session, delivery), settled


async def _begin(
    connection: asyncpg.Connection, delivery_key: uuid.UUID, actor: ApiKey
) -> Run | None:
    """With the delivery's lock held: check it can be confirmed, and mark it ``sending``.
    None when there is nothing to start (finished)."""
    async with connection.transaction():
        row = await connection.fetchrow(sql.DELIVERY_FOR_START, delivery_key)
        if row is None:
            raise NotFound(f"No delivery has the id '{delivery_key}'.")
        delivery, run = _plain_delivery(row), run_of(row)
        if delivery.status == DeliveryStatus.finished:
            return None
        coupon_set = await _coupon_set(connection, delivery.coupon_set_id)
        if delivery.status == DeliveryStatus.sending:
            # Sending, but nobody holds its lock: the process that ran it is gone.
            await give_back(connection, run, None, "interrupted: confirm run again")
        run.last_seq = await _check_and_start(connection, delivery, coupon_set, actor)
        run.api_key_id = actor.id
    return run


def _plain(row: asyncpg.Record) -> dict[str, Any]:
    """A row's columns as the model's attributes (``metadata`` is ``metadata_`` there)."""
    values = dict(row)
    values["metadata_"] = json.loads(values.pop("metadata"))
    return values


def _plain_delivery(row: asyncpg.Record) -> Delivery:
    """A plain object (not attached to any session) of a ``sql.DELIVERY_FOR_START`` row."""
    values = _plain(row)
    del values["pool_name"], values["shared_code"]
    return Delivery(**values)


async def _coupon_set(connection: asyncpg.Connection, set_id: uuid.UUID) -> CouponSet:
    """A plain object (not attached to any session) of the delivery's set."""
    row = await connection.fetchrow(sql.COUPON_SET, set_id)
    assert row is not None
    return CouponSet(**_plain(row))


async def _check_and_start(
    connection: asyncpg.Connection, delivery: Delivery, coupon_set: CouponSet, actor: ApiKey
) -> int:
    """The analysis again, in the confirm's transaction: refused when codes are short.
    Returns the seq of the last target that gets a message."""
    ensure_usable(coupon_set)
    planned = await plan(connection, delivery)
    result = await report(connection, delivery, coupon_set, planned)
    if not result.enough:
        what = "uses left" if delivery.pool_id is None else "free codes"
        raise InsufficientCodes(
            f"The set has {result.codes_available} {what} and the delivery needs "
            f"{result.codes_needed}: {result.shortfall} missing. See its analysis, then "
            "analyse again.",
            shortfall=result.shortfall,
            codes_needed=result.codes_needed,
            codes_available=result.codes_available,
            messages=result.messages,
        )
    analysis = json.dumps(result.model_dump(mode="json"))
    await connection.execute(sql.START, delivery.id, analysis, planned.last_seq, actor.id)
    return planned.last_seq


async def _claim_all(
    connections: list[asyncpg.Connection],
    run: Run,
    stopping: asyncio.Event,
    batch_size: int,
) -> None:
    """Every batch, on as many connections as given (two keep both cores of a small
    machine busy: the work is in PostgreSQL, one backend per connection). Batches take
    disjoint targets, and their codes with SKIP LOCKED, so they never wait on each
    other; a failing batch stops the others after their current one."""
    bounds = [row["seq"] for row in await connections[0].fetch(
        sql.BOUNDS, run.delivery_id, run.last_seq, batch_size
    )]  # fmt: skip
    if not bounds or bounds[-1] != run.last_seq:
        bounds.append(run.last_seq)
    ranges = list(zip([0, *bounds[:-1]], bounds, strict=True))
    ranges.reverse()  # popped from the end: list order
    failed = asyncio.Event()

    async def work(connection: asyncpg.Connection) -> None:
        hint = 0
        try:
            while ranges and not failed.is_set():
                if stopping.is_set():
                    raise _Stopped
                low, high = ranges.pop()
                hint = await _claim_range(connection, run, low, high, batch_size, hint)
        except BaseException:
            failed.set()
            raise

    results = await asyncio.gather(
        *(work(c) for c in connections[: max(1, len(ranges))]), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    await connections[0].execute(sql.FINISH, run.delivery_id)


async def _claim_range(
    connection: asyncpg.Connection, run: Run, low: int, high: int, batch_size: int, hint: int
) -> int:
    """The targets with ``low < seq <= high``, in one transaction; returns the scan hint."""
    attempts = 0
    while True:
        attempts += 1
        try:
            async with connection.transaction():
                # Marks this backend as working on the confirm until the batch ends (so
                # a dead process's backend can be found and ended: _end_backends).
                await connection.execute(locks.XACT_LOCK_SHARED, _worker_lock_name(run.delivery_id))
                if run.pool_id is None:
                    row = await connection.fetchrow(
                        sql.SHARE_BATCH,
                        run.delivery_id, low, high, batch_size, run.set_id,
                        run.channel, str(run.delivery_id), run.api_key_id, run.shared_code,
                    )  # fmt: skip
                    claimed, kept = row["claimed"], row["targets"] - row["claimed"]
                else:
                    row = await connection.fetchrow(
                        sql.CLAIM_BATCH,
                        run.delivery_id, low, high, batch_size, run.pool_id,
                        run.set_id, run.channel, str(run.delivery_id), run.api_key_id,
                        hint, run.audit_details,
                    )  # fmt: skip
                    if row["claimed"] < row["needed"]:
                        if hint:
                            raise _RetryFromStart
                        raise _Shortage(
                            f"{row['needed'] - row['claimed']} codes were missing when "
                            "other claims took them during the confirm"
                        )
                    claimed, kept = row["claimed"], row["targets"] - row["needed"]
                    hint = max(hint, row["max_id"] or 0)
                await connection.execute(
                    sql.PROGRESS, run.delivery_id, row["targets"], claimed, kept
                )
            return hint
        except _RetryFromStart:
            hint = 0
        except asyncpg.UniqueViolationError:
            # A target got a code from a single assignment meanwhile: run the batch
            # again; they now keep theirs.
            if attempts >= 20:
                raise


async def _fail(connection: asyncpg.Connection, run: Run, reason: str) -> None:
    async with connection.transaction():
        await give_back(connection, run, None, reason)
        await connection.execute(sql.FAIL, run.delivery_id, reason)


async def _end_backends(connection: asyncpg.Connection, delivery_id: uuid.UUID) -> None:
    """Ends the backends a dead process left working on the confirm of ``delivery_id``:
    they hold its lock, and row locks its give-back would wait for."""
    for name in (_lock_name(delivery_id), _worker_lock_name(delivery_id)):
        for row in await connection.fetch(sql.LOCK_HOLDERS, name):
            ended = await connection.fetchval(sql.TERMINATE, row["pid"])
            logger.warning(
                "delivery %s: no heartbeat for %d s; ended backend %d (%s) of the process "
                "that ran its confirm",
                delivery_id,
                STALE_SECONDS,
                row["pid"],
                "gone" if ended else "still there",
            )

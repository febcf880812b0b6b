"""Idempotency-Key on every POST, PATCH and DELETE.

The first successful response (status, body, Location) is stored per API key in the
same transaction as the request's effects, so either both exist or neither does: a
crash can never leave an effect without its record (which a retry would repeat) or a
record without its effect. While a request holds a key, a transaction-scoped advisory
lock tells a concurrent duplicate to come back later (409); afterwards a retry gets the
stored response with ``Idempotent-Replayed: true``. The same key with another request
(method, path, query or body) is refused with 422. Failed requests change nothing and
store nothing, so retrying them runs them again."""

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Header, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import locks
from app.auth import CurrentKey
from app.db import Session
from app.errors import AppError, IdempotencyKeyInUse, IdempotencyKeyReused, ValidationFailed
from app.models.idempotency import IdempotencyRecord
from app.problems import merge_responses, problem_responses

logger = logging.getLogger(__name__)

KEEP_FOR = timedelta(hours=24)
PURGE_EVERY = timedelta(hours=1)
_PURGE_BATCH = 10_000
WRITE_METHODS = frozenset({"POST", "PATCH", "DELETE"})
# The one definition of a valid Idempotency-Key (routes that declare the header use it).
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
_KEY_MATCH = re.compile(KEY_PATTERN)
_REPLAYED_HEADERS = ("content-type", "location")


class _Replay(AppError):
    """Carries a stored response out of the dependency; rendered as that response."""

    def __init__(self, record: IdempotencyRecord) -> None:
        super().__init__("replay")
        self.record = record


def replay_response(record: IdempotencyRecord) -> Response:
    headers = {**record.headers, "Idempotent-Replayed": "true"}
    return Response(content=record.body, status_code=record.status_code, headers=headers)


class BodyHasher:
    """The fingerprint of a request: method, path, query and body, hashed as the body
    goes by, so a route that streams a large upload never holds it whole."""

    def __init__(self, request: Request) -> None:
        self._hash = hashlib.sha256(
            b"\n".join(
                [request.method.encode(), request.url.path.encode(), request.url.query.encode()]
            )
            + b"\n"
        )

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def streams_body(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a route that reads its (large) body as a stream: the Idempotency-Key check
    does not read the body ahead of it; the route passes every chunk to
    ``request.state.body_hasher`` (see ``hashed_stream``) when a key was sent."""
    endpoint.streams_body = True  # type: ignore[attr-defined]
    return endpoint


async def hashed_stream(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives, fed to the Idempotency-Key fingerprint if any."""
    hasher: BodyHasher | None = getattr(request.state, "body_hasher", None)
    async for chunk in request.stream():
        if chunk:
            if hasher is not None:
                hasher.update(chunk)
            yield chunk


class _Pending:
    def __init__(self, owner: str, key: str, hasher: BodyHasher, session: AsyncSession) -> None:
        self.owner, self.key, self.hasher, self.session = owner, key, hasher, session


async def idempotency_key(
    request: Request,
    session: Session,
    caller: CurrentKey,
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Any unique string (a UUID): retries with the same key and body "
            "get the first response instead of running again. Kept 24 hours.",
            # Documented only: checked below, with a message of its own.
            json_schema_extra={"pattern": KEY_PATTERN},
        ),
    ] = None,
) -> str | None:
    if key is None:
        return None
    if not _KEY_MATCH.match(key):
        raise ValidationFailed(
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
            errors=[
                {"loc": ["header", "Idempotency-Key"], "message": "invalid", "type": "value_error"}
            ],
        )
    owner = caller.secret_sha256
    hasher = BodyHasher(request)
    streamed = getattr(request.scope.get("endpoint"), "streams_body", False)
    if not streamed:
        hasher.update(await request.body())
    locked = await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(hashtextextended(:name, 0))"),
        {"name": locks.name(locks.Namespace.IDEMPOTENCY, owner, key)},
    )
    if not locked:
        raise IdempotencyKeyInUse(
            "A request with this Idempotency-Key is still running; retry after it finishes.",
            headers={"Retry-After": "1"},
        )
    record = await session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.owner == owner,
            IdempotencyRecord.key == key,
            IdempotencyRecord.created_at
            > text(f"now() - interval '{int(KEEP_FOR.total_seconds())} seconds'"),
        )
    )
    if record is not None:
        if streamed:  # read (and drop) the body only to compare it
            async for chunk in request.stream():
                hasher.update(chunk)
        if record.fingerprint != hasher.hexdigest():
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used with a different request; use a new key."
            )
        raise _Replay(record)
    request.state.idempotency = _Pending(owner, key, hasher, session)
    request.state.body_hasher = hasher
    return key


IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]


async def _store(pending: _Pending, response: Response) -> None:
    headers = {name: value for name, value in response.headers.items() if name in _REPLAYED_HEADERS}
    values = {
        "owner": pending.owner,
        "key": pending.key,
        "fingerprint": pending.hasher.hexdigest(),
        "status_code": response.status_code,
        "headers": headers,
        "body": bytes(response.body),
    }
    stmt = insert(IdempotencyRecord).values(**values)
    # An expired record of the same key is replaced; a live one cannot exist here (the
    # dependency found none while holding the key's lock).
    stmt = stmt.on_conflict_do_update(
        index_elements=[IdempotencyRecord.owner, IdempotencyRecord.key],
        set_={
            **{k: v for k, v in values.items() if k not in ("owner", "key")},
            "created_at": text("now()"),
        },
    )
    await pending.session.execute(stmt)


class IdempotentRoute(APIRoute):
    """Adds the Idempotency-Key dependency to write routes and stores their successful
    responses before the request's transaction commits."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = set(kwargs.get("methods") or ())
        if methods & WRITE_METHODS:
            kwargs["dependencies"] = [*(kwargs.get("dependencies") or []), Depends(idempotency_key)]
            kwargs["responses"] = merge_responses(
                kwargs.get("responses") or {},
                problem_responses(IdempotencyKeyInUse, IdempotencyKeyReused),
            )
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except _Replay as replay:
                return replay_response(replay.record)
            pending: _Pending | None = getattr(request.state, "idempotency", None)
            if pending is not None and 200 <= response.status_code < 300:
                await _store(pending, response)
            return response

        return handle


# Records a lookup no longer honours, oldest first, a bounded number per transaction.
# A record a request is replacing right now (an expired key used again) is locked by
# that request: skipped, and the age is checked again on the row as it is when
# deleted, so a fresh record is never taken for its expired predecessor.
_PURGE = """
    DELETE FROM idempotency_records
    WHERE (owner, key) IN (
        SELECT owner, key FROM idempotency_records
        WHERE created_at < now() - $1::interval
        ORDER BY created_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED)
      AND created_at < now() - $1::interval
"""


async def purge_expired(pool: asyncpg.Pool, *, batch: int = _PURGE_BATCH) -> int:
    """Delete the records older than ``KEEP_FOR`` (a lookup ignores them already), in
    short transactions of at most ``batch`` rows; returns how many went."""
    removed = 0
    while True:
        async with pool.acquire() as connection:
            status = await connection.execute(_PURGE, KEEP_FOR, batch)
        count = int(status.split()[-1])  # "DELETE <n>"
        removed += count
        if count < batch:
            return removed


async def purge_periodically(pool: asyncpg.Pool) -> None:
    """``purge_expired`` at start and then every ``PURGE_EVERY``, until cancelled, so
    the table holds about a day of records instead of growing for ever. Every worker
    process runs it; concurrent runs only delete fewer rows each."""
    while True:
        try:
            if removed := await purge_expired(pool):
                logger.info("removed %d idempotency records older than %s", removed, KEEP_FOR)
        except Exception:  # the database away, or anything else: next time
            logger.warning("could not remove expired idempotency records", exc_info=True)
        await asyncio.sleep(PURGE_EVERY.total_seconds())

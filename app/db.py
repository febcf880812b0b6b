"""The database engine and the request's session: one transaction per request."""

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.db_errors import sqlstate
from app.errors import AppError
from app.settings import Settings


# Behind PgBouncer in transaction mode, consecutive transactions of one client
# connection run on different server connections, and each server connection serves
# many clients: a named prepared statement would be missing on the next server, or
# would clash with another client's of the same name (asyncpg numbers its statements
# from 1 in every process). So no statement is cached, asyncpg's or SQLAlchemy's,
# and every one is the unnamed statement, which PostgreSQL replaces at each Parse: it
# lives within one transaction (SQLAlchemy always runs in one; asyncpg sends Parse again
# with Bind when its statement cache is off, for statements in autocommit). Unnamed,
# not uniquely named (SQLAlchemy's uuid4 recipe): a uniquely named statement whose Close
# reaches another server connection stays on its server until that connection ends
# (SQLAlchemy's documentation warns of the build-up), while there is only ever one
# unnamed statement per server connection. The cost: a Parse (and a plan) per statement,
# and a second round trip (Parse/Describe, then Parse/Bind/Execute); docs/scaling.md.
def _no_named_statements() -> str:
    return ""


def create_engine(settings: Settings, url: str, *, pgbouncer: bool | None = None) -> AsyncEngine:
    """The ORM's engine on ``url``; ``pgbouncer`` (default: COUPONS_DB_PGBOUNCER) for a
    URL that goes through PgBouncer in transaction mode."""
    connect_args: dict[str, Any] = {"server_settings": {"application_name": "coupon-service"}}
    if settings.db_pgbouncer if pgbouncer is None else pgbouncer:
        connect_args |= {
            "statement_cache_size": 0,  # asyncpg's
            "prepared_statement_cache_size": 0,  # SQLAlchemy's
            "prepared_statement_name_func": _no_named_statements,
        }
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        # No pre-ping (a round trip per request): a connection broken by a database restart
        # fails one request with a 503 and is replaced. No reset on return either (another
        # round trip): every session ends its transaction with a commit or a rollback.
        pool_reset_on_return=None,
        connect_args=connect_args,
    )


async def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


Engine = Annotated[AsyncEngine, Depends(_engine)]


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after the commit, without lazy loads.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Commit once when the endpoint succeeded, roll back on any error.

    Used with ``scope="function"`` so the commit runs before the response is sent:
    a failed commit becomes an error response, never a success the database lost."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


Session = Annotated[AsyncSession, Depends(_request_session, scope="function")]


async def _keep_session(connection: asyncpg.Connection) -> None:
    """What the pool runs on a connection given back, after asyncpg's own part (it rolls
    back a transaction left open): nothing. asyncpg's default, ``Connection.reset()``,
    sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` each time: a
    round trip per acquire, for session state this service never creates (its advisory
    locks are transaction-scoped, its settings ``SET LOCAL``, it listens on no channel:
    docs/scaling.md), and which behind PgBouncer would reach some other server
    connection anyway."""


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg ships no types
    """An asyncpg pool whose every ``acquire`` gives up after ``acquire_timeout`` seconds
    unless the caller says otherwise: with all connections busy, a request gets a
    ``503`` with ``Retry-After`` (``TimeoutError``, app/problems.py) instead of waiting
    for ever, on every path that uses the pool, as the session's pool does."""

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


async def create_driver_pool(
    settings: Settings, url: str, *, pgbouncer: bool | None = None
) -> asyncpg.Pool:
    """Plain asyncpg connections in autocommit, for hot paths that are one statement (its
    own transaction) and cannot afford the ORM session. Connects lazily; acquiring a
    connection waits ``COUPONS_DB_POOL_TIMEOUT`` at most. ``pgbouncer`` (default:
    COUPONS_DB_PGBOUNCER): no statement cache, every statement unnamed (see above)."""
    behind_pgbouncer = settings.db_pgbouncer if pgbouncer is None else pgbouncer
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    pool = BoundedPool(
        dsn,
        acquire_timeout=settings.db_pool_timeout,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        min_size=0,
        max_size=settings.db_pool_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        connect=None,
        setup=None,
        init=None,
        reset=_keep_session,
        loop=None,
        server_settings={"application_name": "coupon-service"},
        **({"statement_cache_size": 0} if behind_pgbouncer else {}),
    )
    await pool
    return pool


async def create_session_pool(settings: Settings) -> asyncpg.Pool | None:
    """Plain asyncpg connections straight to PostgreSQL (DATABASE_DIRECT_URL) for work
    that keeps state in its session across transactions: an import job stages its rows
    in a temporary table of its connection. None when the driver pool's connections are
    sessions already (DATABASE_URL is direct): that pool serves."""
    if settings.database_direct_url is None or not settings.db_pgbouncer:
        return None
    return await create_driver_pool(settings, settings.database_direct_url, pgbouncer=False)


async def session_driver(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session, inside the session's transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


async def _driver_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.driver_pool
    return pool


DriverPool = Annotated[asyncpg.Pool, Depends(_driver_pool)]


def _unique_violation(exc: IntegrityError) -> str | None:
    """The name of the unique constraint or index an insert/update hit, if that is the error."""
    if sqlstate(exc) != "23505":
        return None
    return str(getattr(exc.orig.__cause__ if exc.orig else None, "constraint_name", ""))


async def flush_unique(
    session: AsyncSession, apply: Callable[[], object], *, index: str, conflict: AppError
) -> None:
    """Run ``apply`` (which adds or changes objects) and flush it in a savepoint: a clash
    on the unique ``index`` raises ``conflict`` and leaves the transaction usable.

    The changes are made inside the savepoint because ``begin_nested`` first flushes
    whatever is pending, which would put a clash outside it."""
    try:
        async with session.begin_nested():
            apply()
            await session.flush()
    except IntegrityError as exc:
        if _unique_violation(exc) != index:
            raise
        raise conflict from None

"""API keys: create (secret shown once), list, revoke, find by secret, provision admins.

Keys are bearer secrets of 256 random bits, so a plain SHA-256 is a safe way to store
them (there is no dictionary to attack) and lets a request find its key by index."""

import asyncio
import hashlib
import logging
import math
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import ColumnElement, delete, event, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import locks
from app.errors import LastAdminKey, NotFound
from app.models.api_key import ApiKey, Scope
from app.models.ui_session import UiSession
from app.pagination import PageParams, paginate
from app.schemas.api_key import ApiKeyCreate

SECRET_PREFIX = "cpn_"  # noqa: S105 (a marker that makes leaked keys searchable)
# Shown in lists to tell keys apart: "cpn_" and 8 characters, 48 bits of a 256-bit secret.
_SHOWN_PREFIX_LENGTH = len(SECRET_PREFIX) + 8


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _active() -> list[ColumnElement[bool]]:
    return [
        ApiKey.revoked_at.is_(None),
        or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now()),
    ]


# Every request authenticates; a key found active is remembered for a few seconds so the
# hot paths (assign, redeem) skip that query. A revocation must reach every process:
# each asks the database every REVISION_SECONDS whether any key was revoked since it last
# asked (one small query, not LISTEN, which PgBouncer in transaction mode cannot carry),
# and trusts what it remembers only while its last answer is at most FRESH_SECONDS old.
# So a revoked key is refused by every process within FRESH_SECONDS, and by the process
# that revoked it from the moment the revocation answered.
CACHE_SECONDS = 5.0
REVISION_SECONDS = 0.5
FRESH_SECONDS = 1.0
_CACHE_SIZE = 10_000
_FIND_PLAIN = (
    f"SELECT {', '.join(ApiKey.__table__.columns.keys())} FROM api_keys "  # noqa: S608 (the model's column names)
    "WHERE secret_sha256 = $1 AND revoked_at IS NULL "
    "AND (expires_at IS NULL OR expires_at > now())"
)
# Changes with every revocation (and with any key deleted or un-revoked by hand).
_REVISION = "SELECT count(*), count(revoked_at), max(revoked_at) FROM api_keys"

logger = logging.getLogger(__name__)


class KeyCache:
    """The keys this process found active, each for ``CACHE_SECONDS`` at most: one per
    process, created at start-up, kept true by ``watch`` (a task of the process). Keys
    are looked up through the request's session (``find_active``) or, for the lean
    paths, on the plain pool (``find_plain``).

    A lookup races a revocation: it may read the row just before the revocation commits
    and remember it just after. ``invalidate`` (before the revocation commits and again
    once it has, and whenever the revision changes) therefore drops the key, drops the
    shared lookups in flight, and moves the epoch on: a lookup remembers what it read
    only if no invalidation happened since it began."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._keys: dict[str, tuple[float, ApiKey]] = {}
        # Lookups on the plain pool in flight, by digest, with the epoch they began in:
        # when a key's entry expires under load, the requests that find it expired
        # share one query.
        self._lookups: dict[str, tuple[int, asyncio.Task[ApiKey | None]]] = {}
        self._epoch = 0
        self._revision: tuple[object, ...] | None = None
        self._checked_at = -math.inf  # when the last revision check that answered began

    def active(self, secret: str) -> ApiKey | None:
        """The key of ``secret`` when it is remembered as active, else None (which says
        nothing: ``find_active`` and ``find_plain`` ask the database)."""
        now = time.monotonic()
        if now - self._checked_at > FRESH_SECONDS:
            return None  # revocations elsewhere may not have been seen
        cached = self._keys.get(hash_secret(secret))
        if cached is not None and cached[0] > now:
            key = cached[1]
            if key.expires_at is None or key.expires_at > datetime.now(UTC):
                return key
        return None

    @property
    def epoch(self) -> int:
        return self._epoch

    async def find_plain(self, secret: str) -> ApiKey | None:
        """``find_active`` on the plain asyncpg pool (the lean paths): the same query and
        the same cache."""
        if (key := self.active(secret)) is not None:
            return key
        digest = hash_secret(secret)
        shared = self._lookups.get(digest)
        if shared is None or shared[0] != self._epoch:
            lookup = asyncio.create_task(self._find_plain(digest, self._epoch))
            self._lookups[digest] = (self._epoch, lookup)
            lookup.add_done_callback(lambda done: self._lookup_done(digest, done))
        else:
            lookup = shared[1]
        # Shielded: a request that goes away does not cancel the others' lookup.
        return await asyncio.shield(lookup)

    def _lookup_done(self, digest: str, done: "asyncio.Task[ApiKey | None]") -> None:
        shared = self._lookups.get(digest)
        if shared is not None and shared[1] is done:
            del self._lookups[digest]

    async def _find_plain(self, digest: str, epoch: int) -> ApiKey | None:
        now = time.monotonic()
        async with self._pool.acquire() as connection:
            found = await connection.fetchrow(_FIND_PLAIN, digest)
        key = None if found is None else ApiKey(**dict(found))
        self.remember(digest, key, now, epoch)
        return key

    def remember(self, digest: str, key: ApiKey | None, now: float, epoch: int) -> None:
        """What a lookup that began at ``now`` in ``epoch`` found for ``digest`` (None: no
        active key); forgotten at once if an invalidation came in between."""
        if key is None:
            self._keys.pop(digest, None)
            return
        if epoch != self._epoch:
            return
        if len(self._keys) >= _CACHE_SIZE:
            self._keys.clear()
        self._keys[digest] = (now + CACHE_SECONDS, key)

    def invalidate(self, digest: str | None = None) -> None:
        """Forget ``digest`` (every key without one), and every lookup in flight."""
        self._epoch += 1
        if digest is None:
            self._keys.clear()
        else:
            self._keys.pop(digest, None)
        self._lookups.clear()

    def clear(self) -> None:
        self.invalidate()

    async def check(self) -> None:
        """One revision check: any key revoked since the last one empties the cache."""
        began = time.monotonic()
        async with self._pool.acquire() as connection:
            revision = tuple(await connection.fetchrow(_REVISION))
        if revision != self._revision:
            if self._revision is not None:
                self.invalidate()
            self._revision = revision
        self._checked_at = began

    async def watch(self) -> None:
        """``check`` every ``REVISION_SECONDS`` until cancelled. While the database does
        not answer, nothing remembered is trusted (every request asks it)."""
        while True:
            try:
                await self.check()
            except Exception as exc:  # the database away: logged, tried again
                logger.warning("could not check for revoked API keys: %s", type(exc).__name__)
            await asyncio.sleep(REVISION_SECONDS)


async def _key_cache(request: Request) -> KeyCache:
    cache: KeyCache = request.app.state.key_cache
    return cache


Keys = Annotated[KeyCache, Depends(_key_cache)]


def _snapshot(key: ApiKey) -> ApiKey:
    """A copy bound to no session: safe to share between requests."""
    columns = ApiKey.__table__.columns.keys()
    return ApiKey(**{name: getattr(key, name) for name in columns})


async def find_active(session: AsyncSession, *, secret: str, cache: KeyCache) -> ApiKey | None:
    if (key := cache.active(secret)) is not None:
        return key
    digest = hash_secret(secret)
    now, epoch = time.monotonic(), cache.epoch
    stmt = select(ApiKey).where(ApiKey.secret_sha256 == digest, *_active())
    found = (await session.execute(stmt)).scalar_one_or_none()
    snapshot = None if found is None else _snapshot(found)
    cache.remember(digest, snapshot, now, epoch)
    return snapshot


async def create_api_key(
    session: AsyncSession, *, data: ApiKeyCreate, created_by: ApiKey | None
) -> tuple[ApiKey, str]:
    secret = new_secret()
    key = ApiKey(
        name=data.name,
        prefix=secret[:_SHOWN_PREFIX_LENGTH],
        secret_sha256=hash_secret(secret),
        scopes=[scope.value for scope in data.scopes],
        expires_at=data.expires_at,
        created_by=created_by.id if created_by else None,
    )
    session.add(key)
    await session.flush()
    await session.refresh(key)
    return key, secret


async def list_api_keys(session: AsyncSession, *, params: PageParams) -> list[ApiKey]:
    stmt = paginate(select(ApiKey), ApiKey, params)
    return list((await session.execute(stmt)).scalars())


async def get_api_key(session: AsyncSession, key_id: uuid.UUID) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"No API key has the id {key_id}.")
    return key


async def get_live_api_key(session: AsyncSession, key_id: uuid.UUID) -> ApiKey:
    """A key that was not revoked: a revoked key is deleted as far as a GET goes."""
    key = await get_api_key(session, key_id)
    if key.revoked_at is not None:
        raise NotFound(f"No API key has the id {key_id}: it was revoked.")
    return key


async def revoke_api_key(session: AsyncSession, *, key_id: uuid.UUID, cache: KeyCache) -> ApiKey:
    # Lock the active admin keys first: two concurrent revocations cannot both see
    # "another admin remains" and leave none.
    admins = (
        await session.execute(
            select(ApiKey)
            .where(ApiKey.scopes.contains([Scope.admin.value]), *_active())
            .order_by(ApiKey.id)
            .with_for_update()
        )
    ).scalars()
    admin_ids = {admin.id for admin in admins}
    key = await get_api_key(session, key_id)
    if key.revoked_at is not None:
        return key
    if admin_ids == {key.id}:
        raise LastAdminKey(
            "Create another admin key before revoking this one; otherwise nobody could "
            "manage the service."
        )
    key.revoked_at = datetime.now(UTC)
    await session.flush()
    # Its dashboard sessions end with it (a lookup also refuses a revoked key's session).
    await session.execute(delete(UiSession).where(UiSession.api_key_id == key.id))
    # Forgotten now, and again once the revocation has committed: a lookup in between
    # still reads the key active, and must not be remembered (see KeyCache). The
    # request's session commits before the answer is sent.
    digest = key.secret_sha256
    cache.invalidate(digest)
    event.listen(
        session.sync_session, "after_commit", lambda _: cache.invalidate(digest), once=True
    )
    return key


async def provision_admin_key(session: AsyncSession, *, secret: str, name: str) -> bool:
    """Make ``secret`` an admin key unless it is known already. A key revoked through the
    API stays revoked. Returns whether the key was new."""
    stmt = (
        insert(ApiKey)
        .values(
            id=uuid.uuid4(),
            name=name,
            prefix=secret[:_SHOWN_PREFIX_LENGTH],
            secret_sha256=hash_secret(secret),
            scopes=[Scope.admin.value],
        )
        .on_conflict_do_nothing(index_elements=[ApiKey.secret_sha256])
        .returning(ApiKey.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def create_bootstrap_admin_key(session: AsyncSession) -> str | None:
    """A first admin key when the service has none; returns its secret, or None."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"),
        {"name": locks.name(locks.Namespace.BOOTSTRAP)},
    )
    any_admin = select(ApiKey.id).where(ApiKey.scopes.contains([Scope.admin.value]), *_active())
    if (await session.execute(any_admin.limit(1))).first() is not None:
        return None
    secret = new_secret()
    await provision_admin_key(session, secret=secret, name="bootstrap admin (generated at start)")
    return secret

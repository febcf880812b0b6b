"""API keys: create (secret shown once), list, revoke, find by secret, provision admins.

Keys are bearer secrets of 256 random bits, so a plain SHA-256 is a safe way to store
them (there is no dictionary to attack) and lets a request find its key by index."""

import asyncio
import hashlib
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import ColumnElement, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import locks
from app.errors import LastAdminKey, NotFound
from app.models.api_key import ApiKey, Scope
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
# hot paths (assign, redeem) skip that query. A revocation applies at once in the process
# that revoked and within CACHE_SECONDS in the others.
CACHE_SECONDS = 5.0
_CACHE_SIZE = 10_000
_FIND_PLAIN = (
    f"SELECT {', '.join(ApiKey.__table__.columns.keys())} FROM api_keys "  # noqa: S608 (the model's column names)
    "WHERE secret_sha256 = $1 AND revoked_at IS NULL "
    "AND (expires_at IS NULL OR expires_at > now())"
)


class KeyCache:
    """The keys this process found active, each for ``CACHE_SECONDS``: one per process,
    created at start-up. Keys are looked up through the request's session
    (``find_active``) or, for the lean assignment path, on the plain pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._keys: dict[str, tuple[float, ApiKey]] = {}
        # Lookups on the plain pool in flight, by digest: when a key's entry expires
        # under load, the requests that find it expired share one query.
        self._lookups: dict[str, asyncio.Task[ApiKey | None]] = {}

    def active(self, secret: str) -> ApiKey | None:
        """The key of ``secret`` when it is remembered as active, else None (which says
        nothing: ``find_active`` and ``find_plain`` ask the database)."""
        cached = self._keys.get(hash_secret(secret))
        if cached is not None and cached[0] > time.monotonic():
            key = cached[1]
            if key.expires_at is None or key.expires_at > datetime.now(UTC):
                return key
        return None

    async def find_plain(self, secret: str) -> ApiKey | None:
        """``find_active`` on the plain asyncpg pool (the lean assignment path): the same
        query and the same cache."""
        if (key := self.active(secret)) is not None:
            return key
        digest = hash_secret(secret)
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = asyncio.create_task(self._find_plain(digest))
            self._lookups[digest] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(digest, None))
        # Shielded: a request that goes away does not cancel the others' lookup.
        return await asyncio.shield(lookup)

    async def _find_plain(self, digest: str) -> ApiKey | None:
        now = time.monotonic()
        async with self._pool.acquire() as connection:
            found = await connection.fetchrow(_FIND_PLAIN, digest)
        key = None if found is None else ApiKey(**dict(found))
        self.remember(digest, key, now)
        return key

    def remember(self, digest: str, key: ApiKey | None, now: float) -> None:
        """What a lookup started at ``now`` found for ``digest`` (None: no active key)."""
        if key is None:
            self.forget(digest)
            return
        if len(self._keys) >= _CACHE_SIZE:
            self._keys.clear()
        self._keys[digest] = (now + CACHE_SECONDS, key)

    def forget(self, digest: str) -> None:
        self._keys.pop(digest, None)

    def clear(self) -> None:
        self._keys.clear()


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
    now = time.monotonic()
    stmt = select(ApiKey).where(ApiKey.secret_sha256 == digest, *_active())
    found = (await session.execute(stmt)).scalar_one_or_none()
    snapshot = None if found is None else _snapshot(found)
    cache.remember(digest, snapshot, now)
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
    cache.forget(key.secret_sha256)
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

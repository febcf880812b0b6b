"""Dashboard sessions: a browser signs in with an API key once and then holds a random
token in a cookie. The table keeps the token's SHA-256 (like the keys), the key it acts
for, a CSRF token and a one-time message. A session ends on sign-out, after
``IDLE`` without a request, or when its key is revoked or expires: every lookup joins
the key and requires it active, and a revocation deletes the key's sessions."""

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.api_key import ApiKey
from app.models.ui_session import UiSession
from app.services import api_keys

IDLE = timedelta(hours=8)
_IDLE_SINCE = "now() - make_interval(secs => :idle)"


@dataclass(frozen=True)
class UiLogin:
    """A live session: the key it acts for, its CSRF token, the message to show once."""

    key: ApiKey
    token_sha256: str
    csrf_token: str
    flash: str | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def sign_in(
    session: AsyncSession, *, secret: str, cache: api_keys.KeyCache
) -> tuple[str, ApiKey] | None:
    """A new session for the key of ``secret``: its cookie token and the key; None when
    the key is unknown, revoked or expired. Idle sessions of anyone are removed."""
    key = await api_keys.find_active(session, secret=secret, cache=cache)
    if key is None:
        return None
    await session.execute(
        delete(UiSession).where(UiSession.last_seen_at < text(_IDLE_SINCE)),
        {"idle": IDLE.total_seconds()},
    )
    token = secrets.token_urlsafe(32)
    session.add(
        UiSession(
            token_sha256=digest(token), api_key_id=key.id, csrf_token=secrets.token_urlsafe(32)
        )
    )
    await session.flush()
    return token, key


# One statement finds the session, checks its key is active and it was used within IDLE,
# and takes its one-time message. It writes (and so locks the session's row until the
# request commits) only when there is a message to take or the last use it noted is a
# minute old: the requests of one browser (a page, its progress polls, a download) do not
# wait for each other, and "idle" is counted to the minute.
_KEY_COLUMNS = ", ".join(f"k.{name}" for name in ApiKey.__table__.columns.keys())  # noqa: SIM118
_TOUCH = text(
    f"""
    WITH found AS (
        SELECT s.token_sha256, s.csrf_token, s.flash, s.last_seen_at, {_KEY_COLUMNS}
        FROM ui_sessions s JOIN api_keys k ON k.id = s.api_key_id
        WHERE s.token_sha256 = :digest AND s.last_seen_at > {_IDLE_SINCE}
          AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
    ), touched AS (
        UPDATE ui_sessions s SET last_seen_at = now(), flash = NULL
        FROM found
        WHERE s.token_sha256 = found.token_sha256
          AND (found.flash IS NOT NULL OR found.last_seen_at < now() - interval '1 minute')
    )
    SELECT * FROM found
    """  # noqa: S608 (the model's column names)
)


async def find(session: AsyncSession, *, token: str) -> UiLogin | None:
    row = (
        await session.execute(_TOUCH, {"digest": digest(token), "idle": IDLE.total_seconds()})
    ).first()
    if row is None:
        return None
    values = row._asdict()
    csrf, flash = values.pop("csrf_token"), values.pop("flash")
    del values["token_sha256"], values["last_seen_at"]
    return UiLogin(key=ApiKey(**values), token_sha256=digest(token), csrf_token=csrf, flash=flash)


async def sign_out(session: AsyncSession, *, token_sha256: str) -> None:
    await session.execute(delete(UiSession).where(UiSession.token_sha256 == token_sha256))


async def set_flash(session: AsyncSession, *, token_sha256: str, message: str) -> None:
    await session.execute(
        text("UPDATE ui_sessions SET flash = :message WHERE token_sha256 = :digest"),
        {"message": message[:2000], "digest": token_sha256},
    )


async def rotate_csrf(session: AsyncSession, *, login: UiLogin) -> UiLogin:
    """The session with a new CSRF token: the form just posted cannot be posted again
    (a reload of the page that shows a new key's secret would create another key)."""
    token = secrets.token_urlsafe(32)
    await session.execute(
        text("UPDATE ui_sessions SET csrf_token = :token WHERE token_sha256 = :digest"),
        {"token": token, "digest": login.token_sha256},
    )
    return replace(login, csrf_token=token)

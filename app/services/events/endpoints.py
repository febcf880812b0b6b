"""Webhook endpoints: create (the secret is shown once), list, get, update, delete,
rotate the secret, test; their attempts and a manual retry."""

import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import AttemptPending, NotFound
from app.models.events import AttemptStatus, WebhookAttempt, WebhookEndpoint
from app.pagination import PageParams, decode_id_cursor, paginate
from app.schemas.events import PingResult, WebhookEndpointCreate, WebhookEndpointUpdate
from app.services.events import signing
from app.services.events.catalogue import PING
from app.services.events.dispatch import EventDispatcher
from app.services.events.feed import iso
from app.services.events.urls import check_resolved
from app.settings import Settings

# How long the old secret keeps signing after a rotation.
ROTATION_OVERLAP = timedelta(hours=24)


async def _checked_url(url: str, settings: Settings) -> str:
    await check_resolved(
        url,
        allow_private=settings.webhook_allow_private,
        production=settings.environment == "production",
    )
    return url


async def create(
    session: AsyncSession, *, data: WebhookEndpointCreate, settings: Settings
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        url=await _checked_url(data.url, settings),
        events=[str(e) for e in data.events],
        description=data.description,
        enabled=data.enabled,
        secret=signing.new_secret(),
    )
    session.add(endpoint)
    await session.flush()
    await session.refresh(endpoint)
    return endpoint


async def list_endpoints(session: AsyncSession, *, params: PageParams) -> list[WebhookEndpoint]:
    stmt = paginate(select(WebhookEndpoint), WebhookEndpoint, params)
    return list((await session.execute(stmt)).scalars())


async def get(
    session: AsyncSession, endpoint_id: uuid.UUID, *, lock: bool = False
) -> WebhookEndpoint:
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if lock:
        stmt = stmt.with_for_update()
    endpoint = (await session.execute(stmt)).scalar_one_or_none()
    if endpoint is None:
        raise NotFound(f"No webhook endpoint has the id {endpoint_id}.")
    return endpoint


async def update_endpoint(
    session: AsyncSession,
    *,
    endpoint_id: uuid.UUID,
    data: WebhookEndpointUpdate,
    settings: Settings,
) -> WebhookEndpoint:
    endpoint = await get(session, endpoint_id, lock=True)
    sent = data.model_fields_set
    if "url" in sent and data.url is not None:
        endpoint.url = await _checked_url(data.url, settings)
    if "events" in sent and data.events is not None:
        endpoint.events = [str(e) for e in data.events]
    if "description" in sent:
        endpoint.description = data.description
    if "enabled" in sent and data.enabled is not None:
        if data.enabled and not endpoint.enabled:
            endpoint.disabled_reason = None
            endpoint.failing_since = None
        endpoint.enabled = data.enabled
    session.add(endpoint)
    await session.flush()
    await session.refresh(endpoint)
    return endpoint


async def delete(session: AsyncSession, *, endpoint_id: uuid.UUID) -> None:
    endpoint = await get(session, endpoint_id, lock=True)
    await session.delete(endpoint)
    await session.flush()


async def rotate_secret(session: AsyncSession, *, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """A new secret; the old one keeps signing (a second signature) for 24 hours."""
    endpoint = await get(session, endpoint_id, lock=True)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = datetime.now(UTC) + ROTATION_OVERLAP
    endpoint.secret = signing.new_secret()
    session.add(endpoint)
    await session.flush()
    await session.refresh(endpoint)
    return endpoint


def signing_secrets(endpoint: WebhookEndpoint) -> list[str]:
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > datetime.now(UTC):
        return [endpoint.secret, endpoint.previous_secret]
    return [endpoint.secret]


async def ping(
    session: AsyncSession, *, endpoint_id: uuid.UUID, dispatcher: EventDispatcher
) -> PingResult:
    """A ``ping`` sent now (whether or not the endpoint is enabled), signed as every
    event is, recorded among its attempts; not retried."""
    endpoint = await get(session, endpoint_id)
    event_id = f"evt_ping_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    body = json.dumps(
        {"type": PING, "timestamp": iso(now), "data": {"endpoint_id": str(endpoint.id)}},
        separators=(",", ":"),
    )
    outcome = await dispatcher.send(
        endpoint.url, signing_secrets(endpoint), msg_id=event_id, body=body
    )
    status = AttemptStatus.succeeded if outcome.ok else AttemptStatus.failed
    session.add(
        WebhookAttempt(
            endpoint_id=endpoint.id,
            event_id=event_id,
            event_type=PING,
            body=body,
            status=status.value,
            tries=1,
            last_attempt_at=now,
            response_status=outcome.status,
            duration_ms=outcome.ms,
            error=outcome.error,
            finished_at=datetime.now(UTC),
        )
    )
    await session.flush()
    return PingResult(
        delivered=outcome.ok,
        event_id=event_id,
        response_status=outcome.status,
        duration_ms=outcome.ms,
        error=outcome.error,
    )


async def list_attempts(
    session: AsyncSession,
    *,
    endpoint_id: uuid.UUID,
    status: AttemptStatus | None,
    event_type: str | None,
    event_id: str | None,
    params: PageParams,
) -> list[WebhookAttempt]:
    """Newest first."""
    await get(session, endpoint_id)
    stmt = select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id)
    if status is not None:
        stmt = stmt.where(WebhookAttempt.status == status.value)
    if event_type is not None:
        stmt = stmt.where(WebhookAttempt.event_type == event_type)
    if event_id is not None:
        stmt = stmt.where(WebhookAttempt.event_id == event_id)
    if params.cursor is not None:
        stmt = stmt.where(WebhookAttempt.id < decode_id_cursor(params.cursor))
    stmt = stmt.order_by(WebhookAttempt.id.desc()).limit(params.limit + 1)
    return list((await session.execute(stmt)).scalars())


async def retry(
    session: AsyncSession, *, endpoint_id: uuid.UUID, attempt_id: int
) -> WebhookAttempt:
    """Due again now: a failed attempt gets one more try, a delivered one is sent again
    (with the same webhook-id). A pending one is refused: it may be in flight."""
    await get(session, endpoint_id)
    found = await session.scalar(
        select(WebhookAttempt.status).where(
            WebhookAttempt.id == attempt_id, WebhookAttempt.endpoint_id == endpoint_id
        )
    )
    if found is None:
        raise NotFound(f"The endpoint has no attempt {attempt_id}.")
    if found == AttemptStatus.pending.value:
        raise AttemptPending(
            f"The attempt {attempt_id} is queued already; it is tried at its next_attempt_at."
        )
    stmt = (
        update(WebhookAttempt)
        .where(
            WebhookAttempt.id == attempt_id,
            WebhookAttempt.endpoint_id == endpoint_id,
            WebhookAttempt.status != AttemptStatus.pending.value,
        )
        .values(
            status=AttemptStatus.pending.value, next_attempt_at=datetime.now(UTC), finished_at=None
        )
        .returning(WebhookAttempt)
    )
    attempt = (await session.execute(stmt)).scalar_one_or_none()
    if attempt is None:  # queued by a concurrent retry meanwhile
        raise AttemptPending(f"The attempt {attempt_id} is queued already.")
    return attempt

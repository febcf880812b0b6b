"""/v1/webhook-endpoints: where events are sent, signed (Standard Webhooks); their
attempts. Admin scope."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.auth import AdminKey
from app.db import Session
from app.errors import AttemptPending, NotFound, UrlNotAllowed
from app.idempotency import IdempotentRoute
from app.models.events import AttemptStatus
from app.pagination import IdPageQuery, PageQuery, build_page, next_id_cursor
from app.problems import problem_responses
from app.schemas.events import (
    PingResult,
    WebhookAttemptPage,
    WebhookAttemptPublic,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointPage,
    WebhookEndpointPublic,
    WebhookEndpointUpdate,
)
from app.schemas.mappers import webhook_attempt_public, webhook_endpoint_public
from app.services.events import endpoints
from app.services.events.dispatch import Dispatcher
from app.settings import SettingsDep

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"], route_class=IdempotentRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a webhook endpoint",
    description="Answers the endpoint with its signing `secret` (`whsec_…`), shown only "
    "this once. Events that commit from now on are sent to it (docs/events.md).",
    responses=problem_responses(UrlNotAllowed),
)
async def create_webhook_endpoint(
    _: AdminKey,
    body: WebhookEndpointCreate,
    session: Session,
    settings: SettingsDep,
    response: Response,
) -> WebhookEndpointCreated:
    endpoint = await endpoints.create(session, data=body, settings=settings)
    response.headers["Location"] = f"{router.prefix}/{endpoint.id}"
    return WebhookEndpointCreated(
        **webhook_endpoint_public(endpoint).model_dump(), secret=endpoint.secret
    )


@router.get("", summary="List webhook endpoints, newest first", responses=problem_responses())
async def list_webhook_endpoints(
    _: AdminKey, session: Session, page: PageQuery
) -> WebhookEndpointPage:
    rows = await endpoints.list_endpoints(session, params=page)
    return build_page(WebhookEndpointPage, rows, page, webhook_endpoint_public)  # type: ignore[type-var]


@router.get(
    "/{endpoint_id}", summary="Get a webhook endpoint", responses=problem_responses(NotFound)
)
async def get_webhook_endpoint(
    _: AdminKey, endpoint_id: uuid.UUID, session: Session
) -> WebhookEndpointPublic:
    return webhook_endpoint_public(await endpoints.get(session, endpoint_id))


@router.patch(
    "/{endpoint_id}",
    summary="Change a webhook endpoint",
    description="Only the fields sent change. `enabled: true` re-enables an endpoint the "
    "service disabled; attempts left pending are sent again.",
    responses=problem_responses(NotFound, UrlNotAllowed),
)
async def update_webhook_endpoint(
    _: AdminKey,
    endpoint_id: uuid.UUID,
    body: WebhookEndpointUpdate,
    session: Session,
    settings: SettingsDep,
) -> WebhookEndpointPublic:
    endpoint = await endpoints.update_endpoint(
        session, endpoint_id=endpoint_id, data=body, settings=settings
    )
    return webhook_endpoint_public(endpoint)


@router.delete(
    "/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a webhook endpoint and its attempts",
    responses=problem_responses(NotFound),
)
async def delete_webhook_endpoint(_: AdminKey, endpoint_id: uuid.UUID, session: Session) -> None:
    await endpoints.delete(session, endpoint_id=endpoint_id)


@router.post(
    "/{endpoint_id}/rotate-secret",
    summary="Rotate an endpoint's signing secret",
    description="Answers the new `secret` (shown only now). For 24 hours every delivery "
    "carries two signatures, one with each secret, so receivers can switch at leisure.",
    responses=problem_responses(NotFound),
)
async def rotate_webhook_secret(
    _: AdminKey, endpoint_id: uuid.UUID, session: Session
) -> WebhookEndpointCreated:
    endpoint = await endpoints.rotate_secret(session, endpoint_id=endpoint_id)
    return WebhookEndpointCreated(
        **webhook_endpoint_public(endpoint).model_dump(), secret=endpoint.secret
    )


@router.post(
    "/{endpoint_id}/test",
    summary="Send a ping to an endpoint",
    description="A signed `ping` event sent now, answered with the endpoint's response; "
    "recorded among its attempts, not retried.",
    responses=problem_responses(NotFound),
)
async def test_webhook_endpoint(
    _: AdminKey,  # noqa: PT019 - a route named after its path, not a test
    endpoint_id: uuid.UUID,
    session: Session,
    dispatcher: Dispatcher,
) -> PingResult:
    return await endpoints.ping(session, endpoint_id=endpoint_id, dispatcher=dispatcher)


@router.get(
    "/{endpoint_id}/attempts",
    summary="The delivery attempts of an endpoint, newest first",
    description="One per event sent to the endpoint: its status, the last try's response "
    "code, duration and error, and when it is tried next.",
    responses=problem_responses(NotFound),
)
async def list_webhook_attempts(
    _: AdminKey,
    endpoint_id: uuid.UUID,
    session: Session,
    page: IdPageQuery,
    status: AttemptStatus | None = None,
    event_type: Annotated[str | None, Query(max_length=64)] = None,
    event_id: Annotated[str | None, Query(max_length=64)] = None,
) -> WebhookAttemptPage:
    rows = await endpoints.list_attempts(
        session,
        endpoint_id=endpoint_id,
        status=status,
        event_type=event_type,
        event_id=event_id,
        params=page,
    )
    return WebhookAttemptPage(
        items=[webhook_attempt_public(a) for a in rows[: page.limit]],
        next_cursor=next_id_cursor([a.id for a in rows], page),
    )


@router.post(
    "/{endpoint_id}/attempts/{attempt_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send an attempt again",
    description="A failed (or delivered) attempt is due again at once, with the same "
    "webhook-id; a pending one is refused (`attempt-pending`).",
    responses=problem_responses(NotFound, AttemptPending),
)
async def retry_webhook_attempt(
    _: AdminKey,
    endpoint_id: uuid.UUID,
    attempt_id: int,
    session: Session,
    dispatcher: Dispatcher,
) -> WebhookAttemptPublic:
    attempt = await endpoints.retry(session, endpoint_id=endpoint_id, attempt_id=attempt_id)
    dispatcher.wake()
    return webhook_attempt_public(attempt)

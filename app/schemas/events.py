"""Events out: webhook endpoints (create, update, the secret shown once), their
attempts, and the event feed's page."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.schemas.common import Description, Flag, WriteModel
from app.services.events.catalogue import EventType

EndpointUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
    Field(
        description="Where events are POSTed: https (http outside production), a public "
        "address unless COUPONS_WEBHOOK_ALLOW_PRIVATE=true",
        examples=["https://hooks.example.com/coupons"],
        json_schema_extra={"pattern": r"^\s*[hH][tT][tT][pP][sS]?://"},
    ),
]

Subscription = EventType | Literal["*"]
Subscriptions = Annotated[
    list[Subscription],
    Field(
        min_length=1,
        max_length=len(EventType) + 1,
        description='Event types to receive, or ["*"] for all',
        examples=[["code.assigned", "pool.low_stock"]],
        # `_distinct`, for the document: "*" stands alone.
        json_schema_extra={"if": {"contains": {"const": "*"}}, "then": {"maxItems": 1}},
    ),
]


def _distinct(value: list[Subscription] | None) -> list[Subscription] | None:
    if value is None:
        return None
    if "*" in value and len(value) > 1:
        raise ValueError('"*" stands alone: it means every type')
    return list(dict.fromkeys(value))


class WebhookEndpointCreate(WriteModel):
    url: EndpointUrl
    events: Subscriptions
    description: Description | None = None
    enabled: Flag = True

    _events = field_validator("events")(_distinct)


class WebhookEndpointUpdate(WriteModel):
    """Only the fields sent change. Enabling an endpoint clears why it was disabled."""

    url: EndpointUrl | None = None
    events: Subscriptions | None = None
    description: Description | None = None
    enabled: Flag | None = None

    _events = field_validator("events")(_distinct)


class WebhookEndpointPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why the service disabled it (every delivery failed for 3 days)"
    )
    failing_since: datetime | None = Field(
        description="Since when every delivery failed; null when the last one succeeded"
    )
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation: until when the old secret signs too"
    )
    created_at: datetime
    updated_at: datetime


class WebhookEndpointCreated(WebhookEndpointPublic):
    secret: str = Field(
        description="The signing secret (whsec_…), shown only in this answer and after a rotation",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhookEndpointPage(BaseModel):
    items: list[WebhookEndpointPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page"
    )


class WebhookAttemptPublic(BaseModel):
    """One event for one endpoint: pending until delivered or given up; the last try."""

    id: int
    endpoint_id: uuid.UUID
    event_id: str = Field(description="The webhook-id header: the same on every try")
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    tries: int
    response_status: int | None = Field(description="The last try's HTTP status")
    duration_ms: int | None = Field(description="How long the last try took")
    error: str | None = Field(description="Why the last try failed")
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="When it is tried next (pending)")
    created_at: datetime
    finished_at: datetime | None


class WebhookAttemptPage(BaseModel):
    items: list[WebhookAttemptPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page"
    )


class EventPublic(BaseModel):
    """An event: what every webhook body holds, with its id (the webhook-id header)."""

    id: str = Field(examples=["evt_a1042"])
    type: str = Field(examples=["code.assigned"])
    timestamp: datetime
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventPublic]
    next_cursor: str = Field(
        description="Pass as `after` for the events that follow (the same cursor again "
        "when none followed yet)"
    )


class PingResult(BaseModel):
    """What the endpoint answered to the test ping (sent at once, not retried)."""

    delivered: bool
    event_id: str
    response_status: int | None
    duration_ms: int
    error: str | None

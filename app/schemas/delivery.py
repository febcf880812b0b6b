"""Deliveries: the bodies of a delivery and its targets, and what the API answers."""

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.models.code import Channel
from app.models.delivery import ContentType, DeliveryStatus
from app.schemas.common import Label, Metadata, NotNull, WriteModel
from app.schemas.page import Page

Template = Annotated[
    str,
    StringConstraints(max_length=65_536),
    Field(
        description="Jinja2 text (sandboxed, no loops): `{{ coupon.code }}`, "
        "`{{ recipient.address }}`, `{{ recipient.<field> }}`, `{{ coupon_set.label }}`…",
        examples=[
            "Hello {{ recipient.first_name | default('there') }}, your code: {{ coupon.code }}"
        ],
    ),
]
Subject = Annotated[
    str,
    StringConstraints(max_length=2_000),
    Field(description="Jinja2 text like the template", examples=["{{ coupon_set.label }}"]),
]


class DeliveryCreate(WriteModel):
    label: Label
    coupon_set_id: str = Field(
        min_length=1, max_length=64, description="The set's id or key", examples=["spring-2026"]
    )
    pool: str | None = Field(
        default=None, min_length=1, max_length=200, description="Unique sets; `default` if absent"
    )
    channel: Channel = Channel.email
    subject: Subject | None = None
    template: Template | None = None
    content_type: ContentType = Field(
        default=ContentType.text,
        description="`html` escapes every inserted value; `text` inserts them as they are",
    )
    message_limit: int | None = Field(
        default=None, ge=0, le=1_000_000_000, description="Message only the first N targets"
    )
    metadata: Metadata = Field(default_factory=dict)


class DeliveryUpdate(WriteModel):
    """Only in `draft` or `analyzed`; any change makes the delivery a draft again, to be
    analysed anew. ``message_limit: null`` removes the limit."""

    label: Label | NotNull = None
    channel: Channel | NotNull = None
    subject: Subject | None = None
    template: Template | None = None
    content_type: ContentType | NotNull = None
    message_limit: int | None = Field(default=None, ge=0, le=1_000_000_000)
    metadata: Metadata | NotNull = None


class PoolAvailability(BaseModel):
    pool: str
    available: int


class Analysis(BaseModel):
    targets: int = Field(description="Recipients in the target list")
    messages: int = Field(description="Messages to send: the targets after the message limit")
    message_limit: int | None
    already_holding: int = Field(
        description="Of those, recipients who already hold a code of this set and pool: "
        "they keep theirs"
    )
    codes_needed: int
    codes_available: int = Field(description="Free codes of the delivery's pool")
    pools: list[PoolAvailability] = Field(description="Free codes of every pool of the set")
    enough: bool
    shortfall: int
    log: list[str] = Field(description="The analysis, in words")
    analyzed_at: datetime


class DeliveryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    label: str
    coupon_set_id: uuid.UUID
    coupon_set_key: str
    pool: str | None
    channel: Channel | None
    subject: str | None
    template: str | None
    content_type: ContentType
    status: DeliveryStatus
    message_limit: int | None
    metadata: dict[str, Any]
    recipients: int = Field(description="Targets in the list")
    messages: int | None = Field(description="Messages of the confirmed delivery, after the limit")
    processed: int = Field(description="Confirm progress: targets handled so far")
    assigned: int = Field(description="Codes handed out by this delivery")
    kept: int = Field(description="Targets who already held a code and kept it")
    failed_messages: int = Field(description="Messages reported as not sent")
    failure_reason: str | None
    analysis: Analysis | None
    confirmed_at: datetime | None
    finished_at: datetime | None
    sent_at: datetime | None = Field(
        description="The first complete read of its messages: they went to the sending system"
    )
    created_at: datetime
    updated_at: datetime


class DeliveryPage(Page[DeliveryPublic]):
    pass


RecipientIdField = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class TargetIn(WriteModel):
    recipient_id: RecipientIdField
    address: str | None = Field(default=None, max_length=320)
    fields: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra values for the template: `{{ recipient.<name> }}` (at most 16 KiB)",
    )


class TargetsAdd(WriteModel):
    recipients: list[TargetIn] = Field(min_length=1, max_length=10_000)


class RejectedRow(BaseModel):
    line: int = Field(description="CSV: the line number; JSON: the index in the list")
    recipient_id: str | None
    reason: str


class TargetsAdded(BaseModel):
    received: int
    added: int
    duplicates: int = Field(description="Recipient ids already in the list (first one kept)")
    rejected: int
    errors: list[RejectedRow] = Field(description="The first 100 rejected rows")
    recipients: int = Field(description="Targets in the list now")


class FailuresReport(WriteModel):
    recipient_ids: list[RecipientIdField] = Field(min_length=1, max_length=10_000)


class FailuresRecorded(BaseModel):
    returned: int = Field(description="Codes given back to the pool")
    kept: list[str] = Field(
        description="Failed recipients whose code came from elsewhere (an earlier "
        "assignment) or was redeemed meanwhile: marked failed, code not returned"
    )
    unknown: list[str] = Field(description="Recipient ids that are not targets of the delivery")
    failed_messages: int


class TargetPublic(BaseModel):
    recipient_id: str
    address: str | None
    fields: dict[str, Any]
    code: str | None = Field(
        description="The code the recipient holds in the delivery's pool now (the shared "
        "code for a shared set once confirmed); null when none"
    )
    failed_at: datetime | None = Field(description="When the message was reported as failed")


class TargetPage(BaseModel):
    items: list[TargetPublic]
    next_cursor: str | None


class Preview(BaseModel):
    recipient_id: str
    address: str | None
    code: str | None = Field(
        description="The code in the message; null before confirm when the recipient holds none yet"
    )
    code_source: str = Field(
        description="`assigned` (by this delivery), `kept` (held already), `shared`, or "
        "`placeholder` (before confirm: a code will be assigned)"
    )
    subject: str | None
    body: str | None

"""Coupon sets: the create and update bodies, a set as the API shows it, and its page."""

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.config import JsonDict

from app.models.coupon_set import MatchMode, SetKind, SetStatus
from app.schemas.common import (
    Description,
    Flag,
    Instant,
    Label,
    Metadata,
    NotNull,
    WriteModel,
)
from app.schemas.page import Page
from app.schemas.stats import SetGlance

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,63}$"
_UUID_SHAPE = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


def _not_uuid_shaped(value: str) -> str:
    # A path segment that looks like a UUID is read as an id, so a key may not look like one.
    if _UUID_SHAPE.match(value):
        raise ValueError("must not look like a UUID")
    return value


SetKey = Annotated[
    str,
    StringConstraints(pattern=KEY_PATTERN),
    AfterValidator(_not_uuid_shaped),
    Field(
        description="Unique, URL-safe name of the set (case-insensitive), used in paths "
        "and templates. Letters, digits, '.', '_', '~', '-'; at most 64.",
        examples=["spring-sale-2026"],
    ),
]

SharedCode = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$"
    ),
    Field(description="The one code every recipient of a shared set gets", examples=["WELCOME15"]),
]


def _check_window(valid_from: datetime | None, valid_until: datetime | None) -> None:
    if valid_from is not None and valid_until is not None and valid_from >= valid_until:
        raise ValueError("valid_from must be before valid_until")


_NULL: JsonDict = {"type": "null"}
# The rules between fields that `_consistent` checks, for the document: a shared set
# has its shared_code and no fallback_code; a unique one none of the shared options.
_KIND_RULES: JsonDict = {
    "if": {"properties": {"kind": {"const": "shared"}}, "required": ["kind"]},
    "then": {
        "required": ["shared_code"],
        "properties": {"shared_code": {"type": "string"}, "fallback_code": _NULL},
    },
    "else": {"properties": {"shared_code": _NULL, "max_uses": _NULL, "per_recipient_limit": _NULL}},
}


class CouponSetCreate(WriteModel):
    model_config = ConfigDict(json_schema_extra=_KIND_RULES)

    label: Label
    key: SetKey | None = Field(default=None, description="Generated from the label when absent")
    kind: SetKind = SetKind.unique
    shared_code: SharedCode | None = None
    max_uses: int | None = Field(
        default=None, ge=1, le=2_000_000_000, description="Shared sets: redemptions allowed in all"
    )
    valid_from: Instant | None = None
    valid_until: Instant | None = None
    description: Description | None = None
    metadata: Metadata = Field(default_factory=dict)
    match_mode: MatchMode = Field(
        default=MatchMode.normalized,
        description="`normalized`: codes match ignoring case, spaces, dashes, dots and "
        "underscores; `exact`: as typed. Fixed at creation.",
    )
    per_recipient_limit: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Shared sets: uses allowed per recipient"
    )
    bind_to_recipient: Flag = Field(
        default=False,
        description="A code may be redeemed only by the recipient it was assigned to",
    )
    fallback_code: SharedCode | None = Field(
        default=None,
        description="Unique sets: handed out (flagged `fallback`) when the pool is empty",
    )
    expiry_warning_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description="coupon_set.expiring fires this many days before valid_until, once",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind is SetKind.shared and self.shared_code is None:
            raise ValueError("a shared set needs its shared_code")
        if self.kind is SetKind.unique and self.shared_code is not None:
            raise ValueError("shared_code is only for shared sets; unique sets hold many codes")
        if self.kind is SetKind.unique and self.max_uses is not None:
            raise ValueError("max_uses is only for shared sets; each unique code is used once")
        if self.kind is SetKind.unique and self.per_recipient_limit is not None:
            raise ValueError("per_recipient_limit is only for shared sets")
        if self.kind is SetKind.shared and self.fallback_code is not None:
            raise ValueError("fallback_code is only for unique sets; a shared code never runs out")
        _check_window(self.valid_from, self.valid_until)
        return self


class CouponSetUpdate(WriteModel):
    """Only the fields sent change; null clears an optional field. The kind is fixed
    at creation and the status changes through archive/unarchive."""

    label: Label | NotNull = None
    key: SetKey | NotNull = None
    shared_code: SharedCode | NotNull = None
    max_uses: int | None = Field(default=None, ge=1, le=2_000_000_000)
    valid_from: Instant | None = None
    valid_until: Instant | None = None
    description: Description | None = None
    metadata: Metadata | NotNull = None
    per_recipient_limit: int | None = Field(default=None, ge=1, le=1_000_000)
    bind_to_recipient: Flag | NotNull = None
    fallback_code: SharedCode | None = None
    expiry_warning_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description="coupon_set.expiring fires this many days before valid_until, once",
    )

    @model_validator(mode="after")
    def _required_stay_set(self) -> Self:
        for name in ("label", "key", "shared_code", "metadata", "bind_to_recipient"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        _check_window(self.valid_from, self.valid_until)
        return self


class CouponSetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    key: str
    label: str
    description: str | None
    kind: SetKind
    status: SetStatus
    shared_code: str | None
    max_uses: int | None
    valid_from: datetime | None
    valid_until: datetime | None
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    match_mode: MatchMode
    per_recipient_limit: int | None
    bind_to_recipient: bool
    fallback_code: str | None
    expiry_warning_days: int | None = Field(
        description="coupon_set.expiring fires this many days before valid_until"
    )
    expiry_warned_at: datetime | None = Field(description="When coupon_set.expiring fired")
    created_at: datetime
    updated_at: datetime


class CouponSetListed(CouponSetPublic):
    """A set in the list, with its counts at a glance."""

    stats: SetGlance


class CouponSetPage(Page[CouponSetListed]):
    pass

"""Codes of a unique set, one row each; its assignment lives on the row.

Keeping the recipient on the code row makes a claim one UPDATE (plus its audit row),
the cheapest write that can hand a code out. Shared sets have no code rows: their
one code is on the set and their assignments are in ``shared_assignments``."""

import enum
import re
import unicodedata
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from app.models.base import Base, Col, identity, insert_time


class CodeStatus(enum.StrEnum):
    available = "available"
    assigned = "assigned"
    redeemed = "redeemed"
    void = "void"


class Channel(enum.StrEnum):
    email = "email"
    sms = "sms"
    push = "push"
    web = "web"
    other = "other"


# A free code, the one definition. ``FREE`` is the partial index's predicate (ix_codes_free),
# so a search for free codes that states it reads only free rows; ``free()`` adds that a
# code held at a checkout (a live hold on a code not yet assigned) is not free either.
FREE = "status = 'available'"


def free(alias: str) -> str:
    """SQL: the code row ``alias`` can be handed out now."""
    return (
        f"{alias}.{FREE} AND NOT EXISTS (SELECT 1 FROM redemptions r "  # noqa: S608
        f"WHERE r.code_id = {alias}.id AND r.status = 'held' AND r.hold_expires_at > now())"
    )


class Code(Base, table=True):
    __tablename__ = "codes"
    __table_args__ = (
        # One code per set, compared the way the set matches codes (see normalise()).
        Index("uq_codes_set_id_lookup", "set_id", "lookup", unique=True),
        # The free list of a pool, in claim order. Only free rows are in it, so a claim
        # reads one index entry; the scan hint (id > last claimed) skips the claimed
        # prefix whose dead entries vacuum has not removed yet.
        Index("ix_codes_free", "pool_id", "id", postgresql_where=text(FREE)),
        # Per-recipient idempotency of assignment: one primary code per set, pool, recipient.
        Index(
            "uq_codes_recipient",
            "pool_id",
            "recipient_id",
            unique=True,
            postgresql_where=text("recipient_id IS NOT NULL AND NOT additional"),
        ),
        # A recipient's codes: in one set (the code list's filter), or across sets in
        # pages (GET /v1/recipients/{id}/coupons), keyset on (set_id, id).
        Index(
            "ix_codes_recipient_id",
            "recipient_id",
            "set_id",
            "id",
            postgresql_where=text("recipient_id IS NOT NULL"),
        ),
        # The code list by pool and status, in id order; free codes are in ix_codes_free,
        # so an import (all free) writes no entry here. status is in ix_codes_free's
        # predicate already, so no update that changes it was HOT before this index.
        Index(
            "ix_codes_pool_id_status_id",
            "pool_id",
            "status",
            "id",
            postgresql_where=text("status <> 'available'"),
        ),
        Index("ix_codes_set_id_id", "set_id", "id"),
        # Redemptions name a code, not its set.
        Index("ix_codes_lookup", "lookup"),
    )

    id: Col[int] = identity()
    set_id: Col[uuid.UUID] = Field(foreign_key="coupon_sets.id", ondelete="CASCADE")
    pool_id: Col[uuid.UUID] = Field(foreign_key="pools.id", ondelete="CASCADE")
    code: Col[str]
    lookup: Col[str]
    status: Col[str] = Field(
        default=CodeStatus.available.value,
        max_length=16,
        sa_column_kwargs={"server_default": CodeStatus.available.value},
    )
    recipient_id: Col[str | None] = Field(default=None)
    address: Col[str | None] = Field(default=None)
    channel: Col[str | None] = Field(default=None, max_length=16)
    delivery_id: Col[str | None] = Field(default=None)
    additional: Col[bool] = Field(default=False, sa_column_kwargs={"server_default": text("false")})
    assigned_at: Col[datetime | None] = Field(default=None)
    redeemed_at: Col[datetime | None] = Field(default=None)
    voided_at: Col[datetime | None] = Field(default=None)
    # "metadata" is SQLModel's (and SQLAlchemy's) on a table class; the column keeps the name.
    metadata_: Col[dict[str, Any] | None] = Field(
        default=None, sa_type=JSONB, sa_column_kwargs={"name": "metadata"}
    )
    created_at: Col[datetime] = insert_time()


UNSTORABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties 15.1): zero widths, joiners,
# bidi marks, variation selectors, fillers, tags. They draw nothing, so a matching form
# drops them and an exact code may not hold them.
_IGNORABLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
# Separators people type or a mail client inserts: white space, dashes (Unicode's Pd),
# underscores and dots.
_DASHES = (
    "\\-\u058a\u05be\u1400\u1806\u2010-\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40\u2e5d"
    "\u301c\u3030\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d\U00010ead"
)
_ASCII_SEPARATORS = re.compile(r"[\s\-_.]+")
_DROPPED = re.compile(f"[\\s_.{_DASHES}{_IGNORABLE}]+")
_INVISIBLE = re.compile(f"[{_IGNORABLE}]")
# Categories that never draw a code's character: controls, format characters, surrogates,
# line and paragraph separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def normalise(code: str, *, exact: bool) -> str:
    """The form codes are compared in: as given for exact sets; otherwise NFKC, case-folded,
    without white space, dashes, dots, underscores and default-ignorable characters, so
    ``spring-ab12`` finds ``SPRING AB12``, ``K\u200bIT`` and fullwidth ``\uff2b\uff29\uff34``
    find ``KIT``, and ``E\u0301`` finds ``É``."""
    if exact:
        return code
    if code.isascii():  # the common case: NFKC changes nothing, casefold is lower
        return _ASCII_SEPARATORS.sub("", code).lower()
    folded = unicodedata.normalize("NFKC", _INVISIBLE.sub("", code)).casefold()
    return unicodedata.normalize("NFKC", _DROPPED.sub("", folded))


HIDDEN_IN_EXACT = "contains invisible or control characters, which an exact set refuses"


def hides_characters(text: str) -> bool:
    """Whether ``text`` holds characters that draw nothing (controls, format characters,
    default-ignorables): an exact set, which compares codes as given, refuses them."""
    return bool(_INVISIBLE.search(text)) or any(
        unicodedata.category(ch) in _HIDDEN_CATEGORIES for ch in text
    )


def refusal(code: str, lookup: str, *, exact: bool) -> str | None:
    """Why ``code`` (already stripped), whose matching form is ``lookup``, cannot be a code;
    None when it can. A code must show something once the matching ignores what it
    ignores; an exact code must not hide characters (controls, invisible characters)."""
    if not code:
        return "empty"
    if len(code) > 100:
        return "longer than 100 characters"
    if UNSTORABLE.search(code):
        return "contains control characters or unpaired surrogates"
    if code.isascii():
        return None if lookup else "nothing left once separators are ignored"
    if exact:
        if hides_characters(code):
            return HIDDEN_IN_EXACT
    elif any(unicodedata.category(ch) == "Cc" for ch in code):
        return "contains control characters or unpaired surrogates"
    if not any(unicodedata.category(ch)[0] in "LNPS" for ch in lookup):
        return "nothing visible left once separators and invisible characters are ignored"
    return None
    if any(unicodedata.category(ch) == "Cc" for ch in code):
        return "contains control characters or unpaired surrogates"
    if not any(unicodedata.category(ch)[0] in "LNPS" for ch in lookup):
        return "nothing visible left once separators and invisible characters are ignored"
    return None

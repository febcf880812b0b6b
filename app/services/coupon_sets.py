"""Coupon sets: create, find by id or key, search, update, archive, delete."""

import re
import secrets
import unicodedata
import uuid
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import flush_unique
from app.errors import KeyTaken, NotFound, SetInUse, ValidationFailed, WindowConflict, WrongSetKind
from app.models.code import normalise, refusal
from app.models.coupon_set import CouponSet, MatchMode, SetKind, SetStatus
from app.models.pool import DEFAULT_POOL, Pool
from app.pagination import PageParams, paginate
from app.schemas.coupon_set import CouponSetCreate, CouponSetUpdate
from app.services import audit

_KEY_INDEX = "uq_coupon_sets_key_lower"
_KEY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def _generated_key(label: str) -> str:
    """A readable key from the label plus a random suffix, e.g. ``spring-sale-k3x9qm``."""
    ascii_label = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_label.lower()).strip("-")[:48].rstrip("-") or "set"
    return f"{slug}-{''.join(secrets.choice(_KEY_ALPHABET) for _ in range(6))}"


def _shared_lookup(shared_code: str | None, match_mode: str) -> str | None:
    """The shared code's matching form; a code that shows nothing once matching ignores
    separators and invisible characters (or, in an exact set, hides some) is a 422."""
    if shared_code is None:
        return None
    exact = match_mode == MatchMode.exact
    lookup = normalise(shared_code, exact=exact)
    reason = refusal(shared_code, lookup, exact=exact)
    if reason is not None:
        raise ValidationFailed(
            f"shared_code cannot be a code: {reason}.",
            errors=[{"loc": ["body", "shared_code"], "message": reason, "type": "code"}],
        )
    return lookup


def _like_pattern(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def parse_id(ref: str) -> uuid.UUID | None:
    """``ref`` as a UUID, or None when it is a key."""
    try:
        return uuid.UUID(ref)
    except ValueError:
        return None


def matches_ref(ref: str) -> ColumnElement[bool]:
    """The set whose id is ``ref`` or, failing that, whose key is (case-insensitive)."""
    set_id = parse_id(ref)
    return CouponSet.id == set_id if set_id else func.lower(CouponSet.key) == ref.lower()


def set_not_found(ref: str) -> NotFound:
    return NotFound(f"No coupon set has the id or key '{ref}'.")


async def get_coupon_set(session: AsyncSession, ref: str) -> CouponSet:
    coupon_set = (await session.execute(select(CouponSet).where(matches_ref(ref)))).scalar()
    if coupon_set is None:
        raise set_not_found(ref)
    return coupon_set


async def _save(
    session: AsyncSession, coupon_set: CouponSet, changes: dict[str, Any] | None = None
) -> None:
    """Apply ``changes`` and save; a key taken by another set is a clean 409."""
    changes = changes or {}

    def apply() -> None:
        for name, value in changes.items():
            setattr(coupon_set, name, value)
        session.add(coupon_set)

    key = changes.get("key", coupon_set.key)
    taken = KeyTaken(f"Another coupon set already uses the key '{key}'.")
    await flush_unique(session, apply, index=_KEY_INDEX, conflict=taken)


async def create_coupon_set(session: AsyncSession, *, data: CouponSetCreate) -> CouponSet:
    fields = data.model_dump(exclude={"key", "metadata"})
    coupon_set = CouponSet(
        **fields,
        key=data.key or "",
        metadata_=data.metadata,
        shared_lookup=_shared_lookup(data.shared_code, data.match_mode),
    )
    if data.key is not None:
        await _save(session, coupon_set)
    else:
        # Six random characters make a clash rare; retry the few times it happens.
        for attempt in range(5):
            coupon_set.key = _generated_key(data.label)
            try:
                await _save(session, coupon_set)
                break
            except KeyTaken:
                if attempt == 4:
                    raise
    if coupon_set.kind == SetKind.unique:
        session.add(Pool(set_id=coupon_set.id, name=DEFAULT_POOL))
        await session.flush()
    await session.refresh(coupon_set)
    return coupon_set


async def list_coupon_sets(
    session: AsyncSession,
    *,
    q: str | None,
    kind: SetKind | None,
    status: SetStatus | None,
    params: PageParams,
) -> list[CouponSet]:
    stmt = select(CouponSet)
    if q:
        pattern = _like_pattern(q)
        stmt = stmt.where(or_(CouponSet.label.ilike(pattern), CouponSet.key.ilike(pattern)))
    if kind is not None:
        stmt = stmt.where(CouponSet.kind == kind)
    if status is not None:
        stmt = stmt.where(CouponSet.status == status)
    return list((await session.execute(paginate(stmt, CouponSet, params))).scalars())


async def update_coupon_set(
    session: AsyncSession, *, coupon_set: CouponSet, data: CouponSetUpdate
) -> CouponSet:
    changes = data.model_dump(exclude_unset=True)
    # Refusals that depend on the set as stored are conflicts with its state (409); a
    # body that contradicts itself was refused as 422 by its schema.
    if coupon_set.kind == SetKind.unique:
        for name in ("shared_code", "max_uses", "per_recipient_limit"):
            if changes.get(name) is not None:
                raise WrongSetKind(f"{name} applies to shared sets only; this set is unique.")
    if coupon_set.kind == SetKind.shared and changes.get("fallback_code") is not None:
        raise WrongSetKind("fallback_code applies to unique sets only; this set is shared.")
    valid_from = changes.get("valid_from", coupon_set.valid_from)
    valid_until = changes.get("valid_until", coupon_set.valid_until)
    if valid_from is not None and valid_until is not None and valid_from >= valid_until:
        kept = "valid_from" if "valid_until" in changes else "valid_until"
        raise WindowConflict(f"valid_from must be before valid_until (the set's {kept}).")
    if "metadata" in changes:
        changes["metadata_"] = changes.pop("metadata")
    if "shared_code" in changes:
        changes["shared_lookup"] = _shared_lookup(changes["shared_code"], coupon_set.match_mode)
    if "valid_until" in changes or "expiry_warning_days" in changes:
        changes["expiry_warned_at"] = None  # a new end: warned again (docs/events.md)
    await _save(session, coupon_set, changes)
    await session.refresh(coupon_set)
    return coupon_set


async def set_status(
    session: AsyncSession, *, coupon_set: CouponSet, status: SetStatus
) -> CouponSet:
    if coupon_set.status != status:
        coupon_set.status = status
        await session.flush()
        await session.refresh(coupon_set)
    return coupon_set


async def delete_coupon_set(session: AsyncSession, *, coupon_set: CouponSet) -> None:
    # Lock the set first: an assignment that commits meanwhile would otherwise be lost.
    await session.execute(
        select(CouponSet.id).where(CouponSet.id == coupon_set.id).with_for_update()
    )
    if await audit.ever_assigned(session, set_id=coupon_set.id):
        raise SetInUse(
            f"Codes of the set '{coupon_set.key}' have been handed out; archive it instead."
        )
    await session.delete(coupon_set)
    await session.flush()

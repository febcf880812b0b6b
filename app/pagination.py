"""Cursor pagination over (created_at, id), newest first.

A cursor is the position of the last row of a page, opaque to clients. Keyset
pagination stays fast on any page and never skips or repeats a row while rows
are added."""

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, tuple_

from app.errors import InvalidCursor
from app.models.base import Entity
from app.schemas.page import Page

MAX_PAGE_SIZE = 200
DAMAGED = "The cursor was not issued by this API or is damaged."

P = TypeVar("P", bound=Page[Any])
R = TypeVar("R", bound=Entity)
V = TypeVar("V")


class PageParams(BaseModel):
    limit: int
    cursor: str | None


async def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page")
    ] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


def encode_cursor(row: Entity) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, row_id = raw.split("|")
        position = datetime.fromisoformat(created_at), uuid.UUID(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(DAMAGED) from None
    if position[0].tzinfo is None:
        raise InvalidCursor(DAMAGED)
    return position


def paginate(stmt: Select[Any], model: type[Entity], params: PageParams) -> Select[Any]:
    """Order newest first and start after the cursor; fetches one extra row to tell
    whether another page follows."""
    if params.cursor is not None:
        created_at, row_id = decode_cursor(params.cursor)
        stmt = stmt.where(tuple_(model.created_at, model.id) < tuple_(created_at, row_id))
    return stmt.order_by(model.created_at.desc(), model.id.desc()).limit(params.limit + 1)


def build_page(
    page_model: type[P], rows: Sequence[R], params: PageParams, public: Callable[[R], Any]
) -> P:
    """The page of a response from the rows ``paginate`` fetched (one more than asked),
    each shown by ``public`` (its mapper in app/schemas/mappers.py)."""
    items = rows[: params.limit]
    more = len(rows) > params.limit
    return page_model(
        items=[public(row) for row in items],
        next_cursor=encode_cursor(items[-1]) if more else None,
    )


PageQuery = Annotated[PageParams, Depends(page_params)]


def encode_id_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"id|{row_id}".encode()).decode().rstrip("=")


def decode_id_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, value = raw.split("|")
        if tag != "id":
            raise ValueError(tag)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(DAMAGED) from None


def next_id_cursor(ids: Sequence[int], params: PageParams) -> str | None:
    """For lists ordered by a bigint id: the cursor after the last row shown, if more follow
    (``ids`` holds one row more than the page when another page exists)."""
    return encode_id_cursor(ids[params.limit - 1]) if len(ids) > params.limit else None


def encode_key_cursor(tag: str, *parts: object) -> str:
    """A cursor holding a list's sort key (``parts``, shown with ``str``), tagged with the
    list it belongs to."""
    raw = "|".join([tag, *(str(part) for part in parts)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_key_cursor(cursor: str, tag: str, *parsers: Callable[[str], Any]) -> list[Any]:
    """The sort key ``encode_key_cursor`` wrote, each part read by its parser (a
    ``ValueError`` of one means the cursor was not issued by this API)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(DAMAGED) from None
    found, *parts = raw.split("|")
    if found != tag or len(parts) != len(parsers):
        raise InvalidCursor(DAMAGED)
    return [cursor_part(parse, part) for parse, part in zip(parsers, parts, strict=True)]


def cursor_part(parse: Callable[[str], V], text: str) -> V:
    """One part of a cursor's key read by ``parse``, whose ``ValueError`` means the
    cursor is damaged."""
    try:
        return parse(text)
    except ValueError:
        raise InvalidCursor(DAMAGED) from None


def aware_datetime(text: str) -> datetime:
    """A cursor's timestamp: ISO 8601 with its offset."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(text)
    return moment

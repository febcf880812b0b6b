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

P = TypeVar("P", bound=Page[Any])
R = TypeVar("R", bound=Entity)


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
        raise InvalidCursor("The cursor was not issued by this API or is damaged.") from None
    if position[0].tzinfo is None:
        raise InvalidCursor("The cursor was not issued by this API or is damaged.")
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
        raise InvalidCursor("The cursor was not issued by this API or is damaged.") from None


def next_id_cursor(ids: Sequence[int], params: PageParams) -> str | None:
    """For lists ordered by a bigint id: the cursor after the last row shown, if more follow
    (``ids`` holds one row more than the page when another page exists)."""
    return encode_id_cursor(ids[params.limit - 1]) if len(ids) > params.limit else None

"""Cursor pagination over (created_at, id), newest first.

A cursor is the position of the last row of a page, opaque to clients. Keyset
pagination stays fast on any page and never skips or repeats a row while rows
are added.

Each list documents the shape of its cursors (a pattern on the ``cursor`` parameter):
the parts of a sort key joined by ``.``, each of a fixed alphabet (digits, a UUID's 32
hex digits), so that every cursor of the shape is a position in the list and anything
else is refused as ``invalid-cursor`` before the list is read."""

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, tuple_

from app.errors import InvalidCursor
from app.models.base import Entity
from app.schemas.page import Page

MAX_PAGE_SIZE = 200
DAMAGED = "The cursor was not issued by this API or is damaged."

# The parts of a cursor: a bigint (at most 18 digits, so any of them fits), an instant
# as microseconds since 1970 (17 digits reach the year 5138), a UUID as hex.
INT_PART = "[0-9]{1,18}"
INSTANT_PART = "[0-9]{1,17}"
UUID_PART = "[0-9a-f]{32}"
# The shapes of the lists' cursors: (created_at, id) and a bigint row id.
TIME_CURSOR = rf"^{INSTANT_PART}\.{UUID_PART}$"
ID_CURSOR = rf"^{INT_PART}$"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

P = TypeVar("P", bound=Page[Any])
R = TypeVar("R", bound=Entity)


class PageParams(BaseModel):
    limit: int
    cursor: str | None


def page_query(cursor_shape: str) -> Callable[..., Awaitable[PageParams]]:
    """The dependency reading ``limit`` and ``cursor`` for a list whose cursors have
    the shape ``cursor_shape`` (documented on the parameter, checked when decoded)."""

    async def page_params(
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size")] = 50,
        cursor: Annotated[
            str | None,
            Query(
                max_length=200,
                description="`next_cursor` of the previous page",
                json_schema_extra={"pattern": cursor_shape},
            ),
        ] = None,
    ) -> PageParams:
        return PageParams(limit=limit, cursor=cursor)

    return page_params


# Lists ordered by (created_at, id), and lists ordered by a bigint row id.
PageQuery = Annotated[PageParams, Depends(page_query(TIME_CURSOR))]
IdPageQuery = Annotated[PageParams, Depends(page_query(ID_CURSOR))]


def instant_part(moment: datetime) -> str:
    return str((moment - _EPOCH) // timedelta(microseconds=1))


def parse_instant(text: str) -> datetime:
    return _EPOCH + timedelta(microseconds=int(text))


def parse_uuid(text: str) -> uuid.UUID:
    return uuid.UUID(hex=text)


def encode_key_cursor(*parts: object) -> str:
    """A cursor holding a list's sort key: ``parts`` already in their cursor form
    (``instant_part``, a UUID's ``hex``, an int)."""
    return ".".join(str(part) for part in parts)


def decode_key_cursor(cursor: str, shape: str, *parsers: Callable[[str], Any]) -> list[Any]:
    """The sort key ``encode_key_cursor`` wrote, if ``cursor`` has the list's ``shape``,
    each part read by its parser."""
    if not re.fullmatch(shape, cursor):
        raise InvalidCursor(DAMAGED)
    parts = cursor.split(".")
    return [parse(part) for parse, part in zip(parsers, parts, strict=True)]


def encode_cursor(row: Entity) -> str:
    return encode_key_cursor(instant_part(row.created_at), row.id.hex)


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    created_at, row_id = decode_key_cursor(cursor, TIME_CURSOR, parse_instant, parse_uuid)
    return created_at, row_id


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


def encode_id_cursor(row_id: int) -> str:
    return str(row_id)


def decode_id_cursor(cursor: str) -> int:
    (row_id,) = decode_key_cursor(cursor, ID_CURSOR, int)
    return int(row_id)


def next_id_cursor(ids: Sequence[int], params: PageParams) -> str | None:
    """For lists ordered by a bigint id: the cursor after the last row shown, if more follow
    (``ids`` holds one row more than the page when another page exists)."""
    return encode_id_cursor(ids[params.limit - 1]) if len(ids) > params.limit else None

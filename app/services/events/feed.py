"""Reading events in order: the feed's pages and the dispatcher's batches are the same
statement (``sql.EVENTS_AFTER``); this module turns its rows into events."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg

from app.pagination import INT_PART, decode_key_cursor, encode_key_cursor
from app.services.events import sql
from app.services.events.catalogue import FROM_AUDIT

_TYPE_OF_ACTION = {a: t.value for t, actions in FROM_AUDIT.items() for a in actions}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Position(NamedTuple):
    """A place in the event order (app/services/events/sql.py)."""

    txid: int
    src: int
    source_id: int


START = Position(0, 0, 0)


# A feed cursor: txid.src.source_id (every value of this shape is a place in the order).
CURSOR = rf"^{INT_PART}\.[01]\.{INT_PART}$"


def encode_position(position: Position) -> str:
    return encode_key_cursor(position.txid, position.src, position.source_id)


def decode_position(cursor: str) -> Position:
    txid, src, source_id = decode_key_cursor(cursor, CURSOR, int, int, int)
    return Position(txid, src, source_id)


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    timestamp: datetime
    data: dict[str, Any]
    position: Position
    # The audit action it was read from (None for outbox events).
    action: str | None

    def body(self) -> str:
        """The webhook body: the same bytes on every try (the signature covers them)."""
        return json.dumps(
            {"type": self.type, "timestamp": iso(self.timestamp), "data": self.data},
            separators=(",", ":"),
            ensure_ascii=False,
        )


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_id(src: int, source_id: int) -> str:
    """The event's id (``webhook-id``): stable, one per source row."""
    return f"evt_{'a' if src == 0 else 'o'}{source_id}"


def _event(row: asyncpg.Record) -> Event:
    action = row["action"]
    kind = _TYPE_OF_ACTION.get(action, "") if action is not None else row["type"]
    data = row["data"]
    if isinstance(data, str):
        data = json.loads(data)
    return Event(
        id=event_id(row["src"], row["id"]),
        type=kind,
        timestamp=row["created_at"],
        data=data,
        position=Position(row["txid"], row["src"], row["id"]),
        action=action,
    )


async def read(
    conn: asyncpg.Connection,
    *,
    after: Position,
    actions: list[str],
    outbox_types: list[str],
    limit: int,
    retention: timedelta | None = None,
) -> list[Event]:
    """Up to ``limit`` events after ``after``, in order; only those not older than
    ``retention`` when given."""
    since = datetime.now(UTC) - retention if retention is not None else _EPOCH
    rows = await conn.fetch(
        sql.EVENTS_AFTER, after.txid, after.src, after.source_id, actions, outbox_types,
        limit, since,
    )  # fmt: skip
    return [_event(row) for row in rows]

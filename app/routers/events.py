"""/v1/events: the event feed, for callers that cannot receive webhooks."""

import asyncio
import re
import time
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from app.auth import ReadKey
from app.db import DriverPool
from app.errors import InvalidCursor, ValidationFailed
from app.metrics import RequestsInFlight
from app.problems import problem_responses
from app.schemas.events import EventPage, EventPublic
from app.services.events import feed
from app.services.events.catalogue import EventType, audit_actions, outbox_types
from app.settings import SettingsDep

router = APIRouter(prefix="/v1/events", tags=["events"])

MAX_WAIT = 30.0
# What `types` accepts: known types separated by commas, blanks around them ignored.
_TYPE = "|".join(re.escape(t.value) for t in EventType)
TYPES_PATTERN = rf"^\s*(?:(?:{_TYPE})\s*)?(?:,\s*(?:(?:{_TYPE})\s*)?)*$"


def _types(given: list[str] | None) -> list[EventType] | None:
    names = [n.strip() for value in given or [] for n in value.split(",") if n.strip()]
    if not names:
        return None
    known = {t.value: t for t in EventType}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValidationFailed(
            f"Unknown event type(s): {', '.join(unknown)}. Known: {', '.join(known)}.",
            errors=[{"loc": ["query", "types"], "message": "unknown event type", "type": "enum"}],
        )
    return [known[n] for n in names]


@router.get(
    "",
    summary="Events in order, after a cursor; long-polls when none are newer",
    description="Every event that committed, in a stable order: pass each page's "
    "`next_cursor` as `after` to read on, never missing one (docs/events.md explains the "
    "order). Without `after`, from the oldest event kept (`COUPONS_EVENTS_RETENTION_DAYS`). "
    "With `wait`, an empty answer waits up to that many seconds for an event (at most "
    "`COUPONS_EVENTS_MAX_WAIT_SECONDS`, 30 by default).",
    responses=problem_responses(InvalidCursor),
)
async def list_events(
    _: ReadKey,
    pool: DriverPool,
    settings: SettingsDep,
    in_flight: RequestsInFlight,
    after: Annotated[
        str | None,
        Query(
            max_length=200,
            description="`next_cursor` of the previous page",
            json_schema_extra={"pattern": feed.CURSOR},
        ),
    ] = None,
    types: Annotated[
        list[str] | None,
        Query(
            max_length=len(EventType),
            description="Only these types (repeat the parameter, or separate by commas)",
            examples=["code.assigned,pool.low_stock"],
            json_schema_extra={"items": {"type": "string", "pattern": TYPES_PATTERN}},
        ),
    ] = None,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT, description="Seconds to wait for an event when none is newer"),
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Events per page")] = 100,
) -> EventPage:
    position = feed.decode_position(after) if after is not None else feed.START
    chosen = _types(types)
    actions, kinds = audit_actions(chosen), outbox_types(chosen)
    retention = timedelta(days=settings.events_retention_days)
    deadline = time.monotonic() + min(wait, settings.events_max_wait_seconds)
    while True:
        async with pool.acquire() as conn:
            events = await feed.read(
                conn,
                after=position,
                actions=actions,
                outbox_types=kinds,
                limit=limit,
                retention=retention,
            )
        if events or time.monotonic() >= deadline:
            break
        with in_flight.waiting():
            await asyncio.sleep(min(settings.events_poll_seconds, deadline - time.monotonic()))
    last = events[-1].position if events else position
    return EventPage(
        items=[
            EventPublic(id=e.id, type=e.type, timestamp=e.timestamp, data=e.data) for e in events
        ],
        next_cursor=feed.encode_position(last),
    )

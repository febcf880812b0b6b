"""The event types, and where each comes from: the audit trail (``audit_events``, one
row per change of a code, written by the change's own statement) or the outbox
(``event_outbox``, written in the transaction of what it reports)."""

import enum


class EventType(enum.StrEnum):
    code_assigned = "code.assigned"
    code_returned = "code.returned"
    redemption_created = "redemption.created"
    redemption_rolled_back = "redemption.rolled_back"
    pool_low_stock = "pool.low_stock"
    pool_exhausted = "pool.exhausted"
    pool_restocked = "pool.restocked"
    import_finished = "import.finished"
    delivery_finished = "delivery.finished"
    coupon_set_expiring = "coupon_set.expiring"
    webhook_endpoint_disabled = "webhook_endpoint.disabled"


# The audit actions each derived type is read from.
FROM_AUDIT: dict[EventType, tuple[str, ...]] = {
    EventType.code_assigned: ("assign",),
    EventType.code_returned: ("unassign", "return"),
    EventType.redemption_created: ("redeem", "hold"),
    EventType.redemption_rolled_back: ("rollback",),
}
FROM_OUTBOX = tuple(t for t in EventType if t not in FROM_AUDIT)

# Audit actions that change a pool's free stock without being events themselves: the
# dispatcher reads them too, to evaluate low-stock alerts (never shown in the feed).
STOCK_ONLY_ACTIONS = ("add_codes", "generate_codes", "import_codes", "void")

# The only type an endpoint's test sends; never in the feed.
PING = "ping"


def audit_actions(types: list[EventType] | None) -> list[str]:
    chosen = types if types is not None else list(EventType)
    return [a for t in chosen for a in FROM_AUDIT.get(t, ())]


def outbox_types(types: list[EventType] | None) -> list[str]:
    chosen = types if types is not None else list(EventType)
    return [t.value for t in chosen if t in FROM_OUTBOX]

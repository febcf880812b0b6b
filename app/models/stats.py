"""Statistics kept as counters that no two writers share.

Triggers (``app/sql/stats_*.sql``, one per statement, not per row) append the net change
of each statement to ``stats_deltas``; the folder (``app/services/stats/folder.py``)
moves those rows into ``pool_stock``, ``delivery_stock`` and ``activity_buckets`` in one
transaction. A reader adds the folded counters and the deltas not folded yet, in one
statement, so it sees each change exactly once. Why this is exact and does not
serialise claims: docs/architecture.md, "Statistics"."""

import uuid
from datetime import datetime

from sqlalchemy import Index, text
from sqlmodel import Field

from app.models.base import Base, Col, counter, identity
from app.models.redemption import Redemption

# The pool of the counts of a shared set, which has no pools: the set as a whole.
WHOLE_SET = uuid.UUID(int=0)
# Activity is counted in 15-minute buckets (aligned on UTC): every time zone in use is
# a whole number of quarter hours from UTC, so any zone's hours, days and weeks are
# exact sums of them.
BUCKET_MINUTES = 15


class StatsDelta(Base, table=True):
    """The change one statement made, per (set, pool, delivery id): appended by the
    triggers, deleted by the folder once added to the counters. No foreign keys: a set
    deleted with its codes still leaves its last deltas, which the folder drops."""

    __tablename__ = "stats_deltas"
    __table_args__ = (Index("ix_stats_deltas_set_id", "set_id"),)

    id: Col[int] = identity()
    set_id: Col[uuid.UUID]
    pool_id: Col[uuid.UUID]
    # Set only for codes that count towards a delivery (assigned or redeemed).
    delivery_id: Col[str | None] = Field(default=None)
    bucket: Col[datetime]
    # Net change of the codes in each status (shared sets: `assigned` = recipients).
    available: Col[int] = counter()
    assigned: Col[int] = counter()
    redeemed: Col[int] = counter()
    void: Col[int] = counter()
    # Net change of the codes that are assigned or redeemed and carry delivery_id.
    delivered: Col[int] = counter()
    # Events in this statement, for the timelines.
    n_assigned: Col[int] = counter()
    n_redeemed: Col[int] = counter()
    n_rolled_back: Col[int] = counter()
    n_imported: Col[int] = counter()


class PoolStock(Base, table=True):
    """Codes of a pool per status, as folded so far (plus ``stats_deltas``: the truth).
    A shared set has one row, pool ``WHOLE_SET``, whose ``assigned`` is its recipients."""

    __tablename__ = "pool_stock"

    set_id: Col[uuid.UUID] = Field(
        foreign_key="coupon_sets.id", ondelete="CASCADE", primary_key=True
    )
    pool_id: Col[uuid.UUID] = Field(primary_key=True)
    available: Col[int] = counter()
    assigned: Col[int] = counter()
    redeemed: Col[int] = counter()
    void: Col[int] = counter()


class DeliveryStock(Base, table=True):
    """Codes of a pool that are assigned or redeemed and carry a delivery id (any id a
    caller gave, or a delivery's own), as folded so far."""

    __tablename__ = "delivery_stock"

    set_id: Col[uuid.UUID] = Field(
        foreign_key="coupon_sets.id", ondelete="CASCADE", primary_key=True
    )
    delivery_id: Col[str] = Field(primary_key=True)
    pool_id: Col[uuid.UUID] = Field(primary_key=True)
    codes: Col[int] = counter()


class ActivityBucket(Base, table=True):
    """What happened to a pool's codes in one 15-minute bucket, as folded so far."""

    __tablename__ = "activity_buckets"
    __table_args__ = (Index("ix_activity_buckets_set_id_bucket", "set_id", "bucket"),)

    set_id: Col[uuid.UUID] = Field(
        foreign_key="coupon_sets.id", ondelete="CASCADE", primary_key=True
    )
    pool_id: Col[uuid.UUID] = Field(primary_key=True)
    bucket: Col[datetime] = Field(primary_key=True)
    assigned: Col[int] = counter()
    redeemed: Col[int] = counter()
    rolled_back: Col[int] = counter()
    imported: Col[int] = counter()


# The live holds of unique codes, by expiry: `held` reads only them. (Shared codes' holds
# have ix_redemptions_shared_holds, app/models/usage.py.) Declared here beside the
# counts it serves; the table is app/models/redemption.py.
Index(
    "ix_redemptions_unique_holds",
    Redemption.set_id,
    Redemption.hold_expires_at,
    postgresql_where=text("status = 'held' AND code_id IS NOT NULL"),
)

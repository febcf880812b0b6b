"""Pools: named child stocks of a unique set, so each recipient gets a fitting code."""

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Index, func, text
from sqlmodel import Field

from app.models.base import Base, Col, Entity

DEFAULT_POOL = "default"
MAX_POOLS_PER_SET = 1000


class Pool(Entity, Base, table=True):
    __tablename__ = "pools"
    __table_args__ = (
        Index("uq_pools_set_id_name_lower", "set_id", func.lower(text("name")), unique=True),
        CheckConstraint("stock_state IN ('ok', 'low', 'exhausted')", name="stock_state"),
    )

    id: Col[uuid.UUID] = Field(default_factory=uuid.uuid4, primary_key=True)
    set_id: Col[uuid.UUID] = Field(foreign_key="coupon_sets.id", ondelete="CASCADE")
    name: Col[str]
    # Low-stock alerts (docs/events.md): fire pool.low_stock when the free codes drop to
    # low_stock_threshold or the forecast's days of stock left to low_stock_days.
    low_stock_threshold: Col[int | None] = Field(default=None)
    low_stock_days: Col[float | None] = Field(default=None)
    # ok, low or exhausted: the last state an alert was sent for (each fires once).
    stock_state: Col[str] = Field(
        default="ok", max_length=16, sa_column_kwargs={"server_default": "ok"}
    )
    stock_state_at: Col[datetime | None] = Field(default=None)

"""Pools: named child stocks of a unique set, so each recipient gets a fitting code."""

import uuid

from sqlalchemy import Index, func, text
from sqlmodel import Field

from app.models.base import Base, Col, Entity

DEFAULT_POOL = "default"
MAX_POOLS_PER_SET = 1000


class Pool(Entity, Base, table=True):
    __tablename__ = "pools"
    __table_args__ = (
        Index("uq_pools_set_id_name_lower", "set_id", func.lower(text("name")), unique=True),
    )

    id: Col[uuid.UUID] = Field(default_factory=uuid.uuid4, primary_key=True)
    set_id: Col[uuid.UUID] = Field(foreign_key="coupon_sets.id", ondelete="CASCADE")
    name: Col[str]

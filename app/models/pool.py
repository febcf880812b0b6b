"""Pools: named child stocks of a unique set, so each recipient gets a fitting code."""

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import ForeignKey, Index, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Entity
from app.models.common import Label, WriteModel

DEFAULT_POOL = "default"
MAX_POOLS_PER_SET = 1000


class Pool(Entity, Base):
    __tablename__ = "pools"
    __table_args__ = (
        Index("uq_pools_set_id_name_lower", "set_id", func.lower(text("name")), unique=True),
    )

    set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("coupon_sets.id", ondelete="CASCADE"))
    name: Mapped[str]


class PoolCreate(WriteModel):
    name: Label


class PoolUpdate(WriteModel):
    name: Label


class PoolStock(BaseModel):
    """Codes of the pool by status; available + assigned + redeemed + void = total."""

    available: int = 0
    assigned: int = 0
    redeemed: int = 0
    void: int = 0
    total: int = 0


class PoolPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    set_id: uuid.UUID
    name: str
    stock: PoolStock
    created_at: datetime
    updated_at: datetime


class PoolList(BaseModel):
    items: list[PoolPublic]

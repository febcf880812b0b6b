"""Pools: the create and rename bodies, and a pool with its stock as the API shows it."""

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from app.schemas.common import Label, WriteModel


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

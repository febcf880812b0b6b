"""Pools: the create and rename bodies, and a pool with its stock as the API shows it."""

import uuid
from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.common import Label, NotNull, WriteModel

# The last stock alert of a pool (docs/events.md, "Low-stock alerts").
StockState = Literal["ok", "low", "exhausted"]


class PoolCreate(WriteModel):
    name: Label


class PoolUpdate(WriteModel):
    """Only the fields sent change; null clears a low-stock limit."""

    name: Label | NotNull = None
    low_stock_threshold: int | None = Field(
        default=None,
        ge=0,
        le=2_000_000_000,
        description="pool.low_stock fires once when the free codes drop to this many",
    )
    low_stock_days: float | None = Field(
        default=None,
        gt=0,
        le=3650,
        description="pool.low_stock fires once when the forecast's days of stock left drop "
        "to this many",
    )

    @model_validator(mode="after")
    def _name_not_null(self) -> Self:
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be null; every pool has one")
        return self


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
    low_stock_threshold: int | None = Field(
        description="pool.low_stock fires when the free codes drop to this many"
    )
    low_stock_days: float | None = Field(
        description="pool.low_stock fires when the days of stock left drop to this many"
    )
    stock_state: StockState = Field(
        description="The last stock alert sent: ok (none, or pool.restocked), low "
        "(pool.low_stock), exhausted (pool.exhausted)"
    )
    stock_state_at: datetime | None = Field(description="When stock_state last changed")
    created_at: datetime
    updated_at: datetime


class PoolList(BaseModel):
    items: list[PoolPublic]

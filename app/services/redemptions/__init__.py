"""The redemption engine: redeem, validate, hold → confirm/release, roll back.

service.py holds what the API does; engine/ runs it in PostgreSQL (engine/sql.py, the
functions in app/sql/) on the plain asyncpg pool or the request's connection."""

from app.services.redemptions.engine import Engine, RedemptionEngine
from app.services.redemptions.service import (
    get_redemption,
    redeem,
    settle,
    validate,
)

__all__ = [
    "Engine",
    "RedemptionEngine",
    "get_redemption",
    "redeem",
    "settle",
    "validate",
]

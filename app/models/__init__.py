"""Tables and API schemas, one module per noun. Importing this package registers
every table on ``Base.metadata`` (Alembic compares against it)."""

from app.models.api_key import ApiKey
from app.models.base import Base
from app.models.coupon_set import CouponSet
from app.models.pool import Pool

__all__ = ["ApiKey", "Base", "CouponSet", "Pool"]

"""What every path of an assignment shares: when a set may hand out codes, and how an
assignment is shown to the caller. Other services refuse the same sets with
``ensure_usable`` (deliveries, redemptions)."""

from datetime import UTC, datetime

from app.errors import Expired, NotYetValid, SetArchived
from app.models.coupon_set import CouponSet, SetFacts, SetStatus


def ensure_usable(coupon_set: CouponSet | SetFacts, *, at: datetime | None = None) -> None:
    """Refuse an archived set, or a moment outside its validity window."""
    moment = at or datetime.now(UTC)
    if coupon_set.status == SetStatus.archived:
        raise SetArchived(f"The set '{coupon_set.key}' is archived.")
    if coupon_set.valid_from is not None and moment < coupon_set.valid_from:
        raise NotYetValid(
            f"The set '{coupon_set.key}' is valid from {coupon_set.valid_from.isoformat()}.",
            valid_from=coupon_set.valid_from.isoformat(),
        )
    if coupon_set.valid_until is not None and moment >= coupon_set.valid_until:
        raise Expired(
            f"The set '{coupon_set.key}' was valid until {coupon_set.valid_until.isoformat()}.",
            valid_until=coupon_set.valid_until.isoformat(),
        )

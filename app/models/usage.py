"""Usage of shared codes: one counter row per shared set, kept in the transaction of
each use, so a limit is checked in O(1) however many uses the code has had.

``uses`` counts the set's redemptions that are ``redeemed`` or ``held`` (a hold that
expired is given back, under this row's lock, by the next write on the set: its
status becomes ``expired``). Why that stays exact is in docs/architecture.md
("Redemptions"); the statements are in app/sql/ and app/services/redemptions/."""

import uuid

from sqlalchemy import CheckConstraint, Index, text
from sqlmodel import Field

from app.models.base import Base, Col, counter
from app.models.redemption import Redemption


class SetUsage(Base, table=True):
    __tablename__ = "set_usage"
    # The counter never goes below zero: a use given back twice fails instead.
    __table_args__ = (CheckConstraint("uses >= 0", name="uses_not_negative"),)

    set_id: Col[uuid.UUID] = Field(
        foreign_key="coupon_sets.id", ondelete="CASCADE", primary_key=True
    )
    uses: Col[int] = counter()


# The holds of shared codes that still count against their set's counter, by expiry:
# giving back the expired ones reads only them, whatever the number of past uses.
# (Declared here beside the counter it serves; the table is app/models/redemption.py.)
Index(
    "ix_redemptions_shared_holds",
    Redemption.set_id,
    Redemption.hold_expires_at,
    postgresql_where=text("status = 'held' AND code_id IS NULL"),
)

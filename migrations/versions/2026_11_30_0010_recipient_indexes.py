"""indexes for a recipient's coupons and activity across sets, and for every filter of
the code list

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, table, columns, predicate). Why each exists: docs/insight.md.
INDEXES = (
    # Replaces ix_codes_set_id_recipient_id: the same equality lookups within a set, and
    # a recipient's codes across sets, in pages, at no extra cost to a claim.
    (
        "ix_codes_recipient_id",
        "codes",
        ["recipient_id", "set_id", "id"],
        "recipient_id IS NOT NULL",
    ),
    # The code list filtered by status and/or pool; free codes are in ix_codes_free.
    ("ix_codes_pool_id_status_id", "codes", ["pool_id", "status", "id"], "status <> 'available'"),
    (
        "ix_shared_assignments_recipient_id",
        "shared_assignments",
        ["recipient_id", "set_id", "id"],
        None,
    ),
    (
        "ix_audit_events_recipient_id",
        "audit_events",
        ["recipient_id", "created_at", "id"],
        "recipient_id IS NOT NULL",
    ),
    (
        "ix_redemptions_recipient_holds",
        "redemptions",
        ["recipient_id", "hold_expires_at", "id"],
        "hold_expires_at IS NOT NULL AND recipient_id IS NOT NULL",
    ),
)


def _where(predicate: str | None) -> dict[str, sa.TextClause]:
    return {"postgresql_where": sa.text(predicate)} if predicate else {}


def _drop(name: str, table: str) -> None:
    op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)


# Built CONCURRENTLY: codes and audit_events may hold tens of millions of rows, and
# claims go on meanwhile. An interrupted build leaves an invalid index: start afresh.
def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table, columns, predicate in INDEXES:
            _drop(name, table)
            op.create_index(name, table, columns, postgresql_concurrently=True, **_where(predicate))
        _drop("ix_codes_set_id_recipient_id", "codes")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        _drop("ix_codes_set_id_recipient_id", "codes")
        op.create_index(
            "ix_codes_set_id_recipient_id",
            "codes",
            ["set_id", "recipient_id"],
            postgresql_concurrently=True,
            postgresql_where=sa.text("recipient_id IS NOT NULL"),
        )
        for name, table, _, _ in reversed(INDEXES):
            _drop(name, table)

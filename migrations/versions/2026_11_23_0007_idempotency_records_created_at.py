"""an index on idempotency_records.created_at, for removing expired records

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 18:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Built CONCURRENTLY: the table may be large (nothing removed records before), and
# writes with an Idempotency-Key go on meanwhile.
def upgrade() -> None:
    with op.get_context().autocommit_block():
        # A build that was interrupted leaves an invalid index behind: start afresh.
        op.drop_index(
            "ix_idempotency_records_created_at",
            table_name="idempotency_records",
            postgresql_concurrently=True,
            if_exists=True,
        )
        op.create_index(
            "ix_idempotency_records_created_at",
            "idempotency_records",
            ["created_at"],
            unique=False,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_idempotency_records_created_at",
            table_name="idempotency_records",
            postgresql_concurrently=True,
        )

"""codes, assignments, redemptions, idempotency, audit

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 12:34:54.068838
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("set_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(), nullable=True),
        sa.Column("recipient_id", sa.String(), nullable=True),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("idempotency_key", sa.String(), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index("ix_audit_events_set_id_id", "audit_events", ["set_id", "id"], unique=False)
    op.create_table(
        "idempotency_records",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("owner", "key", name=op.f("pk_idempotency_records")),
    )
    op.create_table(
        "shared_assignments",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("recipient_id", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("delivery_id", sa.String(), nullable=True),
        sa.Column("additional", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "assigned_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["set_id"],
            ["coupon_sets.id"],
            name=op.f("fk_shared_assignments_set_id_coupon_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shared_assignments")),
    )
    op.create_index(
        "ix_shared_assignments_set_id_id", "shared_assignments", ["set_id", "id"], unique=False
    )
    op.create_index(
        "uq_shared_assignments_recipient",
        "shared_assignments",
        ["set_id", "recipient_id"],
        unique=True,
        postgresql_where=sa.text("NOT additional"),
    )
    op.create_table(
        "codes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("pool_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(), nullable=False),
        sa.Column("lookup", sa.String(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="available", nullable=False),
        sa.Column("recipient_id", sa.String(), nullable=True),
        sa.Column("address", sa.String(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("delivery_id", sa.String(), nullable=True),
        sa.Column("additional", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"], ["pools.id"], name=op.f("fk_codes_pool_id_pools"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["set_id"],
            ["coupon_sets.id"],
            name=op.f("fk_codes_set_id_coupon_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_codes")),
    )
    op.create_index(
        "ix_codes_free",
        "codes",
        ["pool_id", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'available'"),
    )
    op.create_index("ix_codes_set_id_id", "codes", ["set_id", "id"], unique=False)
    op.create_index(
        "ix_codes_set_id_recipient_id",
        "codes",
        ["set_id", "recipient_id"],
        unique=False,
        postgresql_where=sa.text("recipient_id IS NOT NULL"),
    )
    op.create_index(
        "uq_codes_recipient",
        "codes",
        ["pool_id", "recipient_id"],
        unique=True,
        postgresql_where=sa.text("recipient_id IS NOT NULL AND NOT additional"),
    )
    op.create_index("uq_codes_set_id_lookup", "codes", ["set_id", "lookup"], unique=True)
    op.create_table(
        "redemptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("code_id", sa.BigInteger(), nullable=True),
        sa.Column("code", sa.String(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("recipient_id", sa.String(), nullable=True),
        sa.Column("order_id", sa.String(), nullable=True),
        sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hold_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["code_id"], ["codes.id"], name=op.f("fk_redemptions_code_id_codes"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["set_id"],
            ["coupon_sets.id"],
            name=op.f("fk_redemptions_set_id_coupon_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemptions")),
    )
    op.create_index(
        "ix_redemptions_active_code",
        "redemptions",
        ["code_id"],
        unique=False,
        postgresql_where=sa.text("status IN ('redeemed', 'held')"),
    )
    op.create_index(
        "ix_redemptions_active_set",
        "redemptions",
        ["set_id", "recipient_id"],
        unique=False,
        postgresql_where=sa.text("status IN ('redeemed', 'held')"),
    )
    op.add_column(
        "coupon_sets",
        sa.Column("match_mode", sa.String(length=16), server_default="normalized", nullable=False),
    )
    op.add_column("coupon_sets", sa.Column("per_recipient_limit", sa.Integer(), nullable=True))
    op.add_column(
        "coupon_sets",
        sa.Column(
            "bind_to_recipient", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    op.add_column("coupon_sets", sa.Column("fallback_code", sa.String(), nullable=True))
    op.add_column("coupon_sets", sa.Column("shared_lookup", sa.String(), nullable=True))
    op.execute(
        "UPDATE coupon_sets SET shared_lookup = CASE match_mode WHEN 'exact' THEN shared_code "
        "ELSE upper(regexp_replace(shared_code, '[\\s._-]+', '', 'g')) END"
    )
    op.create_index("ix_coupon_sets_shared_lookup", "coupon_sets", ["shared_lookup"])
    op.create_index("ix_codes_lookup", "codes", ["lookup"])
    # The audit trail is append-only: rows can be added, never changed or removed.
    op.execute(
        """
        CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_events is append-only';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
    )


def downgrade() -> None:
    op.drop_index("ix_codes_lookup", table_name="codes")
    op.drop_index("ix_coupon_sets_shared_lookup", table_name="coupon_sets")
    op.drop_column("coupon_sets", "shared_lookup")
    op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
    op.execute("DROP FUNCTION audit_events_append_only()")
    op.drop_column("coupon_sets", "fallback_code")
    op.drop_column("coupon_sets", "bind_to_recipient")
    op.drop_column("coupon_sets", "per_recipient_limit")
    op.drop_column("coupon_sets", "match_mode")
    op.drop_index(
        "ix_redemptions_active_set",
        table_name="redemptions",
        postgresql_where=sa.text("status IN ('redeemed', 'held')"),
    )
    op.drop_index(
        "ix_redemptions_active_code",
        table_name="redemptions",
        postgresql_where=sa.text("status IN ('redeemed', 'held')"),
    )
    op.drop_table("redemptions")
    op.drop_index("uq_codes_set_id_lookup", table_name="codes")
    op.drop_index(
        "uq_codes_recipient",
        table_name="codes",
        postgresql_where=sa.text("recipient_id IS NOT NULL AND NOT additional"),
    )
    op.drop_index(
        "ix_codes_set_id_recipient_id",
        table_name="codes",
        postgresql_where=sa.text("recipient_id IS NOT NULL"),
    )
    op.drop_index("ix_codes_set_id_id", table_name="codes")
    op.drop_index(
        "ix_codes_free", table_name="codes", postgresql_where=sa.text("status = 'available'")
    )
    op.drop_table("codes")
    op.drop_index(
        "uq_shared_assignments_recipient",
        table_name="shared_assignments",
        postgresql_where=sa.text("NOT additional"),
    )
    op.drop_index("ix_shared_assignments_set_id_id", table_name="shared_assignments")
    op.drop_table("shared_assignments")
    op.drop_table("idempotency_records")
    op.drop_index("ix_audit_events_set_id_id", table_name="audit_events")
    op.drop_table("audit_events")

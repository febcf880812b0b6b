"""foundation: api keys, coupon sets, pools

Revision ID: 0001
Revises:
Create Date: 2026-11-23 12:24:26.582073
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["api_keys.id"],
            name=op.f("fk_api_keys_created_by_api_keys"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("secret_sha256", name=op.f("uq_api_keys_secret_sha256")),
    )
    op.create_table(
        "coupon_sets",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("shared_code", sa.String(), nullable=True),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(kind = 'shared') = (shared_code IS NOT NULL)", name=op.f("ck_coupon_sets_shared_code")
        ),
        sa.CheckConstraint("kind IN ('unique', 'shared')", name=op.f("ck_coupon_sets_kind")),
        sa.CheckConstraint(
            "max_uses IS NULL OR (kind = 'shared' AND max_uses > 0)",
            name=op.f("ck_coupon_sets_max_uses"),
        ),
        sa.CheckConstraint("status IN ('active', 'archived')", name=op.f("ck_coupon_sets_status")),
        sa.CheckConstraint(
            "valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until",
            name=op.f("ck_coupon_sets_validity_window"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_sets")),
    )
    op.create_index(
        "ix_coupon_sets_created_at_id", "coupon_sets", ["created_at", "id"], unique=False
    )
    op.create_index(
        "uq_coupon_sets_key_lower", "coupon_sets", [sa.literal_column("lower(key)")], unique=True
    )
    op.create_table(
        "pools",
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["set_id"],
            ["coupon_sets.id"],
            name=op.f("fk_pools_set_id_coupon_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pools")),
    )
    op.create_index(
        "uq_pools_set_id_name_lower",
        "pools",
        ["set_id", sa.literal_column("lower(name)")],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_pools_set_id_name_lower", table_name="pools")
    op.drop_table("pools")
    op.drop_index("uq_coupon_sets_key_lower", table_name="coupon_sets")
    op.drop_index("ix_coupon_sets_created_at_id", table_name="coupon_sets")
    op.drop_table("coupon_sets")
    op.drop_table("api_keys")

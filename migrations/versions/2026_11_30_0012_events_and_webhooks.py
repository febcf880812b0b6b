"""events out: the transaction id on audit rows, an event outbox (with triggers for
finished imports and deliveries), webhook endpoints and attempts, the dispatcher's
cursor, low-stock settings on pools and the expiry warning on sets

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TXID = sa.text("(pg_current_xact_id())::text::bigint")

# Frozen copy of app/sql/event_triggers.sql as this revision creates it (a test checks
# that the migrated database runs what the file says).
TRIGGERS = """
CREATE OR REPLACE FUNCTION outbox_import_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_outbox (type, data)
    SELECT 'import.finished', jsonb_build_object(
        'import_id', NEW.id::text, 'set_id', NEW.set_id::text, 'set_key', s.key,
        'kind', NEW.kind, 'status', NEW.status, 'filename', NEW.filename,
        'rows_read', NEW.rows_read, 'accepted', NEW.accepted,
        'duplicates', NEW.duplicates, 'rejected', NEW.rejected, 'error', NEW.error)
    FROM coupon_sets s WHERE s.id = NEW.set_id;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION outbox_delivery_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_outbox (type, data)
    SELECT 'delivery.finished', jsonb_build_object(
        'delivery_id', NEW.id::text, 'label', NEW.label, 'set_id', NEW.coupon_set_id::text,
        'set_key', s.key, 'pool', p.name, 'status', NEW.status,
        'recipients', NEW.recipient_count, 'processed', NEW.processed,
        'assigned', NEW.assigned, 'kept', NEW.kept, 'failure_reason', NEW.failure_reason)
    FROM coupon_sets s LEFT JOIN pools p ON p.id = NEW.pool_id
    WHERE s.id = NEW.coupon_set_id;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS import_finished ON import_jobs;

CREATE TRIGGER import_finished AFTER UPDATE OF status ON import_jobs
FOR EACH ROW WHEN (NEW.status IN ('succeeded', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION outbox_import_finished();

DROP TRIGGER IF EXISTS delivery_finished ON deliveries;

CREATE TRIGGER delivery_finished AFTER UPDATE OF status ON deliveries
FOR EACH ROW WHEN (NEW.status IN ('finished', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION outbox_delivery_finished();
"""


def statements(script: str) -> list[str]:
    """The script's statements: one per blank-line-separated block (asyncpg runs one
    statement at a time; function bodies hold no blank line)."""
    return [block.strip() for block in script.strip().split("\n\n") if block.strip()]


def upgrade() -> None:
    # Added without a default first (no table rewrite: old rows stay NULL, before the
    # feed), then the default for new rows.
    op.add_column("audit_events", sa.Column("txid", sa.BigInteger(), nullable=True))
    op.alter_column("audit_events", "txid", server_default=TXID)
    op.create_index("ix_audit_events_txid_id", "audit_events", ["txid", "id"])

    op.create_table(
        "event_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("txid", sa.BigInteger(), server_default=TXID, nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_outbox")),
    )
    op.create_index("ix_event_outbox_txid_id", "event_outbox", ["txid", "id"])
    op.create_index("ix_event_outbox_created_at", "event_outbox", ["created_at"])

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("events", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("secret", sa.String(), nullable=False),
        sa.Column("previous_secret", sa.String(), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.String(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index("ix_webhook_endpoints_created_at_id", "webhook_endpoints", ["created_at", "id"])

    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("body", sa.String(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("tries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed')", name=op.f("ck_webhook_attempts_status")
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_attempts_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    op.create_index(
        "ix_webhook_attempts_due",
        "webhook_attempts",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_webhook_attempts_endpoint_id_id", "webhook_attempts", ["endpoint_id", "id"])
    op.create_index("ix_webhook_attempts_created_at", "webhook_attempts", ["created_at"])

    op.create_table(
        "event_cursor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("txid", sa.BigInteger(), nullable=False),
        sa.Column("src", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_cursor")),
    )

    op.add_column("pools", sa.Column("low_stock_threshold", sa.Integer(), nullable=True))
    op.add_column("pools", sa.Column("low_stock_days", sa.Float(), nullable=True))
    op.add_column(
        "pools",
        sa.Column("stock_state", sa.String(length=16), server_default="ok", nullable=False),
    )
    op.add_column("pools", sa.Column("stock_state_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        op.f("ck_pools_stock_state"), "pools", "stock_state IN ('ok', 'low', 'exhausted')"
    )
    op.add_column("coupon_sets", sa.Column("expiry_warning_days", sa.Integer(), nullable=True))
    op.add_column(
        "coupon_sets", sa.Column("expiry_warned_at", sa.DateTime(timezone=True), nullable=True)
    )
    for statement in statements(TRIGGERS):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS delivery_finished ON deliveries")
    op.execute("DROP TRIGGER IF EXISTS import_finished ON import_jobs")
    op.execute("DROP FUNCTION IF EXISTS outbox_delivery_finished()")
    op.execute("DROP FUNCTION IF EXISTS outbox_import_finished()")
    op.drop_column("coupon_sets", "expiry_warned_at")
    op.drop_column("coupon_sets", "expiry_warning_days")
    op.drop_constraint(op.f("ck_pools_stock_state"), "pools", type_="check")
    op.drop_column("pools", "stock_state_at")
    op.drop_column("pools", "stock_state")
    op.drop_column("pools", "low_stock_days")
    op.drop_column("pools", "low_stock_threshold")
    op.drop_table("event_cursor")
    op.drop_index("ix_webhook_attempts_created_at", table_name="webhook_attempts")
    op.drop_index("ix_webhook_attempts_endpoint_id_id", table_name="webhook_attempts")
    op.drop_index("ix_webhook_attempts_due", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_endpoints_created_at_id", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
    op.drop_index("ix_event_outbox_created_at", table_name="event_outbox")
    op.drop_index("ix_event_outbox_txid_id", table_name="event_outbox")
    op.drop_table("event_outbox")
    op.drop_index("ix_audit_events_txid_id", table_name="audit_events")
    op.drop_column("audit_events", "txid")

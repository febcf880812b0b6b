"""statistics: counters kept by statement-level triggers (stats_deltas, folded into
pool_stock, delivery_stock and activity_buckets), deliveries.sent_at, the index of the
live holds of unique codes

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of app/sql/stats_*.sql as this revision creates them
# (tests/services/stats/test_sql_functions.py checks the migrated database against the
# live files). Why the counts they keep are exact: docs/architecture.md, "Statistics".
FUNCTIONS = {
    "stats_codes_changed": """
-- stats_codes_changed(): the statement-level trigger of codes (AFTER INSERT, UPDATE,
-- DELETE, each with its transition table). It appends the statement's net change per
-- (set, pool, delivery id) to stats_deltas: one INSERT per statement, grouped, so a
-- batch claim of 50 codes writes one row, an import of a million codes a handful. Every
-- writer appends rows of its own; none updates a row another writer may update, so
-- claims never queue on a counter. The row commits (or rolls back) with the change it
-- counts. Codes count towards a delivery id only while assigned or redeemed. Events:
-- assigned (assigned_at set anew), redeemed (status becomes 'redeemed'), rolled back
-- (status leaves 'redeemed'), imported (a row inserted).
--
-- The live definition; migration 0009 keeps a frozen copy and a test compares them
-- (tests/services/stats/test_sql_functions.py). Why the counts are exact:
-- docs/architecture.md, "Statistics".
CREATE OR REPLACE FUNCTION stats_codes_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO stats_deltas (set_id, pool_id, delivery_id, bucket, available, assigned,
                                  redeemed, void, delivered, n_assigned, n_redeemed,
                                  n_rolled_back)
        SELECT g.* FROM (
            SELECT s.set_id, s.pool_id, s.delivery_id,
                   date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'),
                   coalesce(sum(s.sign) FILTER (WHERE s.status = 'available'), 0) AS available,
                   coalesce(sum(s.sign) FILTER (WHERE s.status = 'assigned'), 0) AS assigned,
                   coalesce(sum(s.sign) FILTER (WHERE s.status = 'redeemed'), 0) AS redeemed,
                   coalesce(sum(s.sign) FILTER (WHERE s.status = 'void'), 0) AS void,
                   coalesce(sum(s.sign) FILTER (WHERE s.delivery_id IS NOT NULL), 0) AS delivered,
                   sum(s.assigned) AS n_assigned, sum(s.redeemed) AS n_redeemed,
                   sum(s.rolled_back) AS n_rolled_back
            FROM old_rows o
            JOIN new_rows n ON n.id = o.id
            CROSS JOIN LATERAL (VALUES
                (o.set_id, o.pool_id, o.status, -1, 0, 0, 0,
                 CASE WHEN o.status IN ('assigned', 'redeemed') THEN o.delivery_id END),
                (n.set_id, n.pool_id, n.status, 1,
                 (n.assigned_at IS NOT NULL
                  AND n.assigned_at IS DISTINCT FROM o.assigned_at)::int,
                 (n.status = 'redeemed' AND o.status <> 'redeemed')::int,
                 (o.status = 'redeemed' AND n.status <> 'redeemed')::int,
                 CASE WHEN n.status IN ('assigned', 'redeemed') THEN n.delivery_id END)
            ) AS s(set_id, pool_id, status, sign, assigned, redeemed, rolled_back, delivery_id)
            WHERE o.status <> n.status OR o.pool_id <> n.pool_id OR o.set_id <> n.set_id
               OR o.delivery_id IS DISTINCT FROM n.delivery_id
               OR o.assigned_at IS DISTINCT FROM n.assigned_at
            GROUP BY s.set_id, s.pool_id, s.delivery_id
        ) AS g
        -- A group whose changes cancel out (say assigned_at written again) adds no row.
        WHERE (g.available, g.assigned, g.redeemed, g.void, g.delivered, g.n_assigned,
               g.n_redeemed, g.n_rolled_back) <> (0, 0, 0, 0, 0, 0, 0, 0);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO stats_deltas (set_id, pool_id, delivery_id, bucket, available, assigned,
                                  redeemed, void, delivered, n_assigned, n_redeemed,
                                  n_imported)
        SELECT n.set_id, n.pool_id, n.delivery_id,
               date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'),
               count(*) FILTER (WHERE n.status = 'available'),
               count(*) FILTER (WHERE n.status = 'assigned'),
               count(*) FILTER (WHERE n.status = 'redeemed'),
               count(*) FILTER (WHERE n.status = 'void'),
               count(*) FILTER (WHERE n.delivery_id IS NOT NULL),
               count(*) FILTER (WHERE n.assigned_at IS NOT NULL),
               count(*) FILTER (WHERE n.status = 'redeemed'),
               count(*)
        FROM (
            SELECT r.set_id, r.pool_id, r.status, r.assigned_at,
                   CASE WHEN r.status IN ('assigned', 'redeemed') THEN r.delivery_id END
            FROM new_rows r
        ) AS n(set_id, pool_id, status, assigned_at, delivery_id)
        GROUP BY n.set_id, n.pool_id, n.delivery_id;
    ELSE
        INSERT INTO stats_deltas (set_id, pool_id, delivery_id, bucket, available, assigned,
                                  redeemed, void, delivered)
        SELECT o.set_id, o.pool_id, o.delivery_id,
               date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'),
               -count(*) FILTER (WHERE o.status = 'available'),
               -count(*) FILTER (WHERE o.status = 'assigned'),
               -count(*) FILTER (WHERE o.status = 'redeemed'),
               -count(*) FILTER (WHERE o.status = 'void'),
               -count(*) FILTER (WHERE o.delivery_id IS NOT NULL)
        FROM (
            SELECT r.set_id, r.pool_id, r.status,
                   CASE WHEN r.status IN ('assigned', 'redeemed') THEN r.delivery_id END
            FROM old_rows r
        ) AS o(set_id, pool_id, status, delivery_id)
        GROUP BY o.set_id, o.pool_id, o.delivery_id;
    END IF;
    RETURN NULL;
END $$;
""",
    "stats_shared_assignments_changed": """
-- stats_shared_assignments_changed(): the statement-level trigger of shared_assignments
-- (AFTER INSERT, DELETE, each with its transition table). A shared set has no code rows:
-- its recipients (first assignments, not `additional` ones) are its `assigned` count,
-- and every assignment is an `assigned` event. One row per set and statement is
-- appended to stats_deltas, under the pool '00000000-0000-0000-0000-000000000000'
-- (app/models/stats.py, WHOLE_SET). Live definition; migration 0009 keeps a frozen copy.
CREATE OR REPLACE FUNCTION stats_shared_assignments_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO stats_deltas (set_id, pool_id, bucket, assigned, n_assigned)
        SELECT n.set_id, '00000000-0000-0000-0000-000000000000'::uuid,
               date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'),
               count(*) FILTER (WHERE NOT n.additional), count(*)
        FROM new_rows n
        GROUP BY n.set_id;
    ELSE
        INSERT INTO stats_deltas (set_id, pool_id, bucket, assigned)
        SELECT o.set_id, '00000000-0000-0000-0000-000000000000'::uuid,
               date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'),
               -count(*) FILTER (WHERE NOT o.additional)
        FROM old_rows o
        GROUP BY o.set_id;
    END IF;
    RETURN NULL;
END $$;
""",
    "stats_redemptions_changed": """
-- stats_redemptions_changed(): the statement-level trigger of redemptions (AFTER
-- INSERT, UPDATE, each with its transition table), for the timelines of shared sets: a
-- use of a shared code changes no code row, so its events are read here (a unique
-- code's are counted from its row, by stats_codes_changed()). Redeemed: inserted as
-- 'redeemed', or a hold confirmed; rolled back: 'redeemed' becomes 'rolled_back'. One
-- row per set and statement, only when something happened. Live definition; migration
-- 0009 keeps a frozen copy.
CREATE OR REPLACE FUNCTION stats_redemptions_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO stats_deltas (set_id, pool_id, bucket, n_redeemed)
        SELECT n.set_id, '00000000-0000-0000-0000-000000000000'::uuid,
               date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'), count(*)
        FROM new_rows n
        WHERE n.code_id IS NULL AND n.status = 'redeemed'
        GROUP BY n.set_id;
    ELSE
        INSERT INTO stats_deltas (set_id, pool_id, bucket, n_redeemed, n_rolled_back)
        SELECT n.set_id, '00000000-0000-0000-0000-000000000000'::uuid,
               date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'),
               count(*) FILTER (WHERE n.status = 'redeemed'),
               count(*) FILTER (WHERE n.status = 'rolled_back')
        FROM old_rows o
        JOIN new_rows n ON n.id = o.id
        WHERE n.code_id IS NULL AND n.status <> o.status
          AND (n.status = 'redeemed' OR (o.status = 'redeemed' AND n.status = 'rolled_back'))
        GROUP BY n.set_id;
    END IF;
    RETURN NULL;
END $$;
""",
}

# (table, trigger, event, transition tables): one statement-level trigger per event,
# as PostgreSQL allows transition tables only on single-event triggers.
TRIGGERS = (
    ("codes", "stats_codes_changed", "INSERT", "NEW TABLE AS new_rows"),
    ("codes", "stats_codes_changed", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ("codes", "stats_codes_changed", "DELETE", "OLD TABLE AS old_rows"),
    ("shared_assignments", "stats_shared_assignments_changed", "INSERT", "NEW TABLE AS new_rows"),
    ("shared_assignments", "stats_shared_assignments_changed", "DELETE", "OLD TABLE AS old_rows"),
    ("redemptions", "stats_redemptions_changed", "INSERT", "NEW TABLE AS new_rows"),
    (
        "redemptions",
        "stats_redemptions_changed",
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    ),
)


# The counters start from the rows as they are (instances of the previous version must
# be stopped: they would not be counted while this runs). The history before this
# revision is read from what the rows still say: when each code was created, last
# assigned and redeemed, when each shared assignment and use was made; rollbacks
# before it are not known.
BACKFILL = (
    """
    INSERT INTO pool_stock (set_id, pool_id, available, assigned, redeemed, void)
    SELECT set_id, pool_id, count(*) FILTER (WHERE status = 'available'),
           count(*) FILTER (WHERE status = 'assigned'),
           count(*) FILTER (WHERE status = 'redeemed'), count(*) FILTER (WHERE status = 'void')
    FROM codes GROUP BY set_id, pool_id
    """,
    """
    INSERT INTO pool_stock (set_id, pool_id, assigned)
    SELECT set_id, '00000000-0000-0000-0000-000000000000'::uuid,
           count(*) FILTER (WHERE NOT additional)
    FROM shared_assignments GROUP BY set_id
    """,
    """
    INSERT INTO delivery_stock (set_id, pool_id, delivery_id, codes)
    SELECT set_id, pool_id, delivery_id, count(*) FROM codes
    WHERE status IN ('assigned', 'redeemed') AND delivery_id IS NOT NULL
    GROUP BY set_id, pool_id, delivery_id
    """,
    """
    INSERT INTO activity_buckets (set_id, pool_id, bucket, assigned, redeemed, imported)
    SELECT set_id, pool_id, date_bin('15 minutes', at, TIMESTAMPTZ '2000-01-01 00:00+00'),
           sum(assigned), sum(redeemed), sum(imported)
    FROM (
        SELECT set_id, pool_id, created_at AS at, 0 AS assigned, 0 AS redeemed, 1 AS imported
        FROM codes
        UNION ALL
        SELECT set_id, pool_id, assigned_at, 1, 0, 0 FROM codes WHERE assigned_at IS NOT NULL
        UNION ALL
        SELECT set_id, pool_id, redeemed_at, 0, 1, 0
        FROM codes WHERE status = 'redeemed' AND redeemed_at IS NOT NULL
        UNION ALL
        SELECT set_id, '00000000-0000-0000-0000-000000000000'::uuid, assigned_at, 1, 0, 0
        FROM shared_assignments
        UNION ALL
        SELECT set_id, '00000000-0000-0000-0000-000000000000'::uuid, redeemed_at, 0, 1, 0
        FROM redemptions WHERE code_id IS NULL AND status = 'redeemed'
    ) AS events
    GROUP BY 1, 2, 3
    """,
)


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "stats_deltas",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("pool_id", sa.Uuid(), nullable=False),
        sa.Column("delivery_id", sa.String(), nullable=True),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        *(
            _counter(name)
            for name in (
                "available",
                "assigned",
                "redeemed",
                "void",
                "delivered",
                "n_assigned",
                "n_redeemed",
                "n_rolled_back",
                "n_imported",
            )
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stats_deltas")),
        # A queue: rows live about a second, so vacuum it after every 1,000 dead ones.
        postgresql_with={
            "autovacuum_vacuum_scale_factor": "0",
            "autovacuum_vacuum_threshold": "1000",
            "autovacuum_vacuum_insert_scale_factor": "0",
            "autovacuum_vacuum_insert_threshold": "10000",
        },
    )
    op.create_index("ix_stats_deltas_set_id", "stats_deltas", ["set_id"], unique=False)
    op.create_table(
        "pool_stock",
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("pool_id", sa.Uuid(), nullable=False),
        *(_counter(name) for name in ("available", "assigned", "redeemed", "void")),
        sa.ForeignKeyConstraint(
            ["set_id"],
            ["coupon_sets.id"],
            name=op.f("fk_pool_stock_set_id_coupon_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("set_id", "pool_id", name=op.f("pk_pool_stock")),
    )
    op.create_table(
        "delivery_stock",
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("pool_id", sa.Uuid(), nullable=False),
        sa.Column("delivery_id", sa.String(), nullable=False),
        _counter("codes"),
        sa.ForeignKeyConstraint(
            ["set_id"],
            ["coupon_sets.id"],
            name=op.f("fk_delivery_stock_set_id_coupon_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("set_id", "delivery_id", "pool_id", name=op.f("pk_delivery_stock")),
    )
    op.create_table(
        "activity_buckets",
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("pool_id", sa.Uuid(), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        *(_counter(name) for name in ("assigned", "redeemed", "rolled_back", "imported")),
        sa.ForeignKeyConstraint(
            ["set_id"],
            ["coupon_sets.id"],
            name=op.f("fk_activity_buckets_set_id_coupon_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("set_id", "pool_id", "bucket", name=op.f("pk_activity_buckets")),
    )
    op.create_index(
        "ix_activity_buckets_set_id_bucket",
        "activity_buckets",
        ["set_id", "bucket"],
        unique=False,
    )
    op.add_column("deliveries", sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_redemptions_unique_holds",
        "redemptions",
        ["set_id", "hold_expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'held' AND code_id IS NOT NULL"),
    )
    for definition in FUNCTIONS.values():
        op.execute(definition)
    for table, function, event, transitions in TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {function}_{event.lower()} AFTER {event} ON {table} "
            f"REFERENCING {transitions} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
    for statement in BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    for table, function, event, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER {function}_{event.lower()} ON {table}")
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION {function}()")
    op.drop_index(
        "ix_redemptions_unique_holds",
        table_name="redemptions",
        postgresql_where=sa.text("status = 'held' AND code_id IS NOT NULL"),
    )
    op.drop_column("deliveries", "sent_at")
    op.drop_index("ix_activity_buckets_set_id_bucket", table_name="activity_buckets")
    op.drop_table("activity_buckets")
    op.drop_table("delivery_stock")
    op.drop_table("pool_stock")
    op.drop_index("ix_stats_deltas_set_id", table_name="stats_deltas")
    op.drop_table("stats_deltas")

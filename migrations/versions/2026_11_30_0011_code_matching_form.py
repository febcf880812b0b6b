"""Codes compare in a Unicode-aware form: NFKC, case-folded, without separators and
default-ignorable characters (issue 11 item 7); a running confirm's heartbeat,
``deliveries.heartbeat_at`` (item 6).

Revision ID: 0011
Revises: 0010

Every code of a set that is not `exact` gets its `lookup` recomputed, and so does every
shared code's `shared_lookup`. The new forms are computed in Python, 10,000 codes per
batch (SQL's lower() and normalize() are not Python's casefold), into a temporary table;
the codes are then updated by one statement, with the unique index on (set, lookup)
rebuilt after it, so an intermediate state never trips it.

Codes that the new form makes the same (`KIT` and its fullwidth twin in one set), and codes that
show nothing once it ignores what it ignores (a code of only `\\u200b`), cannot all keep
a matching form. Per set and form one code keeps it: the most advanced (redeemed, then
assigned, then available, then void), then the oldest. Each other one keeps its row and
its history, but its lookup becomes `<form> #<id>`, which no request can match (a form
never holds white space), and if it is still available it is voided, so it is never
handed out to someone who could not redeem it; each such void is an audit row. The
migration logs how many codes it changed, marked and voided.

Exact sets are untouched: their codes keep their lookup (the code as given), including
any invisible characters they already hold; new ones are refused.
"""

import logging
import re
import unicodedata
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_log = logging.getLogger("alembic.runtime.migration")
_BATCH = 10_000

# Frozen copy of app/models/code.py normalise() as of this revision.
_IGNORABLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
_DASHES = (
    "\\-\u058a\u05be\u1400\u1806\u2010-\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40\u2e5d"
    "\u301c\u3030\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d\U00010ead"
)
_ASCII_SEPARATORS = re.compile(r"[\s\-_.]+")
_DROPPED = re.compile(f"[\\s_.{_DASHES}{_IGNORABLE}]+")
_INVISIBLE = re.compile(f"[{_IGNORABLE}]")


def _new_form(code: str) -> str:
    if code.isascii():
        return _ASCII_SEPARATORS.sub("", code).lower()
    folded = unicodedata.normalize("NFKC", _INVISIBLE.sub("", code)).casefold()
    form = unicodedata.normalize("NFKC", _DROPPED.sub("", folded))
    # Nothing visible left: no form (the code is marked below).
    return form if any(unicodedata.category(ch)[0] in "LNPS" for ch in form) else ""


def _old_form(code: str) -> str:
    """The form of revisions up to 0008."""
    return re.sub(r"[\s\-_.]+", "", code).upper()


_CODES_BATCH = sa.text(
    """
    SELECT c.id, c.set_id, c.code FROM codes c JOIN coupon_sets s ON s.id = c.set_id
    WHERE s.match_mode <> 'exact' AND c.id > :last ORDER BY c.id LIMIT :n
    """
)


def _fill(form: Callable[[str], str]) -> int:
    """new_lookups ← every non-exact code's form, in batches; the number of codes."""
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "CREATE TEMPORARY TABLE new_lookups (id bigint PRIMARY KEY, set_id uuid NOT NULL, "
            "lookup text NOT NULL, marked boolean NOT NULL DEFAULT false)"
        )
    )
    last, total = 0, 0
    while rows := bind.execute(_CODES_BATCH, {"last": last, "n": _BATCH}).all():
        bind.execute(
            sa.text(
                "INSERT INTO new_lookups (id, set_id, lookup) SELECT * FROM unnest("
                "CAST(:ids AS bigint[]), CAST(:sets AS uuid[]), CAST(:forms AS text[]))"
            ),
            {
                "ids": [row.id for row in rows],
                "sets": [row.set_id for row in rows],
                "forms": [form(row.code) for row in rows],
            },
        )
        last, total = rows[-1].id, total + len(rows)
    bind.execute(sa.text("ANALYZE new_lookups"))
    return total


def _apply() -> int:
    """codes.lookup ← new_lookups where it differs, the unique index rebuilt after."""
    op.drop_index("uq_codes_set_id_lookup", table_name="codes")
    changed = (
        op.get_bind()
        .execute(
            sa.text(
                "UPDATE codes c SET lookup = l.lookup FROM new_lookups l "
                "WHERE c.id = l.id AND c.lookup IS DISTINCT FROM l.lookup"
            )
        )
        .rowcount
    )
    op.create_index("uq_codes_set_id_lookup", "codes", ["set_id", "lookup"], unique=True)
    op.get_bind().execute(sa.text("DROP TABLE new_lookups"))
    return int(changed)


def _shared(form: Callable[[str], str]) -> None:
    bind = op.get_bind()
    shared = bind.execute(
        sa.text(
            "SELECT id, shared_code FROM coupon_sets "
            "WHERE shared_code IS NOT NULL AND match_mode <> 'exact'"
        )
    ).all()
    for row in shared:
        bind.execute(
            sa.text("UPDATE coupon_sets SET shared_lookup = :form WHERE id = :id"),
            {"form": form(row.shared_code), "id": row.id},
        )


def upgrade() -> None:
    # The heartbeat of a running confirm (app/services/deliveries/confirm.py).
    op.add_column(
        "deliveries", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True)
    )
    bind = op.get_bind()
    total = _fill(_new_form)
    # One code keeps each (set, form); the others, and codes with no form, are marked.
    marked = bind.execute(
        sa.text(
            """
            WITH ranked AS (
                SELECT l.id, row_number() OVER (
                    PARTITION BY l.set_id, l.lookup
                    ORDER BY CASE c.status WHEN 'redeemed' THEN 0 WHEN 'assigned' THEN 1
                                           WHEN 'available' THEN 2 ELSE 3 END, c.id
                ) AS rank
                FROM new_lookups l JOIN codes c ON c.id = l.id
                WHERE (l.set_id, l.lookup) IN (
                    SELECT set_id, lookup FROM new_lookups GROUP BY 1, 2 HAVING count(*) > 1
                ) OR l.lookup = ''
            )
            UPDATE new_lookups l SET lookup = l.lookup || ' #' || l.id, marked = true
            FROM ranked r WHERE r.id = l.id AND (r.rank > 1 OR l.lookup = '')
            """
        )
    ).rowcount
    voided = bind.execute(
        sa.text(
            """
            WITH voided AS (
                UPDATE codes c SET status = 'void', voided_at = now()
                FROM new_lookups l
                WHERE l.id = c.id AND l.marked AND c.status = 'available'
                RETURNING c.set_id, c.code
            )
            INSERT INTO audit_events (set_id, action, code, details)
            SELECT set_id, 'void', code, jsonb_build_object('reason',
                'migration 0011: another code of the set is the same once compared as '
                'NFKC, case-folded, without separators and invisible characters, or this '
                'code shows nothing then')
            FROM voided
            """
        )
    ).rowcount
    changed = _apply()
    _shared(_new_form)
    _log.info(
        "0011: %d codes of non-exact sets; %d lookups changed; %d marked unmatchable "
        "(same form as another code, or no visible form); %d of them voided",
        total,
        changed,
        marked,
        voided,
    )


def downgrade() -> None:
    op.drop_column("deliveries", "heartbeat_at")
    _fill(_old_form)
    _apply()
    _shared(_old_form)

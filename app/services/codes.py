"""Codes of a unique set: add a list, generate from a pattern, list, find, void."""

import math
import secrets
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    ARRAY,
    Boolean,
    Uuid,
    any_,
    exists,
    func,
    literal,
    literal_column,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import (
    AlreadyRedeemed,
    CodeSpaceTooSmall,
    NotFound,
    NotReturnable,
    ValidationFailed,
    WrongSetKind,
)
from app.models.api_key import ApiKey
from app.models.audit import AuditAction
from app.models.code import (
    HIDDEN_IN_EXACT,
    UNSTORABLE,
    Code,
    CodeStatus,
    hides_characters,
    normalise,
    refusal,
)
from app.models.coupon_set import CouponSet, MatchMode, SetKind
from app.models.pool import Pool
from app.models.redemption import Redemption, RedemptionStatus
from app.pagination import PageParams, decode_id_cursor
from app.schemas.code import CodesAdd, CodesAdded, CodesGenerate, CodesGenerated, RejectedCode
from app.services import audit, pools
from app.services.stats.service import pool_counts

_BATCH = 10_000
_CHARSETS = {
    "alphanumeric": string.ascii_uppercase + string.digits,
    "letters": string.ascii_uppercase,
    "digits": string.digits,
    # No 0/O, 1/I/L: codes people read and type.
    "unambiguous": "ABCDEFGHJKMNPQRSTUVWXYZ23456789",
}

# Inserts a batch; a code whose lookup the set holds already is skipped and left out of
# RETURNING, so duplicates are found by the unique index, race-free.
_INSERT_CODES = text(
    """
    INSERT INTO codes (set_id, pool_id, code, lookup, metadata)
    SELECT :set_id, :pool_id, c, l, NULL
    FROM unnest(CAST(:codes AS text[]), CAST(:lookups AS text[])) AS t(c, l)
    ON CONFLICT (set_id, lookup) DO NOTHING
    RETURNING lookup
    """
)


def ensure_unique_kind(coupon_set: CouponSet) -> None:
    if coupon_set.kind != SetKind.unique:
        raise WrongSetKind(
            f"The set '{coupon_set.key}' is shared: its one code is `shared_code`. "
            "Codes are added to unique sets."
        )


async def _insert(
    session: AsyncSession,
    *,
    coupon_set: CouponSet,
    pool: Pool,
    codes: Sequence[str],
    lookups: Sequence[str],
) -> set[str]:
    result = await session.execute(
        _INSERT_CODES,
        {
            "set_id": coupon_set.id,
            "pool_id": pool.id,
            "codes": list(codes),
            "lookups": list(lookups),
        },
    )
    return set(result.scalars())


async def add_codes(
    session: AsyncSession,
    *,
    coupon_set: CouponSet,
    data: CodesAdd,
    actor: ApiKey,
    idempotency_key: str | None,
) -> CodesAdded:
    ensure_unique_kind(coupon_set)
    pool = await pools.get_pool(session, coupon_set=coupon_set, ref=data.pool)
    exact = coupon_set.match_mode == MatchMode.exact
    rejected: list[RejectedCode] = []
    wanted: dict[str, str] = {}  # lookup → code, first spelling wins
    repeated: list[str] = []
    for index, raw in enumerate(data.codes):
        code = raw.strip()
        lookup = normalise(code, exact=exact)
        reason = refusal(code, lookup, exact=exact)
        if reason:
            shown = UNSTORABLE.sub("\ufffd", raw[:100])  # the echo must encode as JSON
            rejected.append(RejectedCode(index=index, code=shown, reason=reason))
        elif lookup in wanted:
            repeated.append(code)
        else:
            wanted[lookup] = code
    inserted = await _insert(
        session,
        coupon_set=coupon_set,
        pool=pool,
        codes=list(wanted.values()),
        lookups=list(wanted),
    )
    in_set = [code for lookup, code in wanted.items() if lookup not in inserted]
    duplicates = repeated + in_set
    await audit.record(
        session,
        action=AuditAction.add_codes,
        actor=actor,
        set_id=coupon_set.id,
        idempotency_key=idempotency_key,
        details={
            "pool": pool.name,
            "accepted": len(inserted),
            "duplicates": len(duplicates),
            "rejected": len(rejected),
        },
    )
    return CodesAdded(
        accepted=len(inserted),
        duplicates=len(duplicates),
        rejected=rejected,
        duplicate_codes=duplicates[:100],
    )


@dataclass(frozen=True)
class _Shape:
    """A code shape: fixed text and, at each random position, its alphabet."""

    parts: list[str | None]  # literal text, or None for a random position
    alphabets: list[str]

    @property
    def space(self) -> int:
        return math.prod(len(alphabet) for alphabet in self.alphabets)

    def make(self) -> str:
        # One draw below the size of the space, spelled out in mixed radix: uniform and
        # unbiased, and one call to the CSPRNG per code.
        value = secrets.randbelow(self.space)
        out: list[str] = []
        alphabets = iter(self.alphabets)
        for part in self.parts:
            if part is not None:
                out.append(part)
                continue
            alphabet = next(alphabets)
            value, digit = divmod(value, len(alphabet))
            out.append(alphabet[digit])
        return "".join(out)


def _shape(data: CodesGenerate) -> _Shape:
    parts: list[str | None] = [data.prefix] if data.prefix else []
    alphabets: list[str] = []
    if data.pattern is not None:
        for ch in data.pattern:
            if ch in "#?":
                parts.append(None)
                alphabets.append(string.digits if ch == "#" else string.ascii_uppercase)
            else:
                parts.append(ch)
    else:
        alphabet = _CHARSETS.get(data.charset, "".join(dict.fromkeys(data.charset)))
        if len(alphabet) < 2:
            raise CodeSpaceTooSmall("A charset needs at least two distinct characters.")
        assert data.length is not None
        parts += [None] * data.length
        alphabets += [alphabet] * data.length
    if data.suffix:
        parts.append(data.suffix)
    return _Shape(parts=parts, alphabets=alphabets)


def _check_shape(shape: _Shape, *, exact: bool) -> None:
    """Refuses a shape whose codes could not be added one by one: an exact set's codes
    must not hide characters anywhere (literals or charset), and a code must show
    something once matching ignores separators and invisible characters."""
    if exact and hides_characters("".join(part or "" for part in shape.parts + shape.alphabets)):
        raise ValidationFailed(
            f"The pattern, prefix, suffix or charset makes codes that {HIDDEN_IN_EXACT}."
        )
    sample = shape.make()[:100]  # the length is not this check's business
    reason = refusal(sample, normalise(sample, exact=exact), exact=exact)
    if reason is not None:
        raise ValidationFailed(f"The pattern, prefix, suffix or charset makes codes that {reason}.")


async def generate_codes(
    session: AsyncSession,
    *,
    coupon_set: CouponSet,
    data: CodesGenerate,
    actor: ApiKey,
    idempotency_key: str | None,
) -> CodesGenerated:
    ensure_unique_kind(coupon_set)
    pool = await pools.get_pool(session, coupon_set=coupon_set, ref=data.pool)
    shape = _shape(data)
    taken = await session.scalar(select(func.count()).where(Code.set_id == coupon_set.id)) or 0
    # Feasibility first: the codes must be a small part of the space, both so that random
    # draws rarely collide and so that a valid code cannot be guessed.
    needed = (taken + data.count) * data.min_space_ratio
    if shape.space < needed:
        raise CodeSpaceTooSmall(
            f"The shape has {shape.space:,} possible codes; {data.count:,} new codes beside "
            f"{taken:,} existing ones need {needed:,} (min_space_ratio "
            f"{data.min_space_ratio:,}). Use a longer pattern or a larger charset.",
            code_space=shape.space,
            needed=needed,
        )
    exact = coupon_set.match_mode == MatchMode.exact
    _check_shape(shape, exact=exact)
    made = 0
    sample: list[str] = []
    attempts = 0
    while made < data.count:
        attempts += 1
        if attempts > 4 * (data.count // _BATCH + 1) + 10:
            raise CodeSpaceTooSmall("Too many collisions; the code space is too crowded.")
        batch: dict[str, str] = {}
        for _ in range(min(_BATCH, data.count - made)):
            code = shape.make()
            batch[normalise(code, exact=exact)] = code
        inserted = await _insert(
            session,
            coupon_set=coupon_set,
            pool=pool,
            codes=list(batch.values()),
            lookups=list(batch),
        )
        made += len(inserted)
        if len(sample) < 10:
            sample += [batch[lookup] for lookup in list(inserted)[: 10 - len(sample)]]
    await audit.record(
        session,
        action=AuditAction.generate_codes,
        actor=actor,
        set_id=coupon_set.id,
        idempotency_key=idempotency_key,
        details={"pool": pool.name, "count": made, "code_space": shape.space},
    )
    return CodesGenerated(generated=made, pool=pool.name, sample=sample, code_space=shape.space)


# A status or pool filter reads one index range per (pool, status) in id order, merged
# (MergeAppend); past this many ranges the plain scan of the set's codes is used.
MERGED_RANGES = 64


async def list_codes(
    session: AsyncSession,
    *,
    coupon_set: CouponSet,
    status: CodeStatus | None,
    pool: str | None,
    recipient_id: str | None,
    params: PageParams,
) -> list[tuple[Code, str]]:
    """Codes with their pool's name, in the order they were added. Every filter and
    combination reads an index range (docs/insight.md): none, ix_codes_set_id_id; a
    recipient, ix_codes_recipient_id; a status or pool, one range per (pool, status) of
    ix_codes_free (free codes) or ix_codes_pool_id_status_id (the others), merged in id
    order. The status is written as a literal there: a partial index serves only a
    query whose own text implies its predicate, which a bound parameter (or a generic
    plan) does not."""
    ensure_unique_kind(coupon_set)
    after = decode_id_cursor(params.cursor) if params.cursor is not None else 0
    pool_ids: list[uuid.UUID] = []
    if pool is not None:
        pool_ids = [(await pools.get_pool(session, coupon_set=coupon_set, ref=pool)).id]
    stmt = (
        select(Code, Pool.name)
        .join(Pool, Pool.id == Code.pool_id)
        .where(Code.set_id == coupon_set.id, Code.id > after)
    )
    if pool_ids:
        stmt = stmt.where(Code.pool_id == pool_ids[0])
    if status is not None:
        stmt = stmt.where(Code.status == status.value)
    if recipient_id is not None:
        stmt = stmt.where(Code.recipient_id == recipient_id)
    elif status is not None or pool_ids:
        if not pool_ids:
            pool_ids = list(
                (await session.scalars(select(Pool.id).where(Pool.set_id == coupon_set.id))).all()
            )
        statuses = [status] if status is not None else list(CodeStatus)
        if len(pool_ids) * len(statuses) <= MERGED_RANGES:
            ranges = [
                select(Code.id)
                .where(
                    Code.pool_id == any_(literal([pool_id], ARRAY(Uuid))),
                    literal_column(f"codes.status = '{wanted.value}'", Boolean),
                    Code.id > after,
                )
                .order_by(Code.pool_id, Code.id)
                .limit(params.limit + 1)
                .subquery()
                .select()
                for pool_id in pool_ids
                for wanted in statuses
            ]
            ids = (
                union_all(*ranges).subquery().select().order_by(text("id")).limit(params.limit + 1)
            )
            stmt = stmt.where(Code.id.in_(ids))
    stmt = stmt.order_by(Code.id).limit(params.limit + 1)
    return [(code, name) for code, name in (await session.execute(stmt)).all()]


async def get_code(
    session: AsyncSession, *, coupon_set: CouponSet, code: str, for_update: bool = False
) -> tuple[Code, str]:
    ensure_unique_kind(coupon_set)
    lookup = normalise(code.strip(), exact=coupon_set.match_mode == MatchMode.exact)
    stmt = (
        select(Code, Pool.name)
        .join(Pool, Pool.id == Code.pool_id)
        .where(Code.set_id == coupon_set.id, Code.lookup == lookup)
    )
    if for_update:
        stmt = stmt.with_for_update(of=Code)
    row = (await session.execute(stmt)).first()
    if row is None:
        raise NotFound(f"The set '{coupon_set.key}' has no code '{code}'.")
    return row[0], row[1]


async def void_code(
    session: AsyncSession,
    *,
    coupon_set: CouponSet,
    code: str,
    actor: ApiKey,
    idempotency_key: str | None,
) -> tuple[Code, str]:
    """Withdraw a code that was not redeemed. Voiding twice changes nothing."""
    row, pool_name = await get_code(session, coupon_set=coupon_set, code=code, for_update=True)
    if row.status == CodeStatus.redeemed:
        raise AlreadyRedeemed(
            f"The code '{row.code}' was redeemed; roll the redemption back first."
        )
    if row.status != CodeStatus.void:
        row.status = CodeStatus.void.value
        row.voided_at = func.now()
        await session.flush()
        await session.refresh(row)
        await audit.record(
            session,
            action=AuditAction.void,
            actor=actor,
            set_id=coupon_set.id,
            code=row.code,
            recipient_id=row.recipient_id,
            idempotency_key=idempotency_key,
        )
    return row, pool_name


async def return_code(
    session: AsyncSession,
    *,
    coupon_set: CouponSet,
    code: str,
    reason: str | None,
    actor: ApiKey,
    idempotency_key: str | None,
) -> tuple[Code, str]:
    """Give an assigned code back to its pool (its message bounced, say): it becomes
    available again for anyone. Only an assigned code that was not redeemed and is not
    held at a checkout; the code's row lock orders this against a redemption of it."""
    row, pool_name = await get_code(session, coupon_set=coupon_set, code=code, for_update=True)
    if row.status != CodeStatus.assigned:
        raise NotReturnable(
            f"The code '{row.code}' is {row.status}: only an assigned code can be returned."
        )
    held = await session.scalar(
        select(
            exists().where(
                Redemption.code_id == row.id,
                Redemption.status == RedemptionStatus.held.value,
                Redemption.hold_expires_at > func.now(),
            )
        )
    )
    if held:
        raise NotReturnable(
            f"The code '{row.code}' is held at a checkout; release or confirm the hold first."
        )
    recipient_id, delivery_id = row.recipient_id, row.delivery_id
    row.status = CodeStatus.available.value
    row.recipient_id = row.address = row.channel = row.delivery_id = None
    row.assigned_at = None
    await session.flush()
    await session.refresh(row)
    await audit.record(
        session,
        action=AuditAction.return_,
        actor=actor,
        set_id=coupon_set.id,
        code=row.code,
        recipient_id=recipient_id,
        idempotency_key=idempotency_key,
        details={"reason": reason, "delivery_id": delivery_id, "pool": pool_name},
    )
    return row, pool_name


async def pool_stock(
    session: AsyncSession, *, set_id: uuid.UUID, pool_id: uuid.UUID | None = None
) -> dict[uuid.UUID, dict[str, int]]:
    """Codes per pool and status: {pool_id: {"available": n, ..., "total": n}}, for every
    pool of the set or only ``pool_id``, from the statistics' counters (exact, and
    without counting the codes: app/services/stats)."""
    return {
        row.pool_id: {
            "available": row.available,
            "assigned": row.assigned,
            "redeemed": row.redeemed,
            "void": row.void,
            "total": row.total,
        }
        for row in await pool_counts(session, set_id=set_id, pool_id=pool_id)
    }

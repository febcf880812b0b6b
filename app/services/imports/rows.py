"""The rows of a file as an import keeps them: each row a reader parsed (readers.py)
becomes a ``Record``, the code or redemption to bring in, or the reason it is refused."""

import json
import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from pydantic import ValidationError

from app.errors import NotFound
from app.models.code import UNSTORABLE, normalise, refusal
from app.models.coupon_set import CouponSet, MatchMode
from app.models.import_job import ImportFormat, ImportKind
from app.schemas.redemption import RedemptionRequest
from app.services.imports.options import ImportOptions, invalid
from app.services.imports.readers import CsvReader, Reader, Row, TextReader, XmlReader


class Record(NamedTuple):
    """One row of the file, in the first columns of the staging table (sql.CREATE_STAGING)."""

    n: int  # rank in the file, from 1: the first occurrence of a repeated code wins
    line: int  # line of the file, for the report
    code: str | None  # the code (for a refused row: as the report may echo it)
    lookup: str | None  # the code as the set compares codes
    pool_id: uuid.UUID | None
    metadata: str | None  # JSON: a code's other cells, or the redemption request
    reason: str | None  # why the row is refused; None: the row is brought in


# Builds a Record without the Python-level __new__ of a NamedTuple, which costs a few
# per cent of a file's parsing on the line every accepted row takes.
_record = tuple.__new__


def refused(n: int, line: int, code: str | None, reason: str) -> Record:
    return Record(n, line, code, None, None, None, reason)


# What jsonb cannot hold (line breaks and tabs in metadata are fine).
_NOT_JSONB = re.compile("[\x00\ud800-\udfff]")


def shown(text: str | None) -> str | None:
    """A cell as the report may echo it: bounded, and encodable as JSON and text."""
    return None if text is None else UNSTORABLE.sub("\ufffd", text[:100])


def reader_for(options: ImportOptions) -> Reader:
    if options.format is ImportFormat.xml:
        return XmlReader()
    if options.format is ImportFormat.text:
        return TextReader(options.encoding)
    redemptions = options.kind is ImportKind.redemptions
    return CsvReader(
        encoding=options.encoding,
        delimiter=options.delimiter,
        quotechar=options.quotechar,
        header=bool(options.header) and not redemptions,
        ragged=redemptions,
    )


class CodeRows:
    """Rows of a file of codes: the code, its pool and metadata, checked as ``POST
    .../codes`` checks a code."""

    def __init__(
        self, options: ImportOptions, coupon_set: CouponSet, pools: dict[str, uuid.UUID]
    ) -> None:
        self.options = options
        self.exact = coupon_set.match_mode == MatchMode.exact
        self.pools = pools
        default = pools.get(options.pool.lower())
        if default is None:
            raise NotFound(f"The set '{coupon_set.key}' has no pool '{options.pool}'.")
        self.default_pool = default
        self._columns: list[str] | None = None
        self._code_at = 0
        self._pool_at: int | None = None
        self._meta_at: list[int] = []

    def _column(self, columns: list[str], ref: str, field: str) -> int:
        if ref.isdigit() and 1 <= int(ref) <= len(columns):
            return int(ref) - 1
        for candidate in (ref, ref.lower()):
            for at, column in enumerate(columns):
                if column == candidate or column.lower() == candidate:
                    return at
        raise invalid(field, f"the file has no column '{ref}' (columns: {', '.join(columns)})")

    def map_columns(self, columns: list[str]) -> None:
        """Chooses the code and pool columns once the first row (or header) is known."""
        self._columns = columns
        if self.options.code_column and self.options.format is ImportFormat.csv:
            self._code_at = self._column(columns, self.options.code_column, "code_column")
        else:
            self._code_at = columns.index("code") if "code" in columns else 0
        if self.options.pool_column and self.options.format is ImportFormat.csv:
            self._pool_at = self._column(columns, self.options.pool_column, "pool_column")
            if self._pool_at == self._code_at:
                raise invalid("pool_column", "is the code column")
        self._meta_at = [
            at for at in range(len(columns)) if at not in (self._code_at, self._pool_at)
        ]

    def records(self, first: int, parsed: list[Row], columns: list[str] | None) -> list[Record]:
        """The parsed rows as records numbered from ``first``. One loop for a batch, with
        no call per row but the checks: it runs for every row of every file."""
        out: list[Record] = []
        pools, default_pool, exact = self.pools, self.default_pool, self.exact
        metadata: dict[str, str] | None
        for n, row in enumerate(parsed, first):
            if row.reason is not None:
                out.append(refused(n, row.line, None, row.reason))
                continue
            values = row.values
            if row.names is None and columns is not None:  # CSV, text: cells by position
                if self._columns is None:
                    self.map_columns(columns)
                raw = values[self._code_at]
                pool_ref = values[self._pool_at].strip() if self._pool_at is not None else ""
                metadata = (
                    {columns[at]: values[at] for at in self._meta_at if values[at] != ""}
                    if self._meta_at
                    else None
                )
            else:  # XML: each row names its cells
                cells = dict(zip(row.names or [], values, strict=True))
                raw = cells.pop("code", "")
                pool_ref = cells.pop("@pool", "").strip()
                metadata = {key.lstrip("@"): value for key, value in cells.items() if value != ""}
            code = raw.strip()
            pool_id = pools.get(pool_ref.lower()) if pool_ref else default_pool
            lookup = normalise(code, exact=exact)
            reason = refusal(code, lookup, exact=exact)
            if reason is None and pool_id is None:
                reason = f"unknown pool '{shown(pool_ref)}'"
            if (
                reason is None
                and metadata
                and any(_NOT_JSONB.search(k) or _NOT_JSONB.search(v) for k, v in metadata.items())
            ):
                reason = "a metadata column holds NUL characters or undecodable bytes"
            if reason is not None:
                out.append(refused(n, row.line, shown(raw), reason))
                continue
            meta = json.dumps(metadata, ensure_ascii=False) if metadata else None
            out.append(_record(Record, (n, row.line, code, lookup, pool_id, meta, None)))
        return out


_REDEMPTION_COLUMNS = ("code", "redeemed_at", "order_id", "amount")


class RedemptionRows:
    """code, redeemed_at[, order_id, amount]: checked as the API checks a redemption. A
    header (asked for, or guessed from a first cell ``code``) may name them in any order."""

    def __init__(self, coupon_set: CouponSet, options: ImportOptions) -> None:
        self.set_id = str(coupon_set.id)
        self.header = options.header
        self.names: list[str] | None = None
        self._first = True

    def records(self, first: int, parsed: list[Row], columns: list[str] | None) -> list[Record]:
        """The parsed rows as records numbered from ``first`` (a header row is none)."""
        out: list[Record] = []
        for row in parsed:
            record = self._record(first + len(out), row)
            if record is not None:
                out.append(record)
        return out

    def _record(self, n: int, row: Row) -> Record | None:
        if row.reason is not None:
            return refused(n, row.line, None, row.reason)
        values = list(row.values)
        if self._first:
            self._first = False
            first = values[0].strip().lower() if values else ""
            if self.header or (self.header is None and first == "code"):
                self.names = [value.strip().lower() for value in values]
                return None
        if self.names is not None:
            by_name = dict(zip(self.names, values, strict=False))
            values = [by_name.get(name, "") for name in _REDEMPTION_COLUMNS]
        elif len(values) > 4:
            too_many = "expected at most 4 columns: code, redeemed_at, order_id, amount"
            return refused(n, row.line, shown(values[0]), too_many)
        values += [""] * (4 - len(values))
        code, redeemed_at, order_id, amount = (v.strip() for v in values[:4])
        fields: dict[str, Any] = {"code": code, "set": self.set_id}
        if redeemed_at:
            fields["redeemed_at"] = redeemed_at
        if order_id:
            fields["order_id"] = order_id
        reason: str | None = None
        if amount:
            try:
                # Plain notation ("1e2" is 100): the form the request's amount takes.
                fields["amount"] = format(Decimal(amount), "f")
            except InvalidOperation:
                reason = "amount: not a number"
        if reason is None:
            try:
                request = RedemptionRequest.model_validate(fields)
            except ValidationError as exc:
                first_error = exc.errors()[0]
                where = ".".join(str(part) for part in first_error["loc"])
                reason = f"{where}: {first_error['msg']}"
            else:
                metadata = request.model_dump_json(exclude={"set"})
                return Record(n, row.line, request.code, None, None, metadata, None)
        return refused(n, row.line, shown(code), reason)


Rows = CodeRows | RedemptionRows

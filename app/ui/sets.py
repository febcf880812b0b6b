"""The set list and a set's page: pools and stock, the 30-day chart, codes, generate,
import (file or pasted list) with its history, the set's deliveries and export."""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from app import downloads
from app.db import DriverPool, Session
from app.errors import AppError, Forbidden
from app.models.api_key import Scope
from app.models.code import CodeStatus
from app.models.coupon_set import SetKind, SetStatus
from app.models.import_job import ImportKind
from app.pagination import PageParams, encode_cursor, next_id_cursor
from app.schemas.code import CodesGenerate
from app.schemas.delivery import DeliveryCreate
from app.services import codes, coupon_sets, deliveries, exports, imports, pools
from app.services.exports import ExportFormat
from app.ui import charts, data
from app.ui.web import (
    PREFIX,
    TZ_COOKIE,
    FormLogin,
    Login,
    UiRoute,
    csrf_ok,
    done,
    field,
    one_chunk,
    refused,
    render,
    require,
)
from app.uploads import Upload

router = APIRouter(prefix=f"{PREFIX}/sets", include_in_schema=False, route_class=UiRoute)

PAGE = 25


def _errors_of(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()
    )


@router.get("")
async def set_list(
    request: Request,
    session: Session,
    login: Login,
    q: Annotated[str | None, Query(max_length=200)] = None,
    kind: SetKind | Literal[""] | None = None,
    status: SetStatus | Literal[""] | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    require(login, Scope.read)
    params = PageParams(limit=PAGE, cursor=cursor)
    rows = await coupon_sets.list_coupon_sets(
        session, q=q or None, kind=kind or None, status=status or None, params=params
    )
    shown = rows[:PAGE]
    glanced = await data.glances(session, shown)
    stock = data.set_list_stock(shown, glanced)
    stats = await data.set_list_stats(session, login.key, shown, glanced)
    return render(
        request,
        "sets.html",
        login,
        sets=shown,
        stock=stock,
        bars={s.id: charts.stock_bar(stock.get(s.id)) for s in shown},
        stats=stats,
        q=q or "",
        kind=kind.value if isinstance(kind, SetKind) else "",
        status=status.value if isinstance(status, SetStatus) else "",
        next_cursor=encode_cursor(shown[-1]) if len(rows) > PAGE else None,
        kinds=[k.value for k in SetKind],
        statuses=[s.value for s in SetStatus],
    )


@router.get("/{set_id}")
async def set_page(
    request: Request,
    set_id: str,
    session: Session,
    login: Login,
    code_status: CodeStatus | Literal[""] | None = None,
    code_pool: Annotated[str | None, Query(max_length=200)] = None,
    code_recipient: Annotated[str | None, Query(max_length=200)] = None,
    code_cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    require(login, Scope.read)
    coupon_set = await coupon_sets.get_coupon_set(session, set_id)
    unique = coupon_set.kind == SetKind.unique
    pool_rows, stock, code_rows, next_codes, jobs = [], {}, [], None, []
    if unique:
        pool_rows = await pools.list_pools(session, coupon_set=coupon_set)
        stock = await codes.pool_stock(session, set_id=coupon_set.id)
        params = PageParams(limit=PAGE, cursor=code_cursor)
        found = await codes.list_codes(
            session,
            coupon_set=coupon_set,
            status=code_status or None,
            pool=code_pool or None,
            recipient_id=code_recipient or None,
            params=params,
        )
        code_rows = found[:PAGE]
        next_codes = next_id_cursor([c.id for c, _ in found], params)
        jobs = (
            await imports.list_jobs(
                session,
                coupon_set=coupon_set,
                kind=ImportKind.codes,
                params=PageParams(limit=10, cursor=None),
            )
        )[:10]
    sent = await deliveries.list_deliveries(
        session,
        coupon_set_ref=str(coupon_set.id),
        status=None,
        params=PageParams(limit=10, cursor=None),
    )
    total: dict[str, int] = {}
    for counts in stock.values():
        for part, n in counts.items():
            total[part] = total.get(part, 0) + n
    tz = request.cookies.get(TZ_COOKIE) or "UTC"
    days = await data.timeline(session, login.key, coupon_set, days=30, tz=tz)
    return render(
        request,
        "set.html",
        login,
        coupon_set=coupon_set,
        unique=unique,
        pools=pool_rows,
        stock=stock,
        bars={p.id: charts.stock_bar(stock.get(p.id)) for p in pool_rows},
        total_bar=charts.stock_bar(total),
        total=total,
        stats=await data.set_stats(session, login.key, coupon_set),
        chart=None if days is None else charts.day_chart(days),
        tz=tz,
        codes=code_rows,
        next_codes=next_codes,
        code_status=code_status.value if isinstance(code_status, CodeStatus) else "",
        code_pool=code_pool or "",
        code_recipient=code_recipient or "",
        statuses=[s.value for s in CodeStatus],
        jobs=jobs,
        deliveries=sent[:10],
        can_write=login.key.grants(Scope.write),
    )


def _back(set_id: str, anchor: str = "") -> str:
    return f"{PREFIX}/sets/{set_id}{anchor}"


@router.post("/{set_id}/generate")
async def generate(set_id: str, session: Session, posted: FormLogin) -> Response:
    login, form = posted
    require(login, Scope.write)
    coupon_set = await coupon_sets.get_coupon_set(session, set_id)
    pattern, length = field(form, "pattern"), field(form, "length")
    try:
        body = CodesGenerate.model_validate(
            {
                "count": field(form, "count"),
                "pattern": pattern or None,
                "length": None if pattern else (length or None),
                "prefix": field(form, "prefix"),
                "pool": field(form, "pool") or "default",
            }
        )
    except ValidationError as exc:
        return await done(session, login, _back(set_id, "#generate"), _errors_of(exc))
    try:
        async with session.begin_nested():
            made = await codes.generate_codes(
                session, coupon_set=coupon_set, data=body, actor=login.key, idempotency_key=None
            )
    except AppError as exc:
        return await refused(session, login, _back(set_id, "#generate"), exc)
    return await done(
        session,
        login,
        _back(set_id, "#codes"),
        f"Generated {made.generated:,} codes into the pool {made.pool}.",
    )


@router.post("/{set_id}/pools")
async def create_pool(set_id: str, session: Session, posted: FormLogin) -> Response:
    login, form = posted
    require(login, Scope.write)
    coupon_set = await coupon_sets.get_coupon_set(session, set_id)
    name = field(form, "name")
    if not name or len(name) > 200:
        return await done(session, login, _back(set_id, "#pools"), "A pool needs a name.")
    try:
        async with session.begin_nested():
            await pools.create_pool(session, coupon_set=coupon_set, name=name)
    except AppError as exc:
        return await refused(session, login, _back(set_id, "#pools"), exc)
    return await done(session, login, _back(set_id, "#pools"), f"Pool {name} created.")


@router.post("/{set_id}/pools/{pool}/threshold")
async def pool_threshold(set_id: str, pool: str, session: Session, posted: FormLogin) -> Response:
    login, form = posted
    require(login, Scope.write)
    coupon_set = await coupon_sets.get_coupon_set(session, set_id)
    raw = field(form, "threshold")
    if raw and not (raw.isdigit() and len(raw) <= 12):
        return await done(session, login, _back(set_id, "#pools"), "A threshold is a number.")
    try:
        async with session.begin_nested():
            changed = await data.set_pool_threshold(
                session, login.key, coupon_set, pool, int(raw) if raw else None
            )
    except AppError as exc:
        return await refused(session, login, _back(set_id, "#pools"), exc)
    message = f"Threshold of {pool} saved." if changed else "Thresholds are not available yet."
    return await done(session, login, _back(set_id, "#pools"), message)


def _summary(job: object) -> str:
    return (
        f"Import {getattr(job, 'filename', None) or 'of a pasted list'}: "
        f"{getattr(job, 'status', '')}, {getattr(job, 'accepted', 0):,} accepted, "
        f"{getattr(job, 'duplicates', 0):,} duplicates, {getattr(job, 'rejected', 0):,} rejected."
    )


@router.post("/{set_id}/imports")
async def import_file(
    request: Request, set_id: str, session: Session, login: Login, runner: imports.Runner
) -> Response:
    """The import form's multipart upload, streamed as the API's import is; the CSRF
    token comes as the ``X-CSRF-Token`` header (the page's script) or as the form's
    first field."""
    upload = await Upload.open(request)
    token = upload.fields.pop("csrf", None) or request.headers.get("X-CSRF-Token")
    if not csrf_ok(login, token):
        raise Forbidden("The form is stale or came from another site: reload the page.")
    require(login, Scope.write)
    coupon_set = await coupon_sets.get_coupon_set(session, set_id)
    # Empty selections of the form mean "the default" to the API's option parser.
    fields = {name: value for name, value in upload.fields.items() if value != ""}
    try:
        options = imports.parse_options(
            fields,
            kind=ImportKind.codes,
            content_type=upload.content_type,
            filename=upload.filename,
        )
        started = await runner.start(
            coupon_set=coupon_set,
            options=options,
            filename=upload.filename,
            chunks=upload.chunks(),
            late_fields=lambda: upload.late_fields,
            actor=login.key,
            idempotency_key=None,
        )
    except AppError as exc:
        answer = await refused(session, login, _back(set_id, "#import"), exc)
    else:
        answer = await done(session, login, _back(set_id, "#imports"), _summary(started.job))
    if request.headers.get("X-CSRF-Token"):
        # The page's script: it goes to the page itself, so the message is not taken by
        # an XHR that follows the redirect.
        return JSONResponse({"location": answer.headers["location"]})
    return answer


@router.post("/{set_id}/paste")
async def import_pasted(
    set_id: str, session: Session, posted: FormLogin, runner: imports.Runner
) -> Response:
    """A pasted list of codes, one a line: imported as a plain-text file, so it has a
    job in the history like any upload."""
    login, form = posted
    require(login, Scope.write)
    coupon_set = await coupon_sets.get_coupon_set(session, set_id)
    text = field(form, "codes")
    if not text:
        return await done(session, login, _back(set_id, "#import"), "Paste at least one code.")
    try:
        options = imports.parse_options(
            {"format": "text", "pool": field(form, "pool") or "default"},
            kind=ImportKind.codes,
            content_type="text/plain",
            filename=None,
        )
        started = await runner.start(
            coupon_set=coupon_set,
            options=options,
            filename=None,
            chunks=one_chunk(text.encode()),
            late_fields=list,
            actor=login.key,
            idempotency_key=None,
        )
    except AppError as exc:
        return await refused(session, login, _back(set_id, "#import"), exc)
    return await done(session, login, _back(set_id, "#imports"), _summary(started.job))


@router.get("/{set_id}/imports/{job_id}/errors.csv")
async def import_errors(
    set_id: str, job_id: uuid.UUID, session: Session, login: Login, pool: DriverPool
) -> Response:
    require(login, Scope.read)
    coupon_set = await coupon_sets.get_coupon_set(session, set_id)
    job = await imports.get_job(
        session, coupon_set=coupon_set, kind=ImportKind.codes, job_id=job_id
    )
    return downloads.import_errors(pool, job.id)


@router.get("/{set_id}/export")
async def export(
    set_id: str,
    session: Session,
    login: Login,
    pool: DriverPool,
    format: ExportFormat = ExportFormat.csv,
    status: CodeStatus | None = None,
    code_pool: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    require(login, Scope.write)  # as the API's export
    coupon_set = await coupon_sets.get_coupon_set(session, set_id)
    prepared = await exports.prepare_export(
        session, coupon_set=coupon_set, format=format, status=status, pool=code_pool or None
    )
    return downloads.codes(pool, prepared)


@router.post("/{set_id}/deliveries")
async def create_delivery(set_id: str, session: Session, posted: FormLogin) -> Response:
    login, form = posted
    require(login, Scope.write)
    coupon_set = await coupon_sets.get_coupon_set(session, set_id)
    try:
        body = DeliveryCreate.model_validate(
            {
                "label": field(form, "label"),
                "coupon_set_id": str(coupon_set.id),
                "pool": field(form, "pool") or None,
                "subject": field(form, "subject") or None,
                "template": field(form, "template") or None,
            }
        )
    except ValidationError as exc:
        return await done(session, login, _back(set_id, "#deliveries"), _errors_of(exc))
    try:
        async with session.begin_nested():
            delivery, _, _ = await deliveries.create_delivery(session, data=body, actor=login.key)
    except AppError as exc:
        return await refused(session, login, _back(set_id, "#deliveries"), exc)
    return await done(
        session, login, f"{PREFIX}/deliveries/{delivery.id}", "Delivery created: add its targets."
    )

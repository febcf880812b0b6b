"""/v1/coupon-sets/{set_id}/imports and /redemption-imports: file uploads and their jobs.

These routes read the request body as a stream (app/uploads.py), so they do not use
``IdempotentRoute`` (whose fingerprint reads the body whole): an Idempotency-Key is
kept on the job instead and a retry answers that job. See docs/imports.md."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse

from app import downloads
from app.auth import ReadKey, WriteKey
from app.db import DriverPool, Session
from app.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    NotFound,
    UnsupportedMediaType,
    WrongSetKind,
)
from app.idempotency import KEY_PATTERN
from app.models.import_job import ImportJob, ImportKind
from app.pagination import PageQuery, build_page
from app.problems import problem_responses
from app.routers.coupon_sets import CouponSetRef
from app.schemas.import_job import ImportJobPage, ImportJobPublic
from app.schemas.mappers import import_job_public
from app.services import imports
from app.uploads import Upload

router = APIRouter(prefix="/v1/coupon-sets/{set_id}", tags=["imports"])

_PATHS = {ImportKind.codes: "imports", ImportKind.redemptions: "redemption-imports"}

# File part types taken as import files; anything else is a 415.
_FILE_TYPES = {
    "text/csv",
    "application/csv",
    "text/plain",
    "text/xml",
    "application/xml",
    "application/octet-stream",
    "application/vnd.ms-excel",
    "text/tab-separated-values",
}

ImportId = Annotated[uuid.UUID, Path(description="The import job's id")]
IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="Any unique string (a UUID): a retry with the same key and file "
        "answers the first job instead of importing again. Kept 24 hours.",
    ),
]


def _form_schema(kind: ImportKind) -> dict[str, Any]:
    text = {"type": "string"}
    properties: dict[str, Any] = {
        "file": {"type": "string", "format": "binary", "description": "The file"},
        "format": {
            "type": "string",
            "enum": ["csv", "xml", "text"] if kind is ImportKind.codes else ["csv"],
            "description": "Default: from the file part's type or name, else csv",
        },
        "delimiter": {**text, "default": ",", "description": "One character; `\\t` for tab"},
        "quotechar": {**text, "default": '"'},
        "header": {
            "type": "boolean",
            "description": "Whether the first line names the columns"
            + (
                " (default true)"
                if kind is ImportKind.codes
                else " (default: guessed from a first cell `code`)"
            ),
        },
        "encoding": {**text, "default": "utf-8", "description": "A UTF-8 BOM is dropped"},
        "mode": {"type": "string", "enum": ["partial", "all_or_nothing"], "default": "partial"},
        "force": {
            "type": "boolean",
            "default": False,
            "description": "Import again a file whose content was imported already",
        },
    }
    if kind is ImportKind.codes:
        properties |= {
            "code_column": {
                **text,
                "description": "Header name or 1-based column number; default: the "
                "column named `code`, else the first",
            },
            "pool_column": {**text, "description": "Header name or 1-based column number"},
            "pool": {**text, "default": "default", "description": "Pool of rows without one"},
        }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": properties,
                        "additionalProperties": False,
                    },
                    "encoding": {"file": {"contentType": ", ".join(sorted(_FILE_TYPES))}},
                }
            },
        }
    }


def _answer(started: imports.StartedImport, set_ref: str, kind: ImportKind) -> JSONResponse:
    job = started.job
    headers = {"Location": f"/v1/coupon-sets/{set_ref}/{_PATHS[kind]}/{job.id}"}
    if started.replayed:
        headers["Idempotent-Replayed"] = "true"
    body = jsonable_encoder(import_job_public(job))
    return JSONResponse(body, status_code=started.status_code, headers=headers)


async def _start(
    request: Request,
    runner: imports.Runner,
    *,
    kind: ImportKind,
    actor: Any,
    coupon_set: Any,
    idempotency_key: str | None,
) -> JSONResponse:
    upload = await Upload.open(request)
    media = (upload.content_type or "").split(";")[0].strip().lower()
    if media and media not in _FILE_TYPES:
        raise UnsupportedMediaType(
            f"The file part's type '{media}' is not an import format: send CSV, XML or plain text."
        )
    options = imports.parse_options(
        upload.fields, kind=kind, content_type=upload.content_type, filename=upload.filename
    )
    started = await runner.start(
        coupon_set=coupon_set,
        options=options,
        filename=upload.filename,
        chunks=upload.chunks(),
        late_fields=lambda: upload.late_fields,
        actor=actor,
        idempotency_key=idempotency_key,
    )
    return _answer(started, str(coupon_set.id), kind)


_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ImportJobPublic,
        "description": "The same content was imported into this set already (or the "
        "Idempotency-Key was used): that job, unchanged",
    },
    202: {
        "model": ImportJobPublic,
        "description": "The file was read; the job continues in the background "
        "(`Location` names it)",
    },
}


def _upload_responses(*extra: Any) -> dict[int | str, dict[str, Any]]:
    return {
        **_UPLOAD_RESPONSES,
        **problem_responses(
            NotFound, UnsupportedMediaType, IdempotencyKeyInUse, IdempotencyKeyReused, *extra
        ),
    }


@router.post(
    "/imports",
    status_code=201,
    response_model=ImportJobPublic,
    summary="Import a file of codes",
    description="A multipart upload: the file in the part `file` (CSV, XML or plain text, "
    "one code per line), options in the fields before it. The file is streamed into the "
    "set; duplicates (within the file or already in the set) and rejected rows are "
    "reported by line. `201` when the job finished within the request, `202` when it "
    "continues in the background. The same content sent again for this set answers the "
    "first job with `200` (unless `force`). See docs/imports.md.",
    responses=_upload_responses(WrongSetKind),
    openapi_extra=_form_schema(ImportKind.codes),
)
async def import_codes(
    request: Request,
    runner: imports.Runner,
    key: WriteKey,
    coupon_set: CouponSetRef,
    idempotency_key: IdempotencyHeader = None,
) -> JSONResponse:
    return await _start(
        request,
        runner,
        kind=ImportKind.codes,
        actor=key,
        coupon_set=coupon_set,
        idempotency_key=idempotency_key,
    )


@router.post(
    "/redemption-imports",
    status_code=201,
    response_model=ImportJobPublic,
    summary="Import a file of redemptions",
    description="A CSV of `code, redeemed_at[, order_id, amount]` (header optional), "
    "uploaded like an import of codes. Each row is redeemed under the rules of "
    "`POST /v1/redemptions`; refusals are reported by line.",
    responses=_upload_responses(),
    openapi_extra=_form_schema(ImportKind.redemptions),
)
async def import_redemptions(
    request: Request,
    runner: imports.Runner,
    key: WriteKey,
    coupon_set: CouponSetRef,
    idempotency_key: IdempotencyHeader = None,
) -> JSONResponse:
    return await _start(
        request,
        runner,
        kind=ImportKind.redemptions,
        actor=key,
        coupon_set=coupon_set,
        idempotency_key=idempotency_key,
    )


async def _list(
    session: Session, coupon_set: CouponSetRef, page: PageQuery, kind: ImportKind
) -> ImportJobPage:
    rows = await imports.list_jobs(session, coupon_set=coupon_set, kind=kind, params=page)
    return build_page(ImportJobPage, rows, page, import_job_public)


async def _errors(
    pool: DriverPool,
    session: Session,
    coupon_set: CouponSetRef,
    import_id: uuid.UUID,
    kind: ImportKind,
) -> StreamingResponse:
    job: ImportJob = await imports.get_job(
        session, coupon_set=coupon_set, kind=kind, job_id=import_id
    )
    return downloads.import_errors(pool, job.id)


_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The whole report: line, code, reason",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}


@router.get(
    "/imports",
    summary="List imports of codes",
    description="The history, newest first.",
    responses=problem_responses(NotFound),
)
async def list_imports(
    _: ReadKey, coupon_set: CouponSetRef, session: Session, page: PageQuery
) -> ImportJobPage:
    return await _list(session, coupon_set, page, ImportKind.codes)


@router.get(
    "/imports/{import_id}",
    summary="Get an import of codes",
    description="Its status, counts and first errors; poll it while it runs.",
    responses=problem_responses(NotFound),
)
async def get_import(
    _: ReadKey, coupon_set: CouponSetRef, import_id: ImportId, session: Session
) -> ImportJobPublic:
    job = await imports.get_job(
        session, coupon_set=coupon_set, kind=ImportKind.codes, job_id=import_id
    )
    return import_job_public(job)


@router.get(
    "/imports/{import_id}/errors.csv",
    summary="Download an import's error report",
    description="Every rejected or duplicate row as CSV: line, code, reason.",
    response_class=StreamingResponse,
    responses={**_CSV_RESPONSE, **problem_responses(NotFound)},
)
async def get_import_errors(
    pool: DriverPool,
    _: ReadKey,
    coupon_set: CouponSetRef,
    import_id: ImportId,
    session: Session,
) -> StreamingResponse:
    return await _errors(pool, session, coupon_set, import_id, ImportKind.codes)


@router.get(
    "/redemption-imports",
    summary="List imports of redemptions",
    description="The history, newest first.",
    responses=problem_responses(NotFound),
)
async def list_redemption_imports(
    _: ReadKey, coupon_set: CouponSetRef, session: Session, page: PageQuery
) -> ImportJobPage:
    return await _list(session, coupon_set, page, ImportKind.redemptions)


@router.get(
    "/redemption-imports/{import_id}",
    summary="Get an import of redemptions",
    responses=problem_responses(NotFound),
)
async def get_redemption_import(
    _: ReadKey, coupon_set: CouponSetRef, import_id: ImportId, session: Session
) -> ImportJobPublic:
    job = await imports.get_job(
        session, coupon_set=coupon_set, kind=ImportKind.redemptions, job_id=import_id
    )
    return import_job_public(job)


@router.get(
    "/redemption-imports/{import_id}/errors.csv",
    summary="Download a redemption import's error report",
    description="Every refused row as CSV: line, code, reason.",
    response_class=StreamingResponse,
    responses={**_CSV_RESPONSE, **problem_responses(NotFound)},
)
async def get_redemption_import_errors(
    pool: DriverPool,
    _: ReadKey,
    coupon_set: CouponSetRef,
    import_id: ImportId,
    session: Session,
) -> StreamingResponse:
    return await _errors(pool, session, coupon_set, import_id, ImportKind.redemptions)

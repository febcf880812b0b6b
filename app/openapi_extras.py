"""What the generated OpenAPI document needs beyond what FastAPI writes: the schemas a
route's hand-written request body refers to, and the response headers the service sends
(FastAPI documents none), so that generated clients see them."""

from typing import Any

from pydantic import BaseModel

from app.schemas.common import WriteModel
from app.schemas.delivery import TargetsAdd

# Models referred to from ``openapi_extra`` bodies, which FastAPI does not collect.
_EXTRA_MODELS: tuple[type[BaseModel], ...] = (TargetsAdd,)

# What WriteModel refuses in every body, and the database in a path or query parameter
# (app.problems), for the document: a NUL, which PostgreSQL cannot store (a lone
# surrogate, refused too, is no Unicode character: no JSON Schema string holds one).
# Free-form JSON refers to FreeJson, which says it of every string inside.
_NO_NUL = r"^[^\x00]*$"
_FREE_JSON = "#/components/schemas/FreeJson"
# Keywords apply to the values of their type only: no "type" (any JSON value) and no
# anyOf, which openapi-python-client cannot parse when it refers to itself.
_FREE_JSON_VALUE: dict[str, Any] = {
    "description": "Any JSON value whose strings and keys hold no NUL character (which "
    "PostgreSQL cannot store)",
    "pattern": _NO_NUL,
    "items": {"$ref": _FREE_JSON},
    "propertyNames": {"pattern": _NO_NUL},
    "additionalProperties": {"$ref": _FREE_JSON},
}


def _state_storable(schema: dict[str, Any]) -> None:
    """Add to ``schema`` (a body field's, in place) that its strings hold no NUL; a string
    with a pattern or a format has its own rule."""
    for part in (*schema.get("anyOf", ()), *schema.get("oneOf", ()), *schema.get("allOf", ())):
        _state_storable(part)
    kind = schema.get("type")
    if kind == "string" and not schema.keys() & {"pattern", "enum", "const", "format"}:
        schema["pattern"] = _NO_NUL
    elif kind == "array" and isinstance(schema.get("items"), dict):
        _state_storable(schema["items"])
    elif kind == "object" and "properties" not in schema:
        schema["propertyNames"] = {"pattern": _NO_NUL}
        values = schema.get("additionalProperties", True)
        if values is True or values == {}:
            schema["additionalProperties"] = {"$ref": _FREE_JSON}
        elif isinstance(values, dict):
            _state_storable(values)


def _write_models(kind: type[WriteModel] = WriteModel) -> dict[str, type[WriteModel]]:
    found: dict[str, type[WriteModel]] = {}
    for sub in kind.__subclasses__():
        found |= {sub.__name__: sub, **_write_models(sub)}
    return found


# Operations whose 201/202 answer names the new (or running) resource in ``Location``.
_LOCATION = {
    ("post", "/v1/api-keys"),
    ("post", "/v1/coupon-sets"),
    ("post", "/v1/coupon-sets/{set_id}/pools"),
    ("post", "/v1/coupon-sets/{set_id}/imports"),
    ("post", "/v1/coupon-sets/{set_id}/redemption-imports"),
    ("post", "/v1/deliveries"),
    ("post", "/v1/deliveries/{delivery_id}/confirm"),
}

_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id (the one sent in `X-Request-ID`, or a new UUID); "
        "it is in every log line of the request and in a problem's `request_id`",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Location": {
        "description": "The path of the created (or running) resource",
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with "
        "the same `Idempotency-Key`",
        "schema": {"type": "string", "enum": ["true"]},
    },
}


# OpenAPI links: what an answer's id opens next (stateful fuzzers and readers follow
# them). operationId → (status, {link name: (operationId, {parameter: expression})}).
_ID = "$response.body#/id"
_LINKS: dict[str, tuple[str, dict[str, tuple[str, dict[str, str]]]]] = {
    "create_api_key": (
        "201",
        {
            "GetApiKey": ("get_api_key", {"key_id": _ID}),
            "RevokeApiKey": ("revoke_api_key", {"key_id": _ID}),
        },
    ),
    "create_coupon_set": (
        "201",
        {
            name: (operation, {"set_id": _ID})
            for name, operation in [
                ("GetCouponSet", "get_coupon_set"),
                ("UpdateCouponSet", "update_coupon_set"),
                ("AddCodes", "add_codes"),
                ("GenerateCodes", "generate_codes"),
                ("AssignCode", "assign_code"),
                ("CreatePool", "create_pool"),
                ("ListCodes", "list_codes"),
                ("ImportCodes", "import_codes"),
            ]
        },
    ),
    "assign_code": (
        "201",
        {
            "GetCode": (
                "get_code",
                {"set_id": "$request.path.set_id", "code": "$response.body#/code"},
            ),
        },
    ),
    "create_delivery": (
        "201",
        {
            name: (operation, {"delivery_id": _ID})
            for name, operation in [
                ("GetDelivery", "get_delivery"),
                ("UpdateDelivery", "update_delivery"),
                ("AddRecipients", "add_recipients"),
                ("AnalyzeDelivery", "analyze_delivery"),
                ("ConfirmDelivery", "confirm_delivery"),
                ("PreviewDelivery", "preview_delivery"),
            ]
        },
    ),
    "redeem_code": (
        "201",
        {
            name: (operation, {"redemption_id": _ID})
            for name, operation in [
                ("GetRedemption", "get_redemption"),
                ("RollbackRedemption", "rollback_redemption"),
                ("ConfirmRedemption", "confirm_redemption"),
                ("ReleaseRedemption", "release_redemption"),
            ]
        },
    ),
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in _EXTRA_MODELS:
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in model_schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas.setdefault(model.__name__, model_schema)
    for name, model in _write_models().items():
        for field_name, field in schemas.get(name, {}).get("properties", {}).items():
            # Items checked one by one are refused one by one, in a 200 answer.
            if field_name not in model.checked_per_item:
                _state_storable(field)
    schemas["FreeJson"] = _FREE_JSON_VALUE
    components["headers"] = _HEADERS
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") in ("path", "query"):
                    _state_storable(parameter["schema"])
            idempotent = any(
                p.get("name") == "Idempotency-Key" for p in operation.get("parameters", [])
            )
            for status, response in operation.get("responses", {}).items():
                headers = response.setdefault("headers", {})
                headers["X-Request-ID"] = _ref("X-Request-ID")
                if status in ("429", "503") or (status == "409" and idempotent):
                    headers["Retry-After"] = _ref("Retry-After")
                if status in ("201", "202") and (method, path) in _LOCATION:
                    headers["Location"] = _ref("Location")
                if idempotent and status.startswith("2"):
                    headers["Idempotent-Replayed"] = _ref("Idempotent-Replayed")
            if operation.get("operationId") in _LINKS:
                status, links = _LINKS[operation["operationId"]]
                operation["responses"][status]["links"] = {
                    name: {"operationId": target, "parameters": parameters}
                    for name, (target, parameters) in links.items()
                }
    return schema

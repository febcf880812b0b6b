"""The committed OpenAPI document is what the app serves, and it is complete."""

import json
from pathlib import Path

import httpx

from app.openapi import render
from app.schemas.common import PATH_TEXT

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
PUBLIC = {"/healthz", "/readyz"}


def test_committed_document_is_current() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(), (
        "openapi/openapi.json is stale: run `make openapi` and commit it"
    )


async def test_served_document_equals_the_committed_one(anonymous: httpx.AsyncClient) -> None:
    served = (await anonymous.get("/openapi.json")).json()
    assert served == json.loads(COMMITTED.read_text(encoding="utf-8"))


def test_every_operation_is_documented() -> None:
    document = json.loads(render())
    operation_ids: list[str] = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            operation_ids.append(operation["operationId"])
            assert operation.get("summary"), where
            responses = operation["responses"]
            if path not in PUBLIC:
                assert operation.get("security") == [{"ApiKey": []}], where
                for status in ("401", "403", "422"):
                    problem = responses[status]["content"]["application/problem+json"]
                    assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}, where
    assert len(operation_ids) == len(set(operation_ids))
    assert "create_coupon_set" in operation_ids
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def test_every_reference_resolves_and_answers_name_their_headers() -> None:
    document = json.loads(render())
    for ref in _refs(document):
        node = document
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]
    confirm = document["paths"]["/v1/deliveries/{delivery_id}/confirm"]["post"]["responses"]
    assert confirm["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DeliveryPublic"
    }
    assert "Location" in confirm["202"]["headers"]
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                assert "X-Request-ID" in response["headers"]
                if status in ("429", "503"):
                    assert "Retry-After" in response["headers"]
    created = document["paths"]["/v1/coupon-sets"]["post"]["responses"]["201"]["headers"]
    assert {"Location", "Idempotent-Replayed"} <= created.keys()


def test_links_name_operations_and_their_parameters() -> None:
    document = json.loads(render())
    operations = {
        operation["operationId"]: operation
        for item in document["paths"].values()
        for operation in item.values()
    }
    linked = 0
    for operation in operations.values():
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                target = operations[link["operationId"]]
                names = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                assert set(link["parameters"]) <= names, link
                linked += 1
    assert linked >= 20


def test_text_path_parameters_refuse_dot_segments() -> None:
    # "." and ".." in a path are dropped by URL clients (RFC 3986 dot-segments), so a
    # request for ".../codes/./void" would reach ".../codes/void": the document must
    # not offer them as values of any text path parameter.
    document = json.loads(render())
    text_params = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                if parameter["in"] != "path" or schema.get("type") != "string":
                    continue
                if schema.get("format") == "uuid":
                    continue
                text_params += 1
                assert schema.get("pattern") == PATH_TEXT, f"{method.upper()} {path}"
    assert text_params > 40

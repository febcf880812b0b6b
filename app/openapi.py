"""Write the OpenAPI document and the list of problem types:
``python -m app.openapi openapi/openapi.json docs/problems.md`` (``make openapi``)."""

import json
import sys
from pathlib import Path
from typing import Any

from app.errors import AppError
from app.main import create_app
from app.problems import problem_type
from app.settings import Settings

# Produced by the framework, not by an AppError.
_FRAMEWORK_PROBLEMS = {
    "method-not-allowed": (405, "Method not allowed (with an `Allow` header)"),
    "internal-error": (500, "Internal server error (logged with the request id; no details)"),
}

_PROBLEMS_INTRO = """# Problem types

Every error is `application/problem+json` (RFC 9457). Branch on `type`; `title` is a
fixed summary of the type, `detail` explains this occurrence, `instance` is the
request path and `request_id` matches the `X-Request-ID` header and the logs.
Validation problems add `errors`: a list of `{loc, message, type}`. Some problems
add members of their own: `pool-exhausted` has `pool` and `counts`, `forbidden` has
`required_scope`, `max-uses-reached` has `limit` (`max_uses` or `per_recipient`),
`ambiguous-code` has `sets`. `429` and `503` carry `Retry-After`.

`422 validation-error` is a request the OpenAPI document does not allow, one breaking a
rule a schema cannot state (a code with nothing visible in it, an import's form field
after its file part), or one at odds with itself (a set whose own `valid_from` is not
before its `valid_until`); a request
at odds with what is stored is `409` (a `PATCH` giving a unique set a shared option is
`wrong-set-kind`, one moving a window past the bound the set keeps `validity-window`).
A cursor not of its list's documented shape, an empty one included, is `invalid-cursor`.

This page is written by `make openapi`.

| status | type | meaning |
|---|---|---|
"""


def openapi_document() -> dict[str, Any]:
    # The document depends on no setting; the URL is never connected to.
    app = create_app(Settings(environment="test"), database_url="postgresql+asyncpg:///unused")
    return app.openapi()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def _error_kinds(kind: type[AppError]) -> list[type[AppError]]:
    subclasses = [sub for sub in kind.__subclasses__() if not sub.__name__.startswith("_")]
    return [k for sub in subclasses for k in (sub, *_error_kinds(sub))]


def render_problems() -> str:
    kinds = {kind.slug: (kind.status, kind.title) for kind in _error_kinds(AppError)}
    kinds |= _FRAMEWORK_PROBLEMS
    rows = sorted(kinds.items(), key=lambda item: (item[1][0], item[0]))
    return _PROBLEMS_INTRO + "".join(
        f"| {status} | `{problem_type(slug)}` | {title} |\n" for slug, (status, title) in rows
    )


if __name__ == "__main__":
    openapi_path = Path(sys.argv[1] if len(sys.argv) > 1 else "openapi/openapi.json")
    problems_path = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/problems.md")
    openapi_path.write_text(render(), encoding="utf-8")
    problems_path.write_text(render_problems(), encoding="utf-8")
    print(f"wrote {openapi_path} and {problems_path}")

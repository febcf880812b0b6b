"""Write the OpenAPI document: ``python -m app.openapi openapi/openapi.json``."""

import json
import sys
from pathlib import Path
from typing import Any

from app.main import create_app
from app.settings import Settings


def openapi_document() -> dict[str, Any]:
    # The document depends on no setting; the URL is never connected to.
    app = create_app(Settings(environment="test"), database_url="postgresql+asyncpg:///unused")
    return app.openapi()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "openapi/openapi.json")
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")

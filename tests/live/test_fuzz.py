"""Property-based fuzzing of the whole OpenAPI document against the running server:
no 5xx, every response matches the document (status, content type, schema)."""

import asyncio
import subprocess
from pathlib import Path

import httpx

from tests.conftest import ADMIN_SECRET
from tests.helpers import add_codes, create_set

SCHEMATHESIS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "schemathesis"


async def test_fuzzing_the_openapi_document_finds_no_error(
    live: httpx.AsyncClient, live_server: str
) -> None:
    # Some data for the generated requests to find besides their 404s.
    await create_set(live, key="fuzz")
    await add_codes(live, "fuzz", ["FUZZ-1", "FUZZ-2"])
    result = await asyncio.to_thread(
        subprocess.run,
        [
            str(SCHEMATHESIS),
            "run",
            f"{live_server}/openapi.json",
            "--header",
            f"Authorization: Bearer {ADMIN_SECRET}",
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,"
            "content_type_conformance",
            "--max-examples",
            "25",
            # The stateful phase, which the document's links now enable, is not yet
            # clean nor within this test's time (issue 11 item 12): the three others.
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "20261123",
            # Its long poll waits up to `wait` (≤ 30 s) for events: generated waits would
            # take the run past its time; tests/services/events/test_feed.py covers it.
            "--exclude-operation-id",
            "list_events",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = result.stdout[-4000:]
    assert result.returncode == 0, report
    assert " passed" in report

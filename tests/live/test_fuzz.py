"""Property-based fuzzing of the whole OpenAPI document against the running server, with
every schemathesis check and every phase (examples, coverage, fuzzing, and the stateful
phase that follows the document's links): no 5xx, every response as documented, every
request the document allows accepted and every request it forbids refused."""

import asyncio
import os
import subprocess
from pathlib import Path

import httpx

from tests.conftest import ADMIN_SECRET
from tests.helpers import add_codes, create_set

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = ROOT / ".venv" / "bin" / "schemathesis"

# Every check runs: none is off by default (`--checks all` on the command line would
# override the exclusions below). The admin key as the document's security scheme (not
# a fixed header), so that the checks that leave it out (missing_required_header,
# ignored_auth) really leave it out.
CONFIG = f"""
[auth.openapi.ApiKey]
bearer = "{ADMIN_SECRET}"

[phases.stateful]
max-steps = 10

# Rules a JSON Schema cannot state and no hook keeps (a request the document allows is
# refused with a documented 422): each the one check that expects such requests to pass,
# on the one operation.

# An endpoint URL must have a host that resolves to a public address (url-not-allowed):
# DNS and address ranges, not the shape of a string.
[[operations]]
include-operation-id = ["create_webhook_endpoint", "update_webhook_endpoint"]
checks.positive_data_acceptance.enabled = false

# A timeline holds at most 1000 buckets (invalid-timeline): a bound on `to - from`
# (`to` defaulting to now) divided by the bucket's length in the set's zone.
[[operations]]
include-operation-id = "get_set_timeline"
checks.positive_data_acceptance.enabled = false

# The code space of a pattern or length must hold `min_space_ratio` times the set's codes,
# existing and new (code-space-too-small): arithmetic between fields and stored rows.
[[operations]]
include-operation-id = "generate_codes"
checks.positive_data_acceptance.enabled = false

# An import's options must fit its file: a column named by `code_column` must be in it,
# its bytes must be in `encoding` (any Python codec name), its format must be readable.
# And a form field is text on the wire: a value drawn as an object or a number, to break
# a string field's type, arrives as its text, which that field rightly takes.
[[operations]]
include-operation-id = ["import_codes", "import_redemptions"]
checks.positive_data_acceptance.enabled = false
checks.negative_data_rejection.enabled = false
"""


async def test_fuzzing_the_openapi_document_finds_no_error(
    live: httpx.AsyncClient, live_server: str, tmp_path: Path
) -> None:
    # Some data for the generated requests to find besides their 404s.
    await create_set(live, key="fuzz")
    await add_codes(live, "fuzz", ["FUZZ-1", "FUZZ-2"])
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    result = await asyncio.to_thread(
        subprocess.run,
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(config),
            "run",
            f"{live_server}/openapi.json",
            "--max-examples",
            "25",
            "--seed",
            "20261123",
            "--no-color",
        ],
        # Rules a JSON Schema cannot state (a fresh Idempotency-Key per request, ...).
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.live.fuzz_hooks", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = result.stdout[-6000:]
    assert result.returncode == 0, report
    assert " passed" in report

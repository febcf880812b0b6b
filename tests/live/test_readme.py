"""The README's commands run as written, on any day, against a running server.

The shell blocks of the walk-through, the export, the CLI and the imports sections are
run in that order by bash, with the reader's two placeholders filled in (the URL and
the admin key the first start printed). Every HTTP error fails the run, except the
walk-through's last command, which shows what a problem looks like."""

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ADMIN_SECRET

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = ("A walk through with curl", "Export", "CLI", "Imports")

# curl as the reader runs it, but an HTTP error stops the walk-through (the one
# command that asks for a missing set on purpose excepted).
_PRELUDE = r"""
curl() {
    local out code
    out=$(command curl -sS -w '\n%{http_code}' "$@")
    code=${out##*$'\n'}
    printf '%s\n' "${out%$'\n'*}"
    if [[ $code -ge 400 && "$*" != */coupon-sets/nope* ]]; then
        echo "HTTP $code from: curl $*" >&2
        exit 1
    fi
}
"""


def shell_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```sh\n(.*?)```", text[start : end if end > 0 else None], re.S)


def test_readme_sections_exist_and_have_commands() -> None:
    for section in SECTIONS:
        assert shell_blocks(section), section


async def test_the_readme_runs_as_written(
    live: httpx.AsyncClient, live_server: str, tmp_path: Path
) -> None:
    script = "\n".join(block for section in SECTIONS for block in shell_blocks(section))
    placeholder = "export URL=http://127.0.0.1:8000 ADMIN=cpn_..."
    assert placeholder in script
    script = script.replace(placeholder, f"export URL={live_server} ADMIN={ADMIN_SECRET}")
    environment = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    done = await asyncio.to_thread(
        subprocess.run,
        ["/bin/bash", "-euo", "pipefail", "-c", _PRELUDE + script],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    # What the README says each step answers.
    assert '"shortfall":200' in out.replace(" ", "")
    assert '"type":"urn:coupons:problem:not-found"' in out.replace(" ", "")
    messages = (tmp_path / "messages.csv").read_text().splitlines()
    assert len(messages) == 1 + 1000  # a header, and the message limit of 1,000
    assert (tmp_path / "spring.csv").exists()
    for code, pool in (("CLI-0001", "soccer"), ("IMP-0001", "soccer"), ("IMP-0002", "default")):
        found = await live.get(f"/v1/coupon-sets/spring-2026/codes/{code}")
        assert found.status_code == 200, f"{code} was imported"
        assert found.json()["pool"] == pool

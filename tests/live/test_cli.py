"""The ``coupons`` console script, run as a subprocess against a running server."""

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
from defusedxml import ElementTree

from tests.conftest import ADMIN_SECRET
from tests.helpers import add_codes, create_set

_SCRIPT = Path(sys.executable).with_name("coupons")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "app.cli"]


def coupons(
    *args: str, url: str, key: str | None = ADMIN_SECRET, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUPONS_")}
    env["COUPONS_URL"] = url
    if key is not None:
        env["COUPONS_API_KEY"] = key
    return subprocess.run(  # noqa: S603 - the tool under test
        [*COMMAND, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in done.stderr
    return lines[0]


async def test_api_key_create_prints_the_secret_once(
    live: httpx.AsyncClient, live_server: str
) -> None:
    done = coupons(
        "api-key", "create", "--name", "campaign tool", "--scope", "write", "--scope", "assign",
        url=live_server,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("cpn_")
    assert secret not in done.stderr
    assert ADMIN_SECRET not in done.stdout + done.stderr
    me = await live.get("/v1/coupon-sets", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200


async def test_generate_then_export_to_a_file(
    live: httpx.AsyncClient, live_server: str, tmp_path: Path
) -> None:
    await create_set(live, key="cli-spring")
    done = coupons(
        "generate", "--set", "cli-spring", "--count", "2500", "--pattern", "SPRING-########-????",
        url=live_server,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "generated 2,500 codes in pool default" in done.stdout
    await add_codes(live, "cli-spring", ["=FORMULA()"])

    target = tmp_path / "codes.csv"
    done = coupons("export", "--set", "cli-spring", "--format", "csv", "-o", str(target),
                   url=live_server)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "exported 2,501 codes" in done.stdout
    rows = list(csv.DictReader(io.StringIO(target.read_text(), newline="")))
    assert len(rows) == 2501
    assert all(r["code"].startswith("SPRING-") for r in rows[:2500])
    assert rows[-1]["code"] == "'=FORMULA()"
    assert {r["status"] for r in rows} == {"available"}
    assert files_in(tmp_path) == ["codes.csv"]  # no temporary file left

    xml = tmp_path / "codes.xml"
    done = coupons("export", "--set", "cli-spring", "--format", "xml", "-o", str(xml),
                   "--status", "available", url=live_server)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(ElementTree.parse(xml).getroot().findall("code")) == 2501


async def test_an_api_refusal_is_one_line_and_a_failed_export_leaves_no_file(
    live: httpx.AsyncClient, live_server: str, tmp_path: Path
) -> None:
    target = tmp_path / "out.csv"
    done = coupons("export", "--set", "nope", "-o", str(target), url=live_server)
    assert done.returncode == 1
    assert one_error_line(done) == ("error: 404 not-found: No coupon set has the id or key 'nope'.")
    assert files_in(tmp_path) == []

    done = coupons("generate", "--set", "nope", "--count", "5", "--pattern", "X-####",
                   url=live_server)  # fmt: skip
    assert done.returncode == 1
    assert one_error_line(done).startswith("error: 404 not-found:")


async def test_a_missing_or_wrong_api_key_is_one_clear_line(
    live: httpx.AsyncClient, live_server: str, tmp_path: Path
) -> None:
    done = coupons("export", "--set", "any", "-o", str(tmp_path / "x.csv"), url=live_server,
                   key=None)  # fmt: skip
    assert done.returncode == 2
    assert one_error_line(done) == "error: no API key: set COUPONS_API_KEY or pass --api-key"

    wrong = "cpn_not-a-real-key-000000000000"
    done = coupons("api-key", "create", "--name", "x", "--scope", "read", url=live_server,
                   key=wrong)  # fmt: skip
    assert done.returncode == 1
    line = one_error_line(done)
    assert line.startswith("error: 401 unauthorized:")
    assert wrong not in done.stdout + done.stderr


async def test_an_unreachable_service_is_one_line(live_server: str) -> None:
    done = coupons("generate", "--set", "s", "--count", "1", "--pattern", "#",
                   url="http://127.0.0.1:9")  # fmt: skip
    assert done.returncode == 1
    assert one_error_line(done).startswith("error: cannot talk to http://127.0.0.1:9:")
    assert ADMIN_SECRET not in done.stderr


async def test_import_uploads_a_file_and_reports_the_job(
    live: httpx.AsyncClient, live_server: str, tmp_path: Path
) -> None:
    await create_set(live, key="cli-import")
    await live.post("/v1/coupon-sets/cli-import/pools", json={"name": "soccer"})
    source = tmp_path / "codes.csv"
    source.write_text("id;voucher\n1;IMP-0001\n2;IMP-0002\n3;IMP-0001\n4;\n")
    done = coupons(
        "import", str(source), "--set", "cli-import", "--pool", "soccer",
        "--code-column", "voucher", "--delimiter", ";",
        url=live_server,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr  # row 4 has no code: rejected
    assert "succeeded" in done.stdout
    assert "2 accepted" in done.stdout
    listed = await live.get("/v1/coupon-sets/cli-import/codes", params={"pool": "soccer"})
    assert sorted(c["code"] for c in listed.json()["items"]) == ["IMP-0001", "IMP-0002"]

    again = coupons("import", str(source), "--set", "cli-import", "--pool", "soccer",
                    "--code-column", "2", "--delimiter", ";", url=live_server)  # fmt: skip
    assert again.returncode == 3, again.stderr  # the first job, replayed
    listed = await live.get("/v1/coupon-sets/cli-import/codes", params={"pool": "soccer"})
    assert len(listed.json()["items"]) == 2  # nothing doubled

    invalid = tmp_path / "invalid.csv"
    invalid.write_text("id;voucher\n1;IMP-0003\n2;\n")
    strict = coupons("import", str(invalid), "--set", "cli-import", "--all-or-nothing",
                     "--code-column", "voucher", "--delimiter", ";", "--pool", "default",
                     url=live_server)  # fmt: skip
    assert strict.returncode == 1
    assert strict.stderr.strip().splitlines()[-1].startswith("error: import failed")
    listed = await live.get("/v1/coupon-sets/cli-import/codes", params={"code": "IMP-0003"})
    assert "IMP-0003" not in [c["code"] for c in listed.json()["items"]]


async def test_import_exit_codes_say_what_happened_to_the_rows(
    live: httpx.AsyncClient, live_server: str, tmp_path: Path
) -> None:
    await create_set(live, key="cli-exit")

    clean = tmp_path / "clean.csv"
    clean.write_text("code\nEXIT-1\nEXIT-2\n")
    done = coupons("import", str(clean), "--set", "cli-exit", url=live_server)
    assert done.returncode == 0, done.stderr
    again = coupons("import", str(clean), "--set", "cli-exit", "--no-header", url=live_server)
    assert again.returncode == 0, again.stderr  # the header row and two duplicates: no reject

    mixed = tmp_path / "mixed.csv"
    mixed.write_text('code,other\nEXIT-3,x\n,y\n"EXIT-4\n')
    rejected = coupons("import", str(mixed), "--set", "cli-exit", url=live_server)
    assert rejected.returncode == 3, rejected.stdout + rejected.stderr
    assert "rejected" in rejected.stdout
    assert "None" not in rejected.stdout, "a row without a code shows no code, not None"

    binary = tmp_path / "codes.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    unreadable = coupons("import", str(binary), "--set", "cli-exit", url=live_server)
    assert unreadable.returncode != 0
    assert "--encoding" in unreadable.stdout + unreadable.stderr

    latin = tmp_path / "latin.csv"
    latin.write_bytes("code\nCAFÉ-1\n".encode("latin-1"))
    misread = coupons("import", str(latin), "--set", "cli-exit", url=live_server)
    assert misread.returncode != 0
    assert "--encoding" in misread.stderr


async def test_stats_prints_counts_forecast_and_a_sparkline(
    live: httpx.AsyncClient, live_server: str
) -> None:
    await create_set(live, key="cli-stats")
    await add_codes(live, "cli-stats", [f"ST-{n}" for n in range(8)])
    for n in range(3):
        assigned = await live.post(
            "/v1/coupon-sets/cli-stats/assignments", json={"recipient_id": f"r{n}"}
        )
        assert assigned.status_code == 201
    done = coupons("stats", "cli-stats", url=live_server)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("cli-stats (unique), as of ")
    assert "total 8  available 5  assigned 3  redeemed 0  void 0  sent 0  held 0" in lines[1]
    assert any(line.startswith("forecast  3.0/day, 1.7 days left") for line in lines)
    sparkline = next(line for line in lines if line.startswith("assigned  "))
    assert sparkline.split()[1] == "▁" * 13 + "█"
    assert "last 14 days, max 3/day" in sparkline

    missing = coupons("stats", "nope", url=live_server)
    assert missing.returncode == 1
    assert one_error_line(missing).startswith("error: 404 not-found")


async def test_recount_reports_exact_counters(live: httpx.AsyncClient, live_server: str) -> None:
    await create_set(live, key="cli-recount")
    done = coupons("recount", "--set", "cli-recount", url=live_server)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "exact"

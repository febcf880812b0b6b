"""The CSV export benchmark (target B5): ``make bench-export``.

``.venv/bin/python -m bench.export`` starts a throw-away embedded PostgreSQL and, in one run:

1. fills a unique set with 1,000,000 codes directly in SQL (a third assigned to a
   recipient, a tenth of those redeemed; what an export of a used set looks like);
2. anchor: the export's own SELECT as one ``COPY ... TO STDOUT`` read by a plain asyncpg
   client that discards it (what PostgreSQL alone does, no HTTP);
3. service: ``GET /v1/coupon-sets/{set}/export?format=csv`` read by a streaming httpx
   client that counts rows and discards the bytes, while a thread samples the service's
   resident memory every 20 ms.

B5 asks for ≥ 200,000 rows/s and flat memory. The figures go to the "B5: CSV export"
section of docs/benchmarks.md. ``run_b5`` is the reusable part (a bulk benchmark can call
it with its own server)."""

import argparse
import asyncio
import datetime as dt
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.harness import (
    PYTHON,
    ROOT,
    MemorySampler,
    Server,
    background,
    background_load,
    connect,
    create_database,
    embedded_postgres,
    free_port,
    machine,
    measure_cpu,
    source_version,
    tail,
    wait_http,
    write_section,
)

DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## B5: CSV export"
TARGET_ROWS_PER_S = 200_000
DATABASE = "bench_export"
SET_KEY = "b5"

INTRO = "# Benchmarks\n"

_FILL = """
INSERT INTO codes (set_id, pool_id, code, lookup, status, recipient_id, address, channel,
                   delivery_id, assigned_at, redeemed_at)
SELECT $1, $2, c, c,
       CASE WHEN g % 30 = 0 THEN 'redeemed' WHEN g % 3 = 0 THEN 'assigned' ELSE 'available' END,
       CASE WHEN g % 3 = 0 THEN 'contact-' || g END,
       CASE WHEN g % 3 = 0 THEN 'contact-' || g || '@example.com' END,
       CASE WHEN g % 3 = 0 THEN 'email' END,
       CASE WHEN g % 3 = 0 THEN 'delivery-' || (g / 10000) END,
       CASE WHEN g % 3 = 0 THEN now() - g * interval '1 second' END,
       CASE WHEN g % 30 = 0 THEN now() END
FROM generate_series(1, $3::int) AS g, LATERAL (SELECT 'B5-' || lpad(g::text, 10, '0') AS c) AS x
"""


def fill(server: Server, admin: httpx.Client, rows: int) -> None:
    created = admin.post("/v1/coupon-sets", json={"label": "B5", "key": SET_KEY, "kind": "unique"})
    created.raise_for_status()
    set_id = created.json()["id"]
    pools = admin.get(f"/v1/coupon-sets/{SET_KEY}/pools").json()["items"]
    pool_id = next(p["id"] for p in pools if p["name"] == "default")
    with connect(server.dsn(DATABASE)) as db:
        db.execute(_FILL, set_id, pool_id, rows)
        db.execute("VACUUM ANALYZE codes")


async def _anchor(dsn: str, set_id: str) -> tuple[int, float]:
    """The service's own chunk query over the whole set, as one COPY: bytes and seconds."""
    from app.services.exports import CSV_CHUNK_SQL, LAST_ID

    received = 0

    async def discard(data: bytes) -> None:
        nonlocal received
        received += len(data)

    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.copy_from_query(
            CSV_CHUNK_SQL, set_id, 0, LAST_ID, None, None, output=discard, format="csv"
        )
        return received, time.perf_counter() - started
    finally:
        await conn.close()


def export_over_http(url: str, key: str) -> dict[str, Any]:
    rows = received = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as c:
        started = time.perf_counter()
        with c.stream("GET", f"/v1/coupon-sets/{SET_KEY}/export", params={"format": "csv"}) as r:
            r.raise_for_status()
            first_byte = time.perf_counter() - started
            for chunk in r.iter_raw(1 << 16):
                received += len(chunk)
                rows += chunk.count(b"\n")
        seconds = time.perf_counter() - started
    rows -= 1  # the header
    return {"rows": rows, "bytes": received, "seconds": seconds, "first_byte_s": first_byte}


def run_b5(server: Server, workdir: Path, *, rows: int = 1_000_000) -> dict[str, Any]:
    """B5 on ``server``: its own database and service process; returns the figures."""
    create_database(server, DATABASE)
    port = free_port()
    key = "bench_" + secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "DATABASE_URL": server.service_url(DATABASE),
        "COUPONS_ADMIN_API_KEY": key,
        "COUPONS_WORKERS": "1",  # one export is served by one process
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "COUPONS_LOG_LEVEL": "WARNING",
    }
    log = workdir / "export-service.log"
    url = f"http://127.0.0.1:{port}"
    source = source_version()
    with background([PYTHON, "-m", "app.serve"], env=env, log=log) as proc:
        wait_http(f"{url}/readyz", proc, log)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as admin:
            started = time.monotonic()
            fill(server, admin, rows)
            fill_s = time.monotonic() - started
            print(f"  {rows:,} codes filled in {fill_s:.0f} s", flush=True)
            set_id = admin.get(f"/v1/coupon-sets/{SET_KEY}").json()["id"]
        anchor_bytes, anchor_s = asyncio.run(_anchor(server.dsn(DATABASE), set_id))
        print(f"  anchor: one COPY in {anchor_s:.2f} s ({rows / anchor_s:,.0f} rows/s)")
        export_over_http(url, key)  # warm-up: connections, plans, page cache
        with MemorySampler(proc.pid) as memory, measure_cpu(server.postmaster, proc.pid) as cpu:
            result = export_over_http(url, key)
        if proc.poll() is not None:
            raise RuntimeError(f"the service died:\n{tail(log)}")
    rate = result["rows"] / result["seconds"]
    print(f"  service: {result['rows']:,} rows in {result['seconds']:.2f} s = {rate:,.0f} rows/s")
    print(
        f"  service RSS {memory.before_kb / 1024:.0f} MB before, peak "
        f"{memory.peak_kb / 1024:.0f} MB during the export"
    )
    if result["rows"] != rows:
        raise RuntimeError(f"exported {result['rows']:,} rows, expected {rows:,}")
    return {
        "rows": rows,
        "bytes": result["bytes"],
        "seconds": result["seconds"],
        "first_byte_s": result["first_byte_s"],
        "rows_per_s": rate,
        "anchor_seconds": anchor_s,
        "anchor_bytes": anchor_bytes,
        "anchor_rows_per_s": rows / anchor_s,
        "rss_before_mb": memory.before_kb / 1024,
        "rss_peak_mb": memory.peak_kb / 1024,
        "rss_after_mb": memory.after_kb / 1024,
        "memory_samples": memory.samples,
        "cpu": cpu,
        "fill_seconds": fill_s,
        "source": source,
        "met": rate >= TARGET_ROWS_PER_S,
    }


def render(res: dict[str, Any], info: dict[str, str], background: float, minutes: float) -> str:
    cpu = res["cpu"]
    growth = res["rss_peak_mb"] - res["rss_before_mb"]
    verdict = "**met**" if res["met"] else "**not met**"
    return "\n".join(
        [
            SECTION,
            "",
            f"`make bench-export` (`.venv/bin/python -m bench.export`), run on "
            f"{dt.date.today().isoformat()} on {res['source']}, took {minutes:.1f} min, "
            "against one embedded PostgreSQL server.",
            "",
            f"- Machine: {info['cpus']} cores ({info['cpu']}), {info['ram']} RAM, {info['os']}; "
            f"{info['postgres']}; {info['python']}.",
            f"- Data: one unique set of {res['rows']:,} codes inserted in SQL "
            f"({res['fill_seconds']:.0f} s): a third assigned (recipient, address, channel, "
            "delivery, assigned_at), a tenth of those redeemed; `VACUUM ANALYZE` after.",
            "- Service: `python -m app.serve`, 1 uvicorn worker, `COUPONS_LOG_LEVEL=WARNING`. "
            "Client: httpx on the same machine, streaming, counting lines and discarding "
            "bytes; one warm-up export first, then one measured.",
            f"- Before the run {background:.2f} cores were busy with other work.",
            "",
            "| what | rows/s | time | bytes |",
            "|---|---|---|---|",
            f"| anchor: the export's SELECT as one `COPY ... TO STDOUT`, asyncpg client, "
            f"no HTTP | {res['anchor_rows_per_s']:,.0f} | {res['anchor_seconds']:.2f} s | "
            f"{res['anchor_bytes']:,} |",
            f"| **service** `GET /v1/coupon-sets/{SET_KEY}/export?format=csv` | "
            f"{res['rows_per_s']:,.0f} | {res['seconds']:.2f} s (first byte "
            f"{res['first_byte_s'] * 1000:.0f} ms) | {res['bytes']:,} |",
            "",
            "| target | measured | goal | |",
            "|---|---|---|---|",
            f"| B5 rows/s | {res['rows_per_s']:,.0f} | ≥ {TARGET_ROWS_PER_S:,} | {verdict} |",
            f"| B5 service memory (RSS, sampled every 20 ms) | {res['rss_before_mb']:.0f} MB "
            f"before, peak {res['rss_peak_mb']:.0f} MB (+{growth:.0f} MB), "
            f"{res['rss_after_mb']:.0f} MB after | flat | "
            f"{'**met**' if growth < 64 else '**not met**'} |",
            "",
            "CPU cores during the measured export, server / PostgreSQL / - / other (all): "
            f"{cpu.describe()}; the client runs in the benchmark's own process, so it is "
            "part of other.",
            "",
            "How it streams: chunks of 20,000 ids, each one `COPY (SELECT ...) TO STDOUT` on "
            "a plain asyncpg connection, read whole (a few MB) and queued at most two ahead "
            "of the client, so memory is bounded by the chunk size whatever the set's size, "
            "and no statement or transaction stays open while the client reads. PostgreSQL "
            "formats the CSV and neutralises formula cells; Python passes bytes through.",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-docs", action="store_true", help="print, do not write the docs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    idle = background_load()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        workdir = Path(tmp)
        try:
            with embedded_postgres(workdir) as server:
                info = machine(server)
                res = run_b5(server, workdir, rows=args.rows)
        except Exception:
            print(tail(workdir / "export-service.log"), file=sys.stderr)
            raise
    section = render(res, info, idle, (time.monotonic() - started) / 60)
    print("\n" + section)
    if not args.no_docs:
        write_section(DOCS, SECTION, section, INTRO)
        print(f"written to {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The delivery benchmark (target B3): ``make bench-delivery``.

``.venv/bin/python -m bench.delivery`` starts a throw-away embedded PostgreSQL and, on
that one server, in one run:

1. anchor: the set-based SQL that pairs N targets with N free codes by row number and
   writes them in one UPDATE (no HTTP, no audit, one transaction);
2. service: ``POST /v1/deliveries/{id}/confirm`` of the real service for a delivery of N
   targets on a pool of N codes, timed from the request until the delivery is
   ``finished`` (polled), with the service's peak memory;
3. messages: ``GET /v1/deliveries/{id}/messages?format=jsonl`` of the finished delivery,
   streamed and counted, with the service's peak memory.

Codes and targets are written straight into the tables (the benchmark is the confirm,
not the upload). Both pools live in the same ``codes`` table, with its real indexes.
The figures go to the "Delivery confirm (B3)" section of docs/benchmarks.md."""

import argparse
import datetime as dt
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.assign import INTRO, SERVICE_DB, service
from bench.harness import (
    ROOT,
    MemorySampler,
    connect,
    embedded_postgres,
    machine,
    write_section,
)

DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Delivery confirm (B3)"
B3_VS_ANCHOR = 1.0
B3_MOONSHOT = 0.5
B3_RSS_MB = 300

# The anchor: every target paired with a free code by row number, in one statement.
ANCHOR = """
WITH targets AS (
    SELECT recipient_id, row_number() OVER (ORDER BY seq) AS rn FROM anchor_targets
), free AS MATERIALIZED (
    SELECT id FROM codes WHERE pool_id = $1 AND status = 'available'
    ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
), numbered AS (
    SELECT id, row_number() OVER (ORDER BY id) AS rn FROM free
)
UPDATE codes c SET status = 'assigned', recipient_id = targets.recipient_id,
       assigned_at = now()
FROM numbered JOIN targets USING (rn)
WHERE c.id = numbered.id
"""


def fill_codes(dsn: str, set_id: str, pool_id: str, prefix: str, count: int) -> None:
    with connect(dsn) as db:
        db.execute(
            """INSERT INTO codes (set_id, pool_id, code, lookup)
               SELECT $1::uuid, $2::uuid, $3 || lpad(g::text, 9, '0'),
                      lower(replace($3, '-', '')) || lpad(g::text, 9, '0')
               FROM generate_series(1, $4) g""",
            set_id,
            pool_id,
            prefix,
            count,
        )


def peak_rss_mb(pid: int) -> float:
    """The process's highest resident memory since it started (VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmHWM:\s*(\d+)", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else 0.0


def measure_anchor(dsn: str, pool_id: str, count: int) -> float:
    with connect(dsn) as db:
        db.execute("CREATE TABLE anchor_targets (seq bigserial PRIMARY KEY, recipient_id text)")
        db.execute(
            "INSERT INTO anchor_targets (recipient_id) "
            "SELECT 'a' || g FROM generate_series(1, $1) g",
            count,
        )
        db.execute("VACUUM ANALYZE codes")
        db.execute("VACUUM ANALYZE anchor_targets")
        started = time.perf_counter()
        result = db.execute(ANCHOR, pool_id, count)
        elapsed = time.perf_counter() - started
    assert result == f"UPDATE {count}", result
    return elapsed


def run(count: int, workdir: Path) -> dict[str, Any]:
    with embedded_postgres(workdir) as server, service(server, workdir) as svc:
        dsn = server.dsn(SERVICE_DB)
        results: dict[str, Any] = {"count": count, "machine": machine(server)}
        results["source"] = svc.source
        anchor_set = svc.call("POST", "/v1/coupon-sets", {"label": "anchor", "key": "anchor"})
        anchor_pool = svc.call("GET", "/v1/coupon-sets/anchor/pools")["items"][0]["id"]
        fill_codes(dsn, anchor_set["id"], anchor_pool, "ANC", count)
        print(f"anchor: pairing {count:,} targets with codes in one statement...")
        results["anchor_s"] = measure_anchor(dsn, anchor_pool, count)
        print(f"  {results['anchor_s']:.1f} s")

        b3_set = svc.call("POST", "/v1/coupon-sets", {"label": "b3", "key": "b3"})
        b3_pool = svc.call("GET", "/v1/coupon-sets/b3/pools")["items"][0]["id"]
        fill_codes(dsn, b3_set["id"], b3_pool, "DLV", count)
        delivery = svc.call(
            "POST",
            "/v1/deliveries",
            {
                "label": "b3",
                "coupon_set_id": "b3",
                "subject": "{{ coupon_set.label }} for you",
                "template": "Hello {{ recipient.recipient_id }}, your code: {{ coupon.code }}",
            },
        )
        with connect(dsn) as db:
            db.execute(
                """INSERT INTO delivery_recipients (delivery_id, recipient_id, address)
                   SELECT $1::uuid, 'r' || g, 'r' || g || '@example.com'
                   FROM generate_series(1, $2) g""",
                delivery["id"],
                count,
            )
            db.execute(
                "UPDATE deliveries SET recipient_count = $2 WHERE id = $1::uuid",
                delivery["id"],
                count,
            )
            db.execute("VACUUM ANALYZE")
        pid = svc.proc.pid
        print(f"service: confirming a delivery of {count:,} targets...")
        with MemorySampler(pid) as confirm_memory:
            started = time.perf_counter()
            response = svc.http.post(f"/v1/deliveries/{delivery['id']}/confirm")
            if response.status_code not in (200, 202):
                raise RuntimeError(f"confirm: {response.status_code} {response.text}")
            while (body := svc.call("GET", f"/v1/deliveries/{delivery['id']}"))[
                "status"
            ] == "sending":
                time.sleep(0.25)
            results["service_s"] = time.perf_counter() - started
        if body["status"] != "finished" or body["assigned"] != count:
            raise RuntimeError(f"the delivery ended {body['status']}: {body}")
        results["rss_before_mb"] = confirm_memory.before_kb / 1024
        results["confirm_rss_mb"] = confirm_memory.peak_kb / 1024
        print(f"  {results['service_s']:.1f} s, peak RSS {results['confirm_rss_mb']:.0f} MB")

        print("messages: streaming the rendered messages...")
        with MemorySampler(pid) as messages_memory:
            started = time.perf_counter()
            with svc.http.stream(
                "GET", f"/v1/deliveries/{delivery['id']}/messages", params={"format": "jsonl"}
            ) as stream:
                lines = sum(1 for line in stream.iter_lines() if line)
            results["messages_s"] = time.perf_counter() - started
        results["messages"] = lines
        results["messages_rss_mb"] = messages_memory.peak_kb / 1024
        results["peak_rss_mb"] = peak_rss_mb(pid)
        print(f"  {lines:,} messages in {results['messages_s']:.1f} s")
        with connect(dsn) as db:
            results["assigned_rows"] = db.value(
                "SELECT count(DISTINCT recipient_id) FROM codes WHERE pool_id = $1::uuid",
                b3_pool,
            )
    return results


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    ratio = res["service_s"] / res["anchor_s"]
    ok = ratio <= B3_VS_ANCHOR and res["confirm_rss_mb"] <= B3_RSS_MB
    verdict = "met" if ok else "not met"
    moon = "met" if ratio <= B3_MOONSHOT else "not met"
    count = res["count"]
    return f"""{SECTION}

`make bench-delivery` ({dt.date.today().isoformat()}, {res["source"]}): {m["cpus"]} CPUs,
{m["cpu"]}, {m["ram"]}; {m["postgres"]}, the same server for every line; {m["python"]}.

| what | time | rate | service RSS |
|---|---|---|---|
| anchor: one set-based `UPDATE` pairing {count:,} targets with codes by row number | \
{res["anchor_s"]:.1f} s | {count / res["anchor_s"]:,.0f} codes/s | - |
| service: `POST /v1/deliveries/{{id}}/confirm`, {count:,} targets, until `finished` | \
{res["service_s"]:.1f} s | {count / res["service_s"]:,.0f} codes/s | \
{res["rss_before_mb"]:.0f} MB before, {res["confirm_rss_mb"]:.0f} MB peak |
| messages: `GET .../messages?format=jsonl`, rendered | {res["messages_s"]:.1f} s | \
{res["messages"] / res["messages_s"]:,.0f} messages/s | {res["messages_rss_mb"]:.0f} MB peak |

- **B3** (confirm ≤ 1.0x the anchor, RSS ≤ {B3_RSS_MB} MB): **{ratio:.2f}x**, \
peak {res["confirm_rss_mb"]:.0f} MB: **{verdict}**. Moonshot 0.5x: {moon}.
- The service does more than the anchor: an audit row per code, the delivery's
  progress, batches of its own transaction (so concurrent claims are never held up by
  one long transaction), and the check that no target already holds a code. The anchor
  writes only the codes, in one transaction, on one PostgreSQL backend; the service
  runs its batches of 20,000 targets on two connections at once
  (`COUPONS_CONFIRM_WORKERS=2`), which is what puts it ahead on two cores.
- Every target ended with exactly one code: {res["assigned_rows"]:,} distinct recipients
  in the pool after the run.
- Process peak RSS over the whole run (VmHWM): {res["peak_rss_mb"]:.0f} MB.
"""


def write_docs(section: str, path: Path = DOCS) -> None:
    """Replace this benchmark's section, keeping the intro and the other sections."""
    write_section(path, SECTION, section, INTRO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1_000_000, help="targets and codes")
    parser.add_argument("--no-docs", action="store_true", help="print, do not write the doc")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        results = run(args.targets, Path(tmp))
    section = render(results)
    print(section)
    if not args.no_docs:
        write_docs(section)
        print(f"written to {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

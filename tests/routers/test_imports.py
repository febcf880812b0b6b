"""POST/GET /v1/coupon-sets/{set}/imports: files of codes, streamed into a set."""

import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from app.settings import Settings
from tests.conftest import make_client
from tests.helpers import add_codes, codes_of, create_set, import_codes, problem_type


def reasons(job: dict[str, object]) -> dict[int, str]:
    return {e["line"]: e["reason"] for e in job["errors"]}  # type: ignore[attr-defined, index]


async def test_import_csv_with_header_answers_a_finished_job(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    response = await import_codes(client, s["key"], b"code\nAAA-1\nBBB-2\n")
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "succeeded"
    assert job["kind"] == "codes"
    assert job["format"] == "csv"
    assert job["mode"] == "partial"
    assert (job["rows_read"], job["accepted"], job["duplicates"], job["rejected"]) == (2, 2, 0, 0)
    assert job["set_id"] == s["id"]
    assert job["filename"] == "codes.csv"
    assert len(job["checksum"]) == 64
    assert job["api_key_id"] is not None
    assert job["started_at"]
    assert job["finished_at"]
    assert job["created_at"]
    assert job["error"] is None
    assert response.headers["location"] == f"/v1/coupon-sets/{s['id']}/imports/{job['id']}"
    assert sorted(c["code"] for c in await codes_of(client, s["key"])) == ["AAA-1", "BBB-2"]


async def test_bom_and_crlf_are_handled(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    job = (await import_codes(client, s["id"], b"\xef\xbb\xbfcode,note\r\nA1,x\r\nB2,y\r\n")).json()
    assert job["accepted"] == 2, job
    got = {c["code"]: c["metadata"] for c in await codes_of(client, s["id"])}
    assert got == {"A1": {"note": "x"}, "B2": {"note": "y"}}


async def test_empty_lines_are_skipped(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    job = (await import_codes(client, s["id"], b"code\n\nA1\n\n\nB2\n\n")).json()
    assert (job["rows_read"], job["accepted"], job["rejected"]) == (2, 2, 0)


async def test_nul_bytes_wrong_column_counts_and_unbalanced_quotes_are_rejected_by_line(
    client: httpx.AsyncClient,
) -> None:
    s = await create_set(client)
    content = (
        b'code,note\nOK-1,a\nBAD\x00X,b\nOK-2\nOK-3,a,b\n"OK,4",c\n"BROKEN"x,d\nOK-5,e\n"OPEN,f\n'
    )
    job = (await import_codes(client, s["id"], content)).json()
    assert job["accepted"] == 3, job  # OK-1, "OK,4", OK-5
    errors = reasons(job)
    assert errors[3] == "contains control characters or unpaired surrogates"
    assert errors[4] == "expected 2 columns, found 1"
    assert errors[5] == "expected 2 columns, found 3"
    assert errors[7].startswith("malformed CSV")
    assert errors[9].startswith("malformed CSV")
    assert job["rejected"] == 5
    assert sorted(c["code"] for c in await codes_of(client, s["id"])) == ["OK,4", "OK-1", "OK-5"]


async def test_duplicates_within_the_file_and_against_the_set_are_reported(
    client: httpx.AsyncClient,
) -> None:
    s = await create_set(client)
    await add_codes(client, s["id"], ["OLD-1"])
    job = (await import_codes(client, s["id"], b"code\nNEW-1\nold 1\nNEW-2\nnew-1\n")).json()
    assert (job["accepted"], job["duplicates"], job["rejected"]) == (2, 2, 0), job
    assert reasons(job) == {3: "already in the set", 5: "duplicate of line 2"}
    # The first occurrence wins.
    assert "NEW-1" in {c["code"] for c in await codes_of(client, s["id"])}


async def test_duplicates_across_files(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    await import_codes(client, s["id"], b"code\nA1\nB2\n")
    job = (await import_codes(client, s["id"], b"code\nB2\nC3\n")).json()
    assert (job["accepted"], job["duplicates"]) == (1, 1)


async def test_column_mapping_pool_column_and_metadata(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    r = await client.post(f"/v1/coupon-sets/{s['id']}/pools", json={"name": "vip"})
    assert r.status_code == 201, r.text
    content = b"ref;voucher;tier;campaign\n1;V-1;vip;spring\n2;V-2;;summer\n3;V-3;gold;x\n"
    job = (
        await import_codes(
            client,
            s["id"],
            content,
            delimiter=";",
            code_column="voucher",
            pool_column="3",
        )
    ).json()
    assert job["accepted"] == 2, job
    assert reasons(job) == {4: "unknown pool 'gold'"}
    got = {c["code"]: (c["pool"], c["metadata"]) for c in await codes_of(client, s["id"])}
    assert got == {
        "V-1": ("vip", {"ref": "1", "campaign": "spring"}),
        "V-2": ("default", {"ref": "2", "campaign": "summer"}),
    }


async def test_no_header_takes_the_first_column_and_numbers_the_rest(
    client: httpx.AsyncClient,
) -> None:
    s = await create_set(client)
    job = (await import_codes(client, s["id"], b"A1,x\nB2,y\n", header="false")).json()
    assert job["accepted"] == 2, job
    got = {c["code"]: c["metadata"] for c in await codes_of(client, s["id"])}
    assert got == {"A1": {"2": "x"}, "B2": {"2": "y"}}


@pytest.mark.parametrize("field", ["delimiter", "quotechar"])
async def test_an_empty_delimiter_is_refused_not_taken_as_a_comma(
    client: httpx.AsyncClient, field: str
) -> None:
    s = await create_set(client)
    response = await import_codes(client, s["id"], b"code\nA1\n", **{field: ""})
    assert response.status_code == 422
    assert problem_type(response) == "validation-error"
    assert response.json()["errors"][0]["loc"] == ["body", field]
    assert await codes_of(client, s["id"]) == []


async def test_an_unknown_column_is_a_validation_problem(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    response = await import_codes(client, s["id"], b"code\nA1\n", code_column="voucher")
    assert response.status_code == 422
    assert problem_type(response) == "validation-error"
    history = (await client.get(f"/v1/coupon-sets/{s['id']}/imports")).json()["items"]
    assert history[0]["status"] == "failed"


async def test_quoted_line_breaks_and_undecodable_bytes(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    content = b'code,note\r\n"A1","two\r\nlines"\r\nB\xff2,x\r\nC3,"bad \xfe"\r\nD4,y\r\n'
    job = (await import_codes(client, s["id"], content)).json()
    assert job["accepted"] == 2, job
    assert reasons(job) == {
        4: "contains control characters or unpaired surrogates",
        5: "a metadata column holds NUL characters or undecodable bytes",
    }
    got = {c["code"]: c["metadata"] for c in await codes_of(client, s["id"])}
    assert got["A1"] == {"note": "two\r\nlines"}


async def test_other_encodings(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    content = "code\nCAFÉ-1\n".encode("latin-1")
    job = (await import_codes(client, s["id"], content, encoding="latin-1")).json()
    assert job["accepted"] == 1
    assert (await codes_of(client, s["id"]))[0]["code"] == "CAFÉ-1"


async def test_an_encoding_that_names_no_codec_is_refused(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    for encoding in ("klingon", "utf\x008"):
        response = await import_codes(client, s["id"], b"code\nA1\n", encoding=encoding)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"] == ["body", "encoding"]


async def test_form_flags_are_true_or_false(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    response = await import_codes(client, s["id"], b"code\nA1\n", force="1")
    assert response.status_code == 422, response.text
    response = await import_codes(client, s["id"], b"code\nA1\n", header="TRUE")
    assert response.json()["accepted"] == 1


async def test_text_plain_is_one_code_per_line(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    response = await import_codes(
        client,
        s["id"],
        b"A1\r\n\r\n  B2  \nA1\n",
        filename="list.txt",
        content_type="text/plain",
    )
    job = response.json()
    assert job["format"] == "text"
    assert (job["accepted"], job["duplicates"]) == (2, 1)


async def test_all_or_nothing_brings_nothing_in_when_a_row_is_rejected(
    client: httpx.AsyncClient,
) -> None:
    s = await create_set(client)
    job = (
        await import_codes(client, s["id"], b"code\nA1\n\x01\nB2\n", mode="all_or_nothing")
    ).json()
    assert job["status"] == "failed"
    assert job["accepted"] == 0
    assert job["rejected"] == 1
    assert "all_or_nothing" in job["error"]
    assert await codes_of(client, s["id"]) == []
    ok = (await import_codes(client, s["id"], b"code\nA1\nB2\n", mode="all_or_nothing")).json()
    assert ok["status"] == "succeeded"
    assert ok["accepted"] == 2


async def test_the_same_content_again_answers_the_first_job(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    first = await import_codes(client, s["id"], b"code\nA1\nB2\n")
    again = await import_codes(client, s["id"], b"code\nA1\nB2\n", filename="other.csv")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    history = (await client.get(f"/v1/coupon-sets/{s['id']}/imports")).json()["items"]
    assert len(history) == 1
    forced = await import_codes(client, s["id"], b"code\nA1\nB2\n", force="true")
    assert forced.status_code == 201
    assert forced.json()["duplicates"] == 2


async def test_idempotency_key_replays_the_job(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await import_codes(client, s["id"], b"code\nA1\n", headers=key)
    again = await import_codes(client, s["id"], b"code\nA1\n", headers=key)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = await import_codes(client, s["id"], b"code\nZZ\n", headers=key)
    assert other.status_code == 422
    assert problem_type(other) == "idempotency-key-reused"


async def test_history_job_and_error_report(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    first = (await import_codes(client, s["id"], b"code\nA1\n")).json()
    second = (await import_codes(client, s["id"], b"code\n=cmd\nA1\n\x02\n")).json()
    page = (await client.get(f"/v1/coupon-sets/{s['key']}/imports", params={"limit": 1})).json()
    assert [j["id"] for j in page["items"]] == [second["id"]]
    rest = await client.get(
        f"/v1/coupon-sets/{s['key']}/imports", params={"cursor": page["next_cursor"]}
    )
    assert [j["id"] for j in rest.json()["items"]] == [first["id"]]
    got = await client.get(f"/v1/coupon-sets/{s['key']}/imports/{second['id']}")
    assert got.status_code == 200
    assert got.json()["accepted"] == 1
    report = await client.get(f"/v1/coupon-sets/{s['key']}/imports/{second['id']}/errors.csv")
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/csv")
    assert report.text.splitlines() == [
        "line,code,reason",
        "3,A1,already in the set",
        "4,\ufffd,contains control characters or unpaired surrogates",
    ]
    missing = await client.get(f"/v1/coupon-sets/{s['key']}/imports/{uuid.uuid4()}")
    assert missing.status_code == 404


async def test_formula_like_codes_are_defused_in_the_report(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    await add_codes(client, s["id"], ["=SUM(A1)"])
    job = (await import_codes(client, s["id"], b"code\n=SUM(A1)\n")).json()
    report = await client.get(f"/v1/coupon-sets/{s['id']}/imports/{job['id']}/errors.csv")
    assert report.text.splitlines()[1] == "2,'=SUM(A1),already in the set"


async def test_a_read_key_cannot_import(
    client: httpx.AsyncClient, key_client: Callable[..., Awaitable[httpx.AsyncClient]]
) -> None:
    s = await create_set(client)
    async with await key_client("read") as reader:
        response = await import_codes(reader, s["id"], b"code\nA1\n")
        assert response.status_code == 403
        assert (await reader.get(f"/v1/coupon-sets/{s['id']}/imports")).status_code == 200


async def test_wrong_content_types_are_415(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    as_json = await client.post(f"/v1/coupon-sets/{s['id']}/imports", json={"codes": ["A"]})
    assert as_json.status_code == 415
    assert problem_type(as_json) == "unsupported-media-type"
    image = await import_codes(
        client, s["id"], b"\x89PNG", filename="a.png", content_type="image/png"
    )
    assert image.status_code == 415


async def test_shared_sets_take_no_imports(client: httpx.AsyncClient) -> None:
    s = await create_set(client, kind="shared", shared_code="SPRING")
    response = await import_codes(client, s["id"], b"code\nA1\n")
    assert response.status_code == 409
    assert problem_type(response) == "wrong-set-kind"


async def test_uploads_over_the_limit_are_413(settings: Settings, database_url: str) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 2048, "max_body_bytes": 1024})
    application = create_app(small, database_url=database_url)
    async with LifespanManager(application), make_client(application) as http:
        s = await create_set(http)
        big = b"code\n" + b"ABCDEFGH\n" * 400
        response = await import_codes(http, s["id"], big)
        assert response.status_code == 413
        assert problem_type(response) == "payload-too-large"
        # Over the global limit but under the upload one: accepted.
        fine = await import_codes(http, s["id"], b"code\n" + b"A\n" * 300)
        assert fine.status_code == 201, fine.text


async def test_xml_with_pools_and_metadata(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    content = b"""<?xml version="1.0" encoding="UTF-8"?>
<codes>
  <code campaign="spring">X-1</code>
  <code pool="default"><![CDATA[X-2]]><note>hello</note></code>
  <code></code>
</codes>"""
    response = await import_codes(
        client, s["id"], content, filename="c.xml", content_type="application/xml"
    )
    job = response.json()
    assert job["format"] == "xml"
    assert (job["accepted"], job["rejected"]) == (2, 1), job
    assert reasons(job) == {5: "empty"}
    got = {c["code"]: c["metadata"] for c in await codes_of(client, s["id"])}
    assert got == {"X-1": {"campaign": "spring"}, "X-2": {"note": "hello"}}


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<codes><code>&lol9;</code></codes>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE codes [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<codes><code>&xxe;</code></codes>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE codes SYSTEM "http://127.0.0.1:9/evil.dtd">
<codes><code>A</code></codes>"""


@pytest.mark.parametrize("content", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD])
async def test_xml_entities_and_dtds_are_refused(client: httpx.AsyncClient, content: bytes) -> None:
    s = await create_set(client)
    response = await import_codes(
        client, s["id"], content, filename="c.xml", content_type="application/xml"
    )
    job = response.json()
    assert job["status"] == "failed", job
    assert "forbidden XML" in job["error"]
    assert await codes_of(client, s["id"]) == []


async def test_malformed_xml_fails_the_job(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    job = (await import_codes(client, s["id"], b"<codes><code>A</codes>", format="xml")).json()
    assert job["status"] == "failed"
    assert job["error"].startswith("malformed XML")


# Without a repeat the rows go straight into codes; a repeat takes the staged path.
async def test_audit_has_one_row_per_import(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    await import_codes(client, s["id"], b"code\nA1\nB2\nC3\n")
    events = (
        await client.get(f"/v1/coupon-sets/{s['id']}/audit", params={"action": "import_codes"})
    ).json()["items"]
    assert len(events) == 1
    assert events[0]["details"]["accepted"] == 3

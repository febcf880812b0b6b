import csv
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.helpers import add_codes, assign, create_set, problem_type, redeem

TEMPLATE = (
    "Hello {{ recipient.first_name | default('there') }},\n"
    "your code for {{ coupon_set.label }}: {{ coupon.code }}"
)


async def create_delivery(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"label": "Spring mailing", "coupon_set_id": "spring", **fields}
    response = await client.post("/v1/deliveries", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def add_targets(
    client: httpx.AsyncClient, delivery_id: str, targets: list[dict[str, Any]]
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/deliveries/{delivery_id}/recipients", json={"recipients": targets}
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def post_csv(client: httpx.AsyncClient, delivery_id: str, body: bytes) -> httpx.Response:
    return await client.post(
        f"/v1/deliveries/{delivery_id}/recipients",
        content=body,
        headers={"Content-Type": "text/csv"},
    )


def targets(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"recipient_id": f"r{n}", "address": f"r{n}@example.com", "fields": {"first_name": f"N{n}"}}
        for n in range(start, start + count)
    ]


async def confirm(client: httpx.AsyncClient, delivery_id: str) -> httpx.Response:
    return await client.post(f"/v1/deliveries/{delivery_id}/confirm")


async def codes_by_status(client: httpx.AsyncClient, status: str) -> list[dict[str, Any]]:
    response = await client.get(
        "/v1/coupon-sets/spring/codes", params={"status": status, "limit": 200}
    )
    assert response.status_code == 200
    return response.json()["items"]  # type: ignore[no-any-return]


@pytest.fixture
async def spring(client: httpx.AsyncClient) -> None:
    await create_set(client, key="spring", label="Spring sale")
    await add_codes(client, "spring", [f"SPRING-{n:03d}" for n in range(10)])


@pytest.mark.usefixtures("spring")
async def test_sufficient_flow_assigns_every_target_and_exports_messages(
    client: httpx.AsyncClient,
) -> None:
    delivery = await create_delivery(client, template=TEMPLATE, subject="{{ coupon_set.label }}")
    assert delivery["status"] == "draft"
    assert delivery["pool"] == "default"
    added = await add_targets(client, delivery["id"], targets(6))
    assert added == {
        "received": 6,
        "added": 6,
        "duplicates": 0,
        "rejected": 0,
        "errors": [],
        "recipients": 6,
    }
    analysis = (await client.post(f"/v1/deliveries/{delivery['id']}/analyze")).json()
    assert analysis["messages"] == 6
    assert analysis["codes_needed"] == 6
    assert analysis["codes_available"] == 10
    assert analysis["enough"] is True
    assert analysis["shortfall"] == 0
    assert analysis["pools"] == [{"pool": "default", "available": 10}]
    assert any("Enough codes" in line for line in analysis["log"])
    assert (await client.get(f"/v1/deliveries/{delivery['id']}")).json()["status"] == "analyzed"

    confirmed = await confirm(client, delivery["id"])
    assert confirmed.status_code == 200, confirmed.text
    body = confirmed.json()
    assert body["status"] == "finished"
    assert (body["messages"], body["assigned"], body["kept"], body["processed"]) == (6, 6, 0, 6)
    assigned = await codes_by_status(client, "assigned")
    assert sorted(c["recipient_id"] for c in assigned) == [f"r{n}" for n in range(6)]
    assert {c["code"] for c in assigned} == {f"SPRING-{n:03d}" for n in range(6)}

    exported = await client.get(f"/v1/deliveries/{delivery['id']}/messages")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["recipient_id"] for r in rows] == [f"r{n}" for n in range(6)]
    by_recipient = {c["recipient_id"]: c["code"] for c in assigned}
    for row in rows:
        assert row["code"] == by_recipient[row["recipient_id"]]
        assert row["subject"] == "Spring sale"
        number = row["recipient_id"][1:]
        assert row["body"] == f"Hello N{number},\nyour code for Spring sale: {row['code']}"

    lines = (await client.get(f"/v1/deliveries/{delivery['id']}/messages?format=jsonl")).text
    first = json.loads(lines.splitlines()[0])
    assert first.keys() == {"recipient_id", "address", "code", "subject", "body"}
    assert first["address"] == "r0@example.com"


@pytest.mark.usefixtures("spring")
async def test_insufficient_codes_refuse_confirm_then_a_message_limit_fits(
    client: httpx.AsyncClient,
) -> None:
    delivery = await create_delivery(client, template="{{ coupon.code }}")
    await add_targets(client, delivery["id"], targets(14))
    analysis = (await client.post(f"/v1/deliveries/{delivery['id']}/analyze")).json()
    assert (analysis["enough"], analysis["shortfall"], analysis["codes_needed"]) == (False, 4, 14)
    assert any("message_limit of at most 10" in line for line in analysis["log"])

    refused = await confirm(client, delivery["id"])
    assert refused.status_code == 409
    assert problem_type(refused) == "insufficient-codes"
    assert refused.json()["shortfall"] == 4
    assert len(await codes_by_status(client, "available")) == 10  # nothing was taken
    assert (await client.get(f"/v1/deliveries/{delivery['id']}")).json()["status"] != "sending"

    limited = await client.patch(f"/v1/deliveries/{delivery['id']}", json={"message_limit": 8})
    assert limited.status_code == 200
    assert limited.json()["status"] == "draft"
    analysis = (await client.post(f"/v1/deliveries/{delivery['id']}/analyze")).json()
    assert (analysis["messages"], analysis["enough"]) == (8, True)
    confirmed = await confirm(client, delivery["id"])
    assert confirmed.json()["status"] == "finished"
    assigned = await codes_by_status(client, "assigned")
    assert sorted(c["recipient_id"] for c in assigned) == sorted(f"r{n}" for n in range(8))
    rows = (await client.get(f"/v1/deliveries/{delivery['id']}/messages?format=jsonl")).text
    assert len(rows.splitlines()) == 8


@pytest.mark.usefixtures("spring")
async def test_recipients_holding_a_code_keep_it(client: httpx.AsyncClient) -> None:
    held = (await assign(client, "spring", "r1")).json()["code"]
    delivery = await create_delivery(client, template="{{ coupon.code }}")
    await add_targets(client, delivery["id"], targets(3))
    analysis = (await client.post(f"/v1/deliveries/{delivery['id']}/analyze")).json()
    assert (analysis["already_holding"], analysis["codes_needed"]) == (1, 2)

    before = await client.get(
        f"/v1/deliveries/{delivery['id']}/preview", params={"recipient_id": "r1"}
    )
    assert before.json()["code"] == held
    assert before.json()["code_source"] == "kept"
    placeholder = await client.get(
        f"/v1/deliveries/{delivery['id']}/preview", params={"recipient_id": "r2"}
    )
    assert placeholder.json()["code"] is None
    assert placeholder.json()["code_source"] == "placeholder"
    assert placeholder.json()["body"] == "[coupon code: assigned at confirm]"

    body = (await confirm(client, delivery["id"])).json()
    assert (body["assigned"], body["kept"]) == (2, 1)
    after = await client.get(
        f"/v1/deliveries/{delivery['id']}/preview", params={"recipient_id": "r2"}
    )
    assert after.json()["code_source"] == "assigned"
    assert after.json()["body"] == after.json()["code"]
    assert len(await codes_by_status(client, "assigned")) == 3


@pytest.mark.usefixtures("spring")
async def test_confirm_is_idempotent(client: httpx.AsyncClient) -> None:
    delivery = await create_delivery(client)
    await add_targets(client, delivery["id"], targets(4))
    first = await confirm(client, delivery["id"])
    second = await confirm(client, delivery["id"])
    assert second.status_code == 200
    assert second.json()["status"] == "finished"
    assert second.json()["assigned"] == first.json()["assigned"] == 4
    assert second.json()["confirmed_at"] == first.json()["confirmed_at"]
    assert len(await codes_by_status(client, "assigned")) == 4
    audit = (await client.get("/v1/coupon-sets/spring/audit", params={"limit": 200})).json()
    assert sum(1 for e in audit["items"] if e["action"] == "assign") == 4


@pytest.mark.usefixtures("spring")
async def test_failures_give_codes_back(client: httpx.AsyncClient) -> None:
    held = (await assign(client, "spring", "r0")).json()["code"]
    delivery = await create_delivery(client, template="{{ coupon.code }}")
    await add_targets(client, delivery["id"], targets(4))
    early = await client.post(
        f"/v1/deliveries/{delivery['id']}/failures", json={"recipient_ids": ["r1"]}
    )
    assert early.status_code == 409
    assert problem_type(early) == "delivery-not-finished"
    await confirm(client, delivery["id"])

    reported = await client.post(
        f"/v1/deliveries/{delivery['id']}/failures",
        json={"recipient_ids": ["r0", "r1", "r2", "nobody"]},
    )
    assert reported.status_code == 200, reported.text
    assert reported.json() == {
        "returned": 2,
        "kept": ["r0"],
        "unknown": ["nobody"],
        "failed_messages": 3,
    }
    again = await client.post(
        f"/v1/deliveries/{delivery['id']}/failures", json={"recipient_ids": ["r1"]}
    )
    assert again.json()["returned"] == 0
    assert again.json()["failed_messages"] == 3
    assigned = {c["recipient_id"]: c["code"] for c in await codes_by_status(client, "assigned")}
    assert assigned.keys() == {"r0", "r3"}
    assert assigned["r0"] == held
    assert len(await codes_by_status(client, "available")) == 8
    rows = (await client.get(f"/v1/deliveries/{delivery['id']}/messages?format=jsonl")).text
    assert [json.loads(line)["recipient_id"] for line in rows.splitlines()] == ["r3"]
    delivery_now = (await client.get(f"/v1/deliveries/{delivery['id']}")).json()
    assert (delivery_now["assigned"], delivery_now["failed_messages"]) == (1, 3)
    audit = (await client.get("/v1/coupon-sets/spring/audit", params={"limit": 200})).json()
    assert sum(1 for e in audit["items"] if e["action"] == "unassign") == 2


async def test_shared_set_delivery_gives_everyone_the_shared_code(
    client: httpx.AsyncClient,
) -> None:
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME15")
    refused = await client.post(
        "/v1/deliveries", json={"label": "x", "coupon_set_id": "welcome", "pool": "default"}
    )
    assert refused.status_code == 409
    delivery = await create_delivery(client, coupon_set_id="welcome", template="{{ coupon.code }}")
    assert delivery["pool"] is None
    await add_targets(client, delivery["id"], targets(3))
    preview = await client.get(
        f"/v1/deliveries/{delivery['id']}/preview", params={"recipient_id": "r0"}
    )
    assert preview.json()["code"] == "WELCOME15"
    body = (await confirm(client, delivery["id"])).json()
    assert (body["status"], body["assigned"]) == ("finished", 3)
    listed = (await client.get("/v1/coupon-sets/welcome/assignments")).json()["items"]
    assert sorted(a["recipient_id"] for a in listed) == ["r0", "r1", "r2"]
    rows = (await client.get(f"/v1/deliveries/{delivery['id']}/messages?format=jsonl")).text
    assert {json.loads(line)["body"] for line in rows.splitlines()} == {"WELCOME15"}


async def test_a_shared_code_used_up_is_a_shortfall_and_refuses_the_confirm(
    client: httpx.AsyncClient,
) -> None:
    await create_set(
        client, key="few", kind="shared", shared_code="FEW5", max_uses=3, per_recipient_limit=1
    )
    for shopper in ("r0", "x1"):  # r0 is a target: its one use is gone
        assert (await redeem(client, "FEW5", recipient_id=shopper)).status_code == 201
    delivery = await create_delivery(client, coupon_set_id="few", template="{{ coupon.code }}")
    await add_targets(client, delivery["id"], targets(2))  # r0, r1
    analysis = (await client.post(f"/v1/deliveries/{delivery['id']}/analyze")).json()
    assert analysis["enough"] is False
    assert (analysis["codes_needed"], analysis["codes_available"]) == (2, 1)
    assert analysis["shortfall"] == 2  # one use missing, and r0 can use it no more
    assert any("per_recipient_limit" in line for line in analysis["log"])
    refused = await confirm(client, delivery["id"])
    assert refused.status_code == 409
    assert problem_type(refused) == "insufficient-codes"
    assert (await client.get("/v1/coupon-sets/few/assignments")).json()["items"] == []

    # One target, who has not used it, fits the one use left.
    await client.patch(f"/v1/deliveries/{delivery['id']}", json={"message_limit": 0})
    ok = await create_delivery(client, coupon_set_id="few", template="{{ coupon.code }}")
    await add_targets(client, ok["id"], targets(1, start=1))  # r1
    analysis = (await client.post(f"/v1/deliveries/{ok['id']}/analyze")).json()
    assert (analysis["enough"], analysis["shortfall"]) == (True, 0)
    assert (await confirm(client, ok["id"])).json()["status"] == "finished"


@pytest.mark.usefixtures("spring")
async def test_targets_are_deduplicated_and_checked(client: httpx.AsyncClient) -> None:
    delivery = await create_delivery(client)
    first = await add_targets(client, delivery["id"], targets(3))
    assert first["added"] == 3
    second = await add_targets(
        client,
        delivery["id"],
        [
            *targets(2, start=2),
            {"recipient_id": "r9"},
            {"recipient_id": "r9"},
            {"recipient_id": "big", "fields": {"x": "y" * 20_000}},
        ],
    )
    assert (second["received"], second["added"], second["duplicates"]) == (5, 2, 2)
    assert second["rejected"] == 1
    assert second["errors"][0]["line"] == 4
    assert second["recipients"] == 5
    invalid = await client.post(
        f"/v1/deliveries/{delivery['id']}/recipients", json={"recipients": [{"address": "a"}]}
    )
    assert invalid.status_code == 422
    assert problem_type(invalid) == "validation-error"
    unknown_field = await client.post(
        f"/v1/deliveries/{delivery['id']}/recipients",
        json={"recipients": [{"recipient_id": "a", "admin": True}]},
    )
    assert unknown_field.status_code == 422


@pytest.mark.usefixtures("spring")
async def test_targets_from_csv(client: httpx.AsyncClient) -> None:
    delivery = await create_delivery(
        client, template="{{ recipient.first_name }}/{{ recipient.city }}"
    )
    text = (
        "\ufeffrecipient_id,address,first_name,city\r\n"
        "c1,c1@example.com,Ann,Paris\r\n"
        "\r\n"
        'c2,c2@example.com,"Bo, the ""second""",Rome\r\n'
        "c3,c3@example.com,too few\r\n"
        ",nobody@example.com,X,Y\r\n"
        "c1,again@example.com,Ann,Paris\r\n"
        'c4,c4@example.com,"multi\nline",Oslo\r\n'
        "c5,c5@example.com,Zed\x00,Lima\r\n"
        'c6,c6@example.com,"never closed,Bern\r\n'
    )
    response = await post_csv(client, delivery["id"], text.encode())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["added"], body["duplicates"], body["rejected"]) == (3, 1, 4)
    assert [e["line"] for e in body["errors"]] == [5, 6, 10, 11]
    reasons = [e["reason"] for e in body["errors"]]
    assert reasons[0] == "3 columns where the header has 4"
    assert reasons[1] == "recipient_id is empty"
    assert reasons[2] == "contains a NUL character"
    assert reasons[3].startswith("unbalanced quotes")
    preview = await client.get(
        f"/v1/deliveries/{delivery['id']}/preview", params={"recipient_id": "c2"}
    )
    assert preview.json()["body"] == 'Bo, the "second"/Rome'
    multi = await client.get(
        f"/v1/deliveries/{delivery['id']}/preview", params={"recipient_id": "c4"}
    )
    assert multi.json()["body"] == "multi\nline/Oslo"

    no_header = await post_csv(client, delivery["id"], b"address\nx@example.com\n")
    assert no_header.status_code == 422
    wrong_type = await client.post(
        f"/v1/deliveries/{delivery['id']}/recipients",
        content=b"<targets/>",
        headers={"Content-Type": "application/xml"},
    )
    assert wrong_type.status_code == 415
    assert problem_type(wrong_type) == "unsupported-media-type"
    latin1 = await post_csv(client, delivery["id"], "recipient_id\nJosé\n".encode("latin-1"))
    assert latin1.status_code == 422


@pytest.mark.usefixtures("spring")
@pytest.mark.parametrize(
    ("template", "line"),
    [
        ("ok\n{{ ''.__class__.__mro__ }}", 2),
        ("{{ coupon.__class__ }}", 1),
        ("{% for x in recipient %}{{ x }}{% endfor %}", 1),
        ("{{ range(100000) | length }}", 1),
        ("{{ 'a' * 1000000000 }}", 1),
        ("{{ cycler }}", 1),
        ("{{ lipsum(1000) }}", 1),
        ("{{ self }}", 1),
        ("{% import 'x' as y %}", 1),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", 1),
        ("{{ recipient.name | center(1000000000) }}", 1),
        ("{{ recipient.name | format(1) }}", 1),
        ("{{ coupon.code.upper() }}", 1),
        ("{% set x = 1 %}", 1),
        ("\n\n{{ coupon.code ", 3),
        ("{{ copon.code }}", 1),
    ],
)
async def test_templates_that_could_escape_or_explode_are_refused(
    client: httpx.AsyncClient, template: str, line: int
) -> None:
    response = await client.post(
        "/v1/deliveries", json={"label": "x", "coupon_set_id": "spring", "template": template}
    )
    assert response.status_code == 422, response.text
    assert problem_type(response) == "template-error"
    assert response.json()["line"] == line
    assert f"line {line}" in response.json()["detail"]


@pytest.mark.usefixtures("spring")
@pytest.mark.parametrize(
    "template",
    [
        "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
        "{% if 1 %}" * 2000 + "x" + "{% endif %}" * 2000,
        "{{ " + "[" * 3000 + "]" * 3000 + " }}",
        "{{ " + "not " * 5000 + "1 }}",
        "{{ " + "- " * 5000 + "1 }}",
    ],
)
async def test_deeply_nested_templates_are_refused_not_a_crash(
    client: httpx.AsyncClient, template: str
) -> None:
    body = {"label": "x", "coupon_set_id": "spring", "template": template}
    response = await client.post("/v1/deliveries", json=body)
    assert response.status_code == 422, response.text
    assert problem_type(response) == "template-error"
    assert response.json()["field"] == "template"
    # The subject (at most 2,000 characters) is bounded alike.
    subject = "{{ " + "(" * 60 + "1" + ")" * 60 + " }}"
    body = {"label": "x", "coupon_set_id": "spring", "subject": subject}
    assert problem_type(await client.post("/v1/deliveries", json=body)) == "template-error"
    # A stored template is checked again wherever it is rendered (PATCH, preview).
    delivery = await create_delivery(client, template="{{ coupon.code }}")
    patched = await client.patch(f"/v1/deliveries/{delivery['id']}", json={"template": template})
    assert problem_type(patched) == "template-error"


@pytest.mark.usefixtures("spring")
async def test_html_templates_escape_values_and_render_errors_are_problems(
    client: httpx.AsyncClient,
) -> None:
    delivery = await create_delivery(
        client,
        content_type="html",
        template="<p>{{ recipient.first_name }} "
        "{{ coupon_set.valid_until | date('%d.%m.%Y') }}</p>",
    )
    await add_targets(
        client, delivery["id"], [{"recipient_id": "x", "fields": {"first_name": "<b>A&B</b>"}}]
    )
    preview = await client.get(
        f"/v1/deliveries/{delivery['id']}/preview", params={"recipient_id": "x"}
    )
    assert preview.json()["body"] == "<p>&lt;b&gt;A&amp;B&lt;/b&gt; </p>"
    broken = await client.patch(
        f"/v1/deliveries/{delivery['id']}", json={"template": "{{ recipient.a.b.c }}"}
    )
    assert broken.status_code == 200
    failed = await client.get(
        f"/v1/deliveries/{delivery['id']}/preview", params={"recipient_id": "x"}
    )
    assert failed.status_code == 422
    assert problem_type(failed) == "template-error"
    missing = await client.get(
        f"/v1/deliveries/{delivery['id']}/preview", params={"recipient_id": "nobody"}
    )
    assert missing.status_code == 404


@pytest.mark.usefixtures("spring")
async def test_a_confirmed_delivery_no_longer_changes(client: httpx.AsyncClient) -> None:
    delivery = await create_delivery(client)
    unfinished = await client.get(f"/v1/deliveries/{delivery['id']}/messages")
    assert unfinished.status_code == 409
    assert problem_type(unfinished) == "delivery-not-finished"
    await add_targets(client, delivery["id"], targets(2))
    await confirm(client, delivery["id"])
    patch = await client.patch(f"/v1/deliveries/{delivery['id']}", json={"label": "new"})
    assert patch.status_code == 409
    assert problem_type(patch) == "delivery-not-editable"
    more = await client.post(
        f"/v1/deliveries/{delivery['id']}/recipients", json={"recipients": [{"recipient_id": "z"}]}
    )
    assert problem_type(more) == "delivery-not-editable"


@pytest.mark.usefixtures("spring")
async def test_formula_cells_are_neutralised_in_the_csv(client: httpx.AsyncClient) -> None:
    delivery = await create_delivery(client, template="{{ recipient.note }}")
    await add_targets(
        client,
        delivery["id"],
        [{"recipient_id": "=1+1", "address": "@evil", "fields": {"note": "-2"}}],
    )
    await confirm(client, delivery["id"])
    rows = list(
        csv.reader(
            io.StringIO((await client.get(f"/v1/deliveries/{delivery['id']}/messages")).text)
        )
    )
    assert rows[1][0] == "'=1+1"
    assert rows[1][1] == "'@evil"
    assert rows[1][4] == "'-2"


async def test_refusals_unknown_set_archived_set_and_scopes(
    client: httpx.AsyncClient, key_client: Callable[..., Awaitable[httpx.AsyncClient]]
) -> None:
    missing = await client.post("/v1/deliveries", json={"label": "x", "coupon_set_id": "nope"})
    assert missing.status_code == 404
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["A1", "A2"])
    delivery = await create_delivery(client)
    await add_targets(client, delivery["id"], targets(1))
    reader = await key_client("read")
    async with reader:
        assert (await reader.get(f"/v1/deliveries/{delivery['id']}")).status_code == 200
        assert (await reader.post(f"/v1/deliveries/{delivery['id']}/confirm")).status_code == 403
        messages = await reader.get(f"/v1/deliveries/{delivery['id']}/messages")
        assert messages.status_code == 403
    await client.post("/v1/coupon-sets/spring/archive")
    archived = await confirm(client, delivery["id"])
    assert archived.status_code == 409
    assert problem_type(archived) == "set-archived"
    assert (await client.get("/v1/deliveries/not-a-uuid")).status_code == 404


async def test_list_deliveries_of_a_set(client: httpx.AsyncClient) -> None:
    await create_set(client, key="spring")
    await create_set(client, key="autumn")
    for label in ("a", "b", "c"):
        await create_delivery(client, label=label)
    await create_delivery(client, label="other", coupon_set_id="autumn")
    page = (
        await client.get("/v1/deliveries", params={"coupon_set_id": "spring", "limit": 2})
    ).json()
    assert [d["label"] for d in page["items"]] == ["c", "b"]
    rest = (
        await client.get(
            "/v1/deliveries",
            params={"coupon_set_id": "spring", "limit": 2, "cursor": page["next_cursor"]},
        )
    ).json()
    assert [d["label"] for d in rest["items"]] == ["a"]
    assert rest["next_cursor"] is None
    everything = (await client.get("/v1/deliveries")).json()["items"]
    assert len(everything) == 4
    drafts = (await client.get("/v1/deliveries", params={"status": "finished"})).json()
    assert drafts["items"] == []


@pytest.mark.usefixtures("spring")
async def test_an_unclosed_quote_does_not_swallow_the_file(client: httpx.AsyncClient) -> None:
    delivery = await create_delivery(client)
    filler = "".join(f"x{n},{'y' * 60}\n" for n in range(2_000))  # ~130 KB without a quote
    text = f'recipient_id,note\na1,"never closed\n{filler}z1,ok\n'
    response = await post_csv(client, delivery["id"], text.encode())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["errors"][0]["line"] == 2
    assert body["errors"][0]["reason"].startswith("unbalanced quotes")
    assert body["added"] > 900  # the lines after the bounded record are read again
    preview = await client.get(
        f"/v1/deliveries/{delivery['id']}/preview", params={"recipient_id": "z1"}
    )
    assert preview.status_code == 200


@pytest.mark.usefixtures("spring")
async def test_csv_targets_are_idempotent_and_may_exceed_the_json_limit(
    client: httpx.AsyncClient,
) -> None:
    delivery = await create_delivery(client)
    url = f"/v1/deliveries/{delivery['id']}/recipients"
    csv_headers = {"Content-Type": "text/csv", "Idempotency-Key": "targets-1"}
    body = "recipient_id,address\n" + "".join(
        f"t{n:06d},t{n:06d}@example.com\n" for n in range(80_000)
    )
    assert len(body) > 2_097_152  # over the ordinary body limit, under the upload limit
    first = await client.post(url, content=body.encode(), headers=csv_headers)
    assert first.status_code == 200, first.text
    assert first.json()["added"] == 80_000
    replay = await client.post(url, content=body.encode(), headers=csv_headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    other = await client.post(url, content=b"recipient_id\nx\n", headers=csv_headers)
    assert other.status_code == 422
    assert problem_type(other) == "idempotency-key-reused"

    too_big = [{"recipient_id": f"j{n}", "address": "a" * 300} for n in range(10_000)]
    refused = await client.post(url, json={"recipients": too_big})
    assert refused.status_code == 413
    assert problem_type(refused) == "payload-too-large"
    assert (await client.get(f"/v1/deliveries/{delivery['id']}")).json()["recipients"] == 80_000


@pytest.mark.usefixtures("spring")
async def test_the_target_list_shows_each_code(client: httpx.AsyncClient) -> None:
    held = (await assign(client, "spring", "r1")).json()["code"]
    delivery = await create_delivery(client)
    await add_targets(client, delivery["id"], targets(3))
    url = f"/v1/deliveries/{delivery['id']}/recipients"
    before = (await client.get(url)).json()["items"]
    assert [(t["recipient_id"], t["code"]) for t in before] == [
        ("r0", None),
        ("r1", held),
        ("r2", None),
    ]
    assert before[0]["fields"] == {"first_name": "N0"}
    await confirm(client, delivery["id"])
    await client.post(f"/v1/deliveries/{delivery['id']}/failures", json={"recipient_ids": ["r2"]})
    page = (await client.get(url, params={"limit": 2})).json()
    rest = (await client.get(url, params={"limit": 2, "cursor": page["next_cursor"]})).json()
    after = page["items"] + rest["items"]
    assert rest["next_cursor"] is None
    assert after[0]["code"] is not None
    assert after[1]["code"] == held
    assert (after[2]["code"], after[2]["failed_at"] is not None) == (None, True)

"""The import job's life: a merge that breaks, a job whose process died, a merge that
runs on after the answer."""

import uuid

import httpx
import pytest
from fastapi import FastAPI

from app.services.imports import jobs, service
from tests.helpers import codes_of, create_set, import_codes


@pytest.mark.parametrize("content", [b"code\nA1\nB2\n", b"code\nA1\nB2\nA1\n"])
async def test_a_merge_that_fails_leaves_nothing_in_codes(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    s = await create_set(client)

    async def crash(job_id: uuid.UUID) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(jobs, "before_commit", crash)
    job = (await import_codes(client, s["id"], content)).json()
    assert job["status"] == "failed"
    assert "nothing of it was kept" in job["error"]
    assert await codes_of(client, s["id"]) == []
    monkeypatch.setattr(jobs, "before_commit", None)
    # The failed job does not block a retry of the same file.
    retry = await import_codes(client, s["id"], content)
    assert retry.status_code == 201
    assert retry.json()["accepted"] == 2


async def test_a_job_left_running_by_a_dead_process_is_recovered(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    s = await create_set(client)
    job = (await import_codes(client, s["id"], b"code\nA1\n")).json()
    pool = app.state.driver_pool
    async with pool.acquire() as conn:
        # As a crash would leave it: running, and no connection holds its lock.
        await conn.execute(
            "UPDATE import_jobs SET status = 'running', finished_at = NULL WHERE id = $1",
            uuid.UUID(job["id"]),
        )
    assert await jobs.recover_interrupted(pool) == 1
    got = (await client.get(f"/v1/coupon-sets/{s['id']}/imports/{job['id']}")).json()
    assert got["status"] == "failed"
    assert got["error"] == jobs.INTERRUPTED


async def test_large_files_run_in_the_background(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "SYNC_ROWS", 10)
    s = await create_set(client)
    # A repeat sends the file down the staged path, whose merge runs after the answer.
    content = b"code\n" + b"".join(f"C-{i}\n".encode() for i in range(50)) + b"C-0\n"
    response = await import_codes(client, s["id"], content)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "running"
    for task in list(app.state.import_runner.tasks):
        await task
    got = await client.get(response.headers["location"])
    assert got.json()["status"] == "succeeded"
    assert got.json()["accepted"] == 50

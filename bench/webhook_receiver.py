"""The benchmark's webhook receiver: a bare ASGI app (uvicorn, httptools) that answers
204 and appends each ``webhook-id`` to the file named by ``RECEIVER_LOG``, a line each,
so the benchmark counts deliveries and de-duplicates them even across a restart.
Signatures are not checked here (the tests check every one); a receiver that verifies
costs its own CPU, which on the benchmark's 2 cores would be taken from the service."""

import os
from typing import Any

_LOG = open(os.environ["RECEIVER_LOG"], "a", buffering=1)  # noqa: SIM115, PTH123 - for the process's life


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                _LOG.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "POST":
        for name, value in scope["headers"]:
            if name == b"webhook-id":
                _LOG.write(value.decode() + "\n")
                break
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})

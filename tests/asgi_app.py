"""examples/fastapi_sync.py as uvicorn's workers serve it, each answer carrying the
serving process's pid in ``X-Pid``."""

import os
from collections.abc import MutableMapping
from typing import Any

from examples.fastapi_sync import app as example


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    async def send_with_pid(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), (b"x-pid", str(os.getpid()).encode())]
            message = {**message, "headers": headers}
        await send(message)

    await example(scope, receive, send_with_pid)

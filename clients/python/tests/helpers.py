"""Small helpers shared by the client tests."""

from __future__ import annotations

import asyncio

from switchboard_clients import Backoff

FAST = Backoff(base=0.05, factor=2.0, cap=0.5)
"""Short reconnect delays so tests do not wait long."""


async def assert_silent(client, seconds: float = 0.3) -> None:
    """No message arrives on ``client`` for ``seconds``."""
    try:
        msg = await client.recv(seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {msg!r}")


async def eventually(pred, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Wait until ``pred()`` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)

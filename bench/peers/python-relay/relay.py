"""The PC2 Laptimes relay's job with Python's `websockets` (PyPI): every client's message goes
to every other connected client; the sender does not receive its own. A peer for
bench/compare.sh.

WS_PORT: port (default 3002). WS_HOST: address to bind (default 127.0.0.1).
"""

import asyncio
import logging
import os
import signal

from websockets.asyncio.server import broadcast, serve

CLIENTS = set()
log = logging.getLogger("relay")


async def relay(ws):
    CLIENTS.add(ws)
    log.info("Client connected (%d total)", len(CLIENTS))
    try:
        async for message in ws:
            # `broadcast` writes to every socket without awaiting any: the documented way to fan
            # out with this library.
            broadcast((c for c in CLIENTS if c is not ws), message)
    finally:
        CLIENTS.discard(ws)
        log.info("Client disconnected (%d total)", len(CLIENTS))


async def main():
    host = os.environ.get("WS_HOST", "127.0.0.1")
    port = int(os.environ.get("WS_PORT", "3002"))
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(relay, host, port, backlog=1024):
        log.info("WebSocket relay listening on %s:%d", host, port)
        await stop


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(main())

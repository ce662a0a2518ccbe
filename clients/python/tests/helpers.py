"""Small helpers shared by the client tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

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


class TcpProxy:
    """A TCP proxy on 127.0.0.1 (port 0) in front of one server port, to break connections the
    way a network does: :meth:`cut` kills every connection through it abruptly (RST, no close
    frame), :meth:`hold` keeps new connections waiting (not forwarded) until :meth:`release`,
    and :meth:`swallow_replies` stops forwarding what the server sends on current connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.pairs: list[dict] = []
        self.held: list = []
        self.holding = False
        self.port = 0
        self._tasks: set = set()

    async def __aenter__(self) -> "TcpProxy":
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.cut()
        for _, w in self.held:
            w.transport.abort()
        self.server.close()
        for t in list(self._tasks):
            t.cancel()

    def ws(self, path: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def _accept(self, reader, writer) -> None:
        if self.holding:
            self.held.append((reader, writer))
            return
        await self._forward(reader, writer)

    async def _forward(self, reader, writer) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = {"writers": (writer, up_w), "down": True}
        self.pairs.append(pair)

        async def pump(src, dst, down: bool) -> None:
            try:
                while data := await src.read(65536):
                    if not down or pair["down"]:
                        dst.write(data)
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                for w in pair["writers"]:
                    w.transport.abort()
                if pair in self.pairs:
                    self.pairs.remove(pair)

        for t in (pump(reader, up_w, False), pump(up_r, writer, True)):
            task = asyncio.ensure_future(t)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def cut(self) -> None:
        """Kill every current connection abruptly (TCP reset on both sides)."""
        for pair in list(self.pairs):
            for w in pair["writers"]:
                sock = w.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()
        self.pairs.clear()

    def swallow_replies(self) -> None:
        """Stop forwarding server-to-client bytes on the current connections."""
        for pair in self.pairs:
            pair["down"] = False

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for reader, writer in held:
            task = asyncio.ensure_future(self._forward(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

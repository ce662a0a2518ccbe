"""PC2 Laptimes change-notice relay (``docs/protocol/laptimes-v1.md``).

Every client may send a change notice ``{"table","operation","timestamp"}``; the relay forwards
it byte for byte to every *other* client. There are no rooms, no greeting and no
application-level ping (the server's WebSocket pings keep the connection alive, and this client
sends its own WebSocket pings to notice a dead connection).

    async with LaptimesClient("ws://localhost:3002/") as lt:
        await lt.wait_connected(5)
        await lt.notify("times")
        async for msg in lt:
            if is_notice(msg):
                reload(msg["table"])
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Optional, TypedDict

from ._base import Message, ReconnectingClient

DEFAULT_URL = "ws://localhost:3002/"
TABLES = ("cars", "tracks", "drivers", "times")

_NOW = object()


class ChangeNotice(TypedDict, total=False):
    """A change notice as relayed (extra fields are kept)."""

    table: str
    operation: str
    timestamp: Optional[str]


def iso_now() -> str:
    """UTC now as JavaScript's ``toISOString()`` prints it: ``2025-10-25T12:34:56.789Z``."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def is_notice(msg: Message) -> bool:
    """A relayed change notice (it has a ``table``), as opposed to an ``error`` reply."""
    return isinstance(msg.get("table"), str)


def is_error(msg: Message) -> bool:
    """The server's reply to an invalid notice (``type: error`` and no ``table``)."""
    return msg.get("type") == "error" and "table" not in msg


class LaptimesClient(ReconnectingClient):
    """Client of the laptimes relay."""

    app_ping = False

    def __init__(self, url: str = DEFAULT_URL, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)

    async def notify(
        self,
        table: str,
        operation: str = "CHANGE",
        *,
        timestamp: Any = _NOW,
        timeout: float = 10.0,
        **extra: Any,
    ) -> ChangeNotice:
        """Tell every other client that ``table`` changed. Returns the notice sent (on v2, once
        the server acked it: it is published exactly once, even if the connection drops).

        ``timestamp`` defaults to now; pass ``None`` to send ``null``. Extra keyword arguments
        become extra fields, relayed untouched.
        """
        notice: dict = {"table": table, "operation": operation}
        notice["timestamp"] = iso_now() if timestamp is _NOW else timestamp
        notice.update(extra)
        await self.send_json(notice, timeout=timeout)
        return notice  # type: ignore[return-value]

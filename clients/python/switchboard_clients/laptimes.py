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
from typing import TYPE_CHECKING, Any, Literal, NotRequired, Optional, TypedDict, Union, Unpack

from ._base import ClientOptions, ReconnectingClient

if TYPE_CHECKING:  # TypeIs is in typing from Python 3.13
    from typing_extensions import TypeIs

DEFAULT_URL = "ws://localhost:3002/"
TABLES = ("cars", "tracks", "drivers", "times")

#: The v2 stream of every relayed notice.
STREAM = "all"

_NOW = object()


class ChangeNotice(TypedDict):
    """A change notice, in both directions: ``table`` and ``operation`` (non-empty strings), an
    optional ISO 8601 ``timestamp``.

    Fields beyond these are allowed and relayed untouched; a ``TypedDict`` cannot declare them
    (mypy does not support PEP 728 ``extra_items``): read them with ``notice.get("by")`` (an
    ``object``), and send them with :meth:`LaptimesClient.notify`'s keyword arguments.
    """

    table: str
    operation: str
    timestamp: NotRequired[Optional[str]]


class ErrorReply(TypedDict):
    """The reply to an invalid notice, to its sender alone."""

    type: Literal["error"]
    #: Always ``Invalid change notice``.
    message: str
    details: NotRequired[str]


ClientMessage = ChangeNotice
"""What a client sends: a change notice."""

ServerMessage = Union[ChangeNotice, ErrorReply]
"""What a client receives: another client's notice, or an error reply."""


def iso_now() -> str:
    """UTC now as JavaScript's ``toISOString()`` prints it: ``2025-10-25T12:34:56.789Z``."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def is_notice(msg: ServerMessage) -> TypeIs[ChangeNotice]:
    """A relayed change notice (it has a ``table``), as opposed to an ``error`` reply."""
    return isinstance(msg.get("table"), str)


def is_error(msg: ServerMessage) -> TypeIs[ErrorReply]:
    """The server's reply to an invalid notice (``type: error`` and no ``table``)."""
    return msg.get("type") == "error" and "table" not in msg


class LaptimesClient(ReconnectingClient[ServerMessage, ClientMessage]):
    """Client of the laptimes relay."""

    app_ping = False

    def __init__(
        self, url: str = DEFAULT_URL, **kwargs: Unpack[ClientOptions[ServerMessage]]
    ) -> None:
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
        fields: dict[str, Any] = {"table": table, "operation": operation}
        fields["timestamp"] = iso_now() if timestamp is _NOW else timestamp
        fields.update(extra)
        notice: ChangeNotice = fields  # type: ignore[assignment]  # extra fields: see ChangeNotice
        await self.send_json(notice, timeout=timeout)
        return notice

"""DCDock assignment updates (``docs/protocol/dcdock-v1.md``).

Boards connect to ``ws://<host>:8000/api/ws?token=<JWT>``, get ``connection_ack`` with their
``client_id``, optionally ``subscribe`` to one load direction (``IB``/``OB``), and receive
``assignment_created`` / ``_updated`` / ``_deleted`` plus ``conflict_detected`` for their own
user. Backends publish with ``POST /api/ws/publish`` (:func:`publish`, needs ``DCDOCK_API_KEY``).
The heartbeat is the protocol's ``ping`` / ``pong``.

A bad or expired token closes the connection with 1008 before ``connection_ack``. With a fixed
``token`` string that stops the client (:class:`~switchboard_clients.AuthenticationFailed`); pass
a ``token`` callable (sync or async, e.g. one that logs in again) to get a fresh token on every
(re)connection and keep retrying.
"""

from __future__ import annotations

import asyncio
import inspect
import urllib.parse
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Literal,
    NotRequired,
    Optional,
    TypedDict,
    Union,
    Unpack,
    cast,
)

from websockets.asyncio.client import ClientConnection

from ._base import (
    AuthenticationFailed,
    ClientError,
    ClientOptions,
    CloseInfo,
    JsonObject,
    ReconnectingClient,
    expect_status,
    http_base,
    http_request,
)

if TYPE_CHECKING:  # TypeIs is in typing from Python 3.13
    from typing_extensions import TypeIs

DEFAULT_URL = "ws://localhost:8000/api/ws"

#: The v2 stream of every assignment event and conflict.
STREAM = "assignments"

Direction = Literal["IB", "OB"]
"""A load's direction: inbound or outbound."""

DIRECTIONS: tuple[Direction, ...] = ("IB", "OB")

AssignmentType = Literal["assignment_created", "assignment_updated", "assignment_deleted"]
"""The three assignment events."""

ASSIGNMENT_TYPES: dict[AssignmentType, Literal["CREATE", "UPDATE", "DELETE"]] = {
    "assignment_created": "CREATE",
    "assignment_updated": "UPDATE",
    "assignment_deleted": "DELETE",
}

TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]

Id = Union[int, str]
"""A record id: an integer, or a non-empty string (``3`` and ``"3"`` name the same user)."""


class Filters(TypedDict, total=False):
    """A subscription filter (``{}``: everything)."""

    direction: Direction


# ----- client to server -------------------------------------------------------------------------


class Subscribe(TypedDict):
    """Replace the connection's filter (absent, ``None`` or ``{}``: everything)."""

    type: Literal["subscribe"]
    filters: NotRequired[Optional[Filters]]


class Unsubscribe(TypedDict):
    """Clear the filter."""

    type: Literal["unsubscribe"]


class Ping(TypedDict):
    """Ask for a ``pong``."""

    type: Literal["ping"]


ClientMessage = Union[Subscribe, Unsubscribe, Ping]
"""What a client sends."""


# ----- server to client -------------------------------------------------------------------------


class ConnectionAck(TypedDict):
    """The greeting, first on every authenticated connection."""

    type: Literal["connection_ack"]
    #: ISO 8601 seconds, no zone (UTC).
    timestamp: str
    #: ``user_<user id>_<serial>``.
    client_id: str
    #: Always ``Connected to DCDock real-time updates``.
    message: str


class Subscribed(TypedDict):
    """The reply to ``subscribe``: the filter now in force."""

    type: Literal["subscribed"]
    timestamp: str
    filters: Filters


class Unsubscribed(TypedDict):
    """The reply to ``unsubscribe``."""

    type: Literal["unsubscribed"]
    timestamp: str


class Pong(TypedDict):
    """The reply to ``ping``."""

    type: Literal["pong"]
    timestamp: str


class AssignmentCreated(TypedDict):
    """An assignment was created (``data``: the full assignment; its ``load.direction`` decides
    which filtered boards get it)."""

    type: Literal["assignment_created"]
    timestamp: str
    assignment_id: Id
    action: Literal["CREATE"]
    user_id: Id
    user_email: str
    data: JsonObject


class AssignmentUpdated(TypedDict):
    """An assignment was updated."""

    type: Literal["assignment_updated"]
    timestamp: str
    assignment_id: Id
    action: Literal["UPDATE"]
    user_id: Id
    user_email: str
    data: JsonObject


class AssignmentDeleted(TypedDict):
    """An assignment was deleted (``data``: as it was before)."""

    type: Literal["assignment_deleted"]
    timestamp: str
    assignment_id: Id
    action: Literal["DELETE"]
    user_id: Id
    user_email: str
    data: JsonObject


AssignmentEvent = Union[AssignmentCreated, AssignmentUpdated, AssignmentDeleted]
"""``assignment_created`` / ``assignment_updated`` / ``assignment_deleted``."""


class ConflictEvent(TypedDict):
    """``conflict_detected``, sent only to the conflicting user's connections."""

    type: Literal["conflict_detected"]
    timestamp: str
    assignment_id: Id
    current_version: int
    attempted_version: int
    current_data: JsonObject
    message: str
    user_id: Id


class ErrorMessage(TypedDict):
    """``error``, to the offending connection only (``message``: ``Invalid message format``)."""

    type: Literal["error"]
    timestamp: str
    message: str
    details: str


ServerMessage = Union[
    ConnectionAck,
    Subscribed,
    Unsubscribed,
    Pong,
    AssignmentCreated,
    AssignmentUpdated,
    AssignmentDeleted,
    ConflictEvent,
    ErrorMessage,
]
"""What a client receives."""


# ----- HTTP -------------------------------------------------------------------------------------


class AssignmentCreatedBody(TypedDict):
    """``assignment_created`` as a backend publishes it (``timestamp`` defaults to now)."""

    type: Literal["assignment_created"]
    timestamp: NotRequired[str]
    assignment_id: Id
    action: Literal["CREATE"]
    user_id: Id
    user_email: str
    data: JsonObject


class AssignmentUpdatedBody(TypedDict):
    """``assignment_updated`` as a backend publishes it."""

    type: Literal["assignment_updated"]
    timestamp: NotRequired[str]
    assignment_id: Id
    action: Literal["UPDATE"]
    user_id: Id
    user_email: str
    data: JsonObject


class AssignmentDeletedBody(TypedDict):
    """``assignment_deleted`` as a backend publishes it."""

    type: Literal["assignment_deleted"]
    timestamp: NotRequired[str]
    assignment_id: Id
    action: Literal["DELETE"]
    user_id: Id
    user_email: str
    data: JsonObject


class ConflictBody(TypedDict):
    """``conflict_detected`` as a backend publishes it (``user_id`` picks the recipients)."""

    type: Literal["conflict_detected"]
    timestamp: NotRequired[str]
    assignment_id: Id
    current_version: int
    attempted_version: int
    current_data: JsonObject
    message: str
    user_id: Id


PublishBody = Union[
    AssignmentCreatedBody, AssignmentUpdatedBody, AssignmentDeletedBody, ConflictBody
]
"""The body of ``POST /api/ws/publish``: one event."""


class ClientStats(TypedDict):
    """One connection in ``GET /api/ws/stats``."""

    client_id: str
    filters: Filters


class Stats(TypedDict):
    """``GET /api/ws/stats`` (at most 1000 clients; ``truncated`` when some were left out)."""

    active_connections: int
    clients: list[ClientStats]
    truncated: NotRequired[Literal[True]]


class DcdockError(ClientError):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, msg: Any) -> None:
        super().__init__(f"{msg.get('message')}: {msg.get('details')}")
        self.frame: ErrorMessage = msg


class DcdockClient(ReconnectingClient[ServerMessage, ClientMessage]):
    """A DCDock board's connection."""

    app_ping = True

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: TokenSource,
        direction: Optional[Direction] = None,
        **kwargs: Unpack[ClientOptions[ServerMessage]],
    ) -> None:
        super().__init__(url, **kwargs)
        self._token_source = token
        self._token: Optional[str] = token if isinstance(token, str) else None
        self._direction = _check_direction(direction)
        #: ``client_id`` from ``connection_ack`` (changes on reconnect).
        self.client_id: Optional[str] = None

    @property
    def direction(self) -> Optional[Direction]:
        """The direction filter in force (``None``: every event)."""
        return self._direction

    async def _prepare(self) -> None:
        if not isinstance(self._token_source, str):
            tok = self._token_source()
            if inspect.isawaitable(tok):
                tok = await tok
            self._token = tok

    def _connect_url(self) -> str:
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}{urllib.parse.urlencode({'token': self._token or ''})}"

    async def _handshake(self, ws: ClientConnection) -> None:
        ack = await self._read_greeting(ws, "connection_ack")
        self.client_id = ack.get("client_id")

    def _close_is_fatal(self, info: CloseInfo, ready: bool) -> Optional[BaseException]:
        if not ready and info.code == 1008 and isinstance(self._token_source, str):
            return AuthenticationFailed(info.reason or "token refused")
        return super()._close_is_fatal(info, ready)

    async def _resume(self) -> None:
        if self._direction is not None:
            await self._send_now(_subscribe_msg(self._direction))

    async def subscribe(
        self, direction: Optional[Direction] = None, *, wait: bool = True, timeout: float = 10.0
    ) -> Optional[Subscribed]:
        """Receive only events for loads of ``direction`` (``"IB"``/``"OB"``; ``None``: all).

        Replaces the previous filter. With ``wait``, returns the ``subscribed`` reply.
        """
        direction = _check_direction(direction)
        reply = await self._request(
            lambda: setattr(self, "_direction", direction),
            _subscribe_msg(direction),
            "subscribed",
            wait,
            timeout,
        )
        return cast(Optional[Subscribed], reply)

    async def unsubscribe(
        self, *, wait: bool = True, timeout: float = 10.0
    ) -> Optional[Unsubscribed]:
        """Clear the filter (every event again). With ``wait``, returns ``unsubscribed``."""
        reply = await self._request(
            lambda: setattr(self, "_direction", None),
            {"type": "unsubscribe"},
            "unsubscribed",
            wait,
            timeout,
        )
        return cast(Optional[Unsubscribed], reply)

    async def _request(
        self,
        change: Callable[[], object],
        msg: ClientMessage,
        reply_type: str,
        wait: bool,
        timeout: float,
    ) -> Optional[ServerMessage]:
        reply = self.expect(lambda m: m.get("type") in (reply_type, "error")) if wait else None
        sent = await self._update_state(change, msg)
        if reply is None:
            return None
        if not sent and reply_type == "unsubscribed":
            reply.cancel()  # a new connection starts unfiltered: nothing to wait for
            return None
        try:
            got = await asyncio.wait_for(reply, timeout)
        finally:
            reply.cancel()
        if got.get("type") == "error":
            raise DcdockError(got)
        return got


def _check_direction(direction: Optional[Direction]) -> Optional[Direction]:
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'IB', 'OB' or None, not {direction!r}")
    return direction


def _subscribe_msg(direction: Optional[Direction]) -> Subscribe:
    return {"type": "subscribe", "filters": {"direction": direction} if direction else {}}


def is_assignment_event(msg: ServerMessage) -> TypeIs[AssignmentEvent]:
    """``assignment_created`` / ``_updated`` / ``_deleted``."""
    return msg.get("type") in ASSIGNMENT_TYPES


async def publish(
    base_url: str, event: PublishBody, *, api_key: str, timeout: float = 10.0
) -> int:
    """``POST /api/ws/publish`` one event; returns ``delivered`` (202).

    ``event`` is an ``assignment_*`` or ``conflict_detected`` object (``timestamp`` optional).
    Raises :class:`~switchboard_clients.HttpError` for 400 / 401 / 403.
    """
    resp = await http_request(
        "POST", http_base(base_url) + "/api/ws/publish", json_body=event, api_key=api_key,
        timeout=timeout,
    )
    return int(expect_status(resp, 202)["delivered"])


async def publish_assignment(
    base_url: str,
    event_type: AssignmentType,
    *,
    assignment_id: Id,
    user_id: Id,
    user_email: str,
    data: JsonObject,
    api_key: str,
    timestamp: Optional[str] = None,
    timeout: float = 10.0,
) -> int:
    """Publish ``assignment_created`` / ``_updated`` / ``_deleted`` (``action`` is filled in).

    ``data`` is the full assignment; its ``load.direction`` decides which filtered boards get it.
    """
    if event_type not in ASSIGNMENT_TYPES:
        raise ValueError(f"unknown assignment event {event_type!r}")
    fields: JsonObject = {
        "type": event_type,
        "assignment_id": assignment_id,
        "action": ASSIGNMENT_TYPES[event_type],
        "user_id": user_id,
        "user_email": user_email,
        "data": data,
    }
    if timestamp is not None:
        fields["timestamp"] = timestamp
    return await publish(base_url, cast(PublishBody, fields), api_key=api_key, timeout=timeout)


async def publish_conflict(
    base_url: str,
    *,
    assignment_id: Id,
    user_id: Id,
    current_version: int,
    attempted_version: int,
    current_data: JsonObject,
    api_key: str,
    message: str = "Another user has modified this assignment",
    timeout: float = 10.0,
) -> int:
    """Publish ``conflict_detected`` to ``user_id``'s connections only."""
    event: ConflictBody = {
        "type": "conflict_detected",
        "assignment_id": assignment_id,
        "current_version": current_version,
        "attempted_version": attempted_version,
        "current_data": current_data,
        "message": message,
        "user_id": user_id,
    }
    return await publish(base_url, event, api_key=api_key, timeout=timeout)


async def stats(base_url: str, timeout: float = 10.0) -> Stats:
    """``GET /api/ws/stats``: ``{"active_connections","clients":[{client_id, filters}]}``."""
    resp = await http_request("GET", http_base(base_url) + "/api/ws/stats", timeout=timeout)
    return cast(Stats, expect_status(resp, 200))

"""Race live updates (``docs/protocol/race-v1.md``).

Clients follow race sessions on ``ws://<host>:3000/ws`` and receive the updates published for
them; backends publish with ``POST /sessions/<sessionId>/updates`` (:func:`publish_update`,
needs the server's ``RACE_API_KEY``). Sessions are not remembered by the server across
connections, so this client puts the sessions it follows in the ``sessionId`` query of every
(re)connection. The heartbeat is the protocol's ``ping`` / ``pong``.

    race = RaceClient("ws://localhost:3000/ws", sessions=["race-2024"])
    await race.start()
    async for msg in race:
        if msg["type"] in UPDATE_TYPES:
            apply(msg["type"], msg["data"])
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Literal,
    NotRequired,
    Optional,
    TypedDict,
    Union,
    Unpack,
    cast,
)

from ._base import (
    ClientError,
    ClientOptions,
    Json,
    ReconnectingClient,
    expect_status,
    http_base,
    http_request,
)

if TYPE_CHECKING:  # TypeIs is in typing from Python 3.13
    from typing_extensions import TypeIs

DEFAULT_URL = "ws://localhost:3000/ws"

UpdateType = Literal[
    "session_update",
    "driver_update",
    "position_change",
    "lap_update",
    "sector_update",
    "tire_change",
    "status_change",
    "drs_update",
]
"""The eight update types."""

UPDATE_TYPES: tuple[UpdateType, ...] = (
    "session_update",
    "driver_update",
    "position_change",
    "lap_update",
    "sector_update",
    "tire_change",
    "status_change",
    "drs_update",
)

_SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class SessionRef(TypedDict):
    """``{"sessionId": ..}``: 1-128 of ``A-Z a-z 0-9 _ - . :``, at least one letter or digit."""

    sessionId: str


class Subscribe(TypedDict):
    """Follow a session (answered with ``subscribed``)."""

    type: Literal["subscribe"]
    data: SessionRef
    #: Any string; ignored.
    timestamp: NotRequired[str]


class Unsubscribe(TypedDict):
    """Stop following a session (answered with ``unsubscribed``)."""

    type: Literal["unsubscribe"]
    data: SessionRef
    timestamp: NotRequired[str]


class Ping(TypedDict):
    """Heartbeat (answered with ``pong``); ``data`` may be left out."""

    type: Literal["ping"]
    data: NotRequired[Json]
    timestamp: NotRequired[str]


class Subscribed(TypedDict):
    """The client now follows ``data.sessionId``."""

    type: Literal["subscribed"]
    data: SessionRef
    timestamp: str


class Unsubscribed(TypedDict):
    """The client no longer follows ``data.sessionId``."""

    type: Literal["unsubscribed"]
    data: SessionRef
    timestamp: str


class EmptyData(TypedDict):
    """``{}``."""


class Pong(TypedDict):
    """The reply to ``ping``."""

    type: Literal["pong"]
    data: EmptyData
    timestamp: str


class ErrorData(TypedDict):
    """What was wrong."""

    message: str
    details: str


class ErrorMessage(TypedDict):
    """The reply to a message (or ``?sessionId=``) the server could not accept."""

    type: Literal["error"]
    data: ErrorData
    timestamp: str


class Update(TypedDict):
    """A live update for a followed session: ``data`` as published; ``timestamp`` the
    publisher's, or the server's time of publishing."""

    type: UpdateType
    data: Json
    timestamp: str


RaceMessage = Union[Subscribed, Unsubscribed, Pong, ErrorMessage, Update]
"""Every server message: ``{"type","data","timestamp"}``."""

ClientMessage = Union[Subscribe, Unsubscribe, Ping]
"""What a client sends."""

ServerMessage = RaceMessage
"""What a client receives."""


class PublishBody(TypedDict):
    """The body of ``POST /sessions/<sessionId>/updates``; ``timestamp`` (ISO 8601 with a zone)
    defaults to the server's time."""

    type: UpdateType
    data: Json
    timestamp: NotRequired[str]


class PublishResponse(TypedDict):
    """The ``202`` answer: clients on this server the update was queued to."""

    sessionId: str
    delivered: int


class Health(TypedDict):
    """``GET /health``."""

    status: str
    clients: int
    sessions: int
    uptime: float


def is_update(msg: ServerMessage) -> TypeIs[Update]:
    """One of the eight updates (not a reply)."""
    return msg["type"] in UPDATE_TYPES


class RaceError(ClientError):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, msg: Any) -> None:
        data = msg.get("data") or {}
        super().__init__(f"{data.get('message')}: {data.get('details')}")
        self.frame: ErrorMessage = msg


def check_session_id(session_id: str) -> str:
    """``session_id`` if valid (1-128 of ``A-Z a-z 0-9 _ - . :``), else ``ValueError``."""
    if not isinstance(session_id, str) or not _SESSION_ID.match(session_id):
        raise ValueError(
            f"invalid sessionId {session_id!r}: 1 to 128 characters of A-Z, a-z, 0-9, _ - . :"
        )
    return session_id


class RaceClient(ReconnectingClient[ServerMessage, ClientMessage]):
    """Follower of one or more race sessions."""

    app_ping = True

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        sessions: Iterable[str] = (),
        **kwargs: Unpack[ClientOptions[ServerMessage]],
    ) -> None:
        super().__init__(url, **kwargs)
        self._sessions: dict[str, None] = {check_session_id(s): None for s in sessions}
        self._url_sessions: set[str] = set()

    @property
    def sessions(self) -> list[str]:
        """The sessions this client follows (and re-follows after a reconnect)."""
        return list(self._sessions)

    def _connect_url(self) -> str:
        self._url_sessions = set(self._sessions)
        if not self._sessions:
            return self.url
        query = urllib.parse.urlencode([("sessionId", s) for s in self._sessions])
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}{query}"

    async def _resume(self) -> None:
        # Sessions added after the URL was built are subscribed by message.
        for s in list(self._sessions):
            if s not in self._url_sessions:
                await self._send_now(_request("subscribe", s))

    async def subscribe(
        self, session_id: str, *, wait: bool = True, timeout: float = 10.0
    ) -> Optional[Subscribed]:
        """Follow ``session_id``. With ``wait``, return the ``subscribed`` reply (or raise
        :class:`RaceError` if the server answered with an ``error``)."""
        check_session_id(session_id)
        reply = self.expect(_reply_for("subscribed", session_id)) if wait else None
        await self._update_state(
            lambda: self._sessions.setdefault(session_id, None), _request("subscribe", session_id)
        )
        if reply is None:
            return None
        msg = await self._await_reply(reply, timeout, lambda: self._sessions.pop(session_id, None))
        return cast(Subscribed, msg)

    async def unsubscribe(
        self, session_id: str, *, wait: bool = True, timeout: float = 10.0
    ) -> Optional[Unsubscribed]:
        """Stop following ``session_id``; with ``wait``, return the ``unsubscribed`` reply.

        When not connected, the session is simply forgotten (the next connection will not
        follow it) and ``None`` is returned.
        """
        check_session_id(session_id)
        reply = self.expect(_reply_for("unsubscribed", session_id)) if wait else None
        def change() -> None:
            self._sessions.pop(session_id, None)
            self._forget_stream(session_stream(session_id))

        sent = await self._update_state(change, _request("unsubscribe", session_id))
        if reply is None or not sent:
            if reply is not None:
                reply.cancel()
            return None
        return cast(Unsubscribed, await self._await_reply(reply, timeout, None))

    async def _await_reply(
        self,
        reply: "asyncio.Future[ServerMessage]",
        timeout: float,
        on_error: Optional[Callable[[], object]],
    ) -> ServerMessage:
        try:
            msg = await asyncio.wait_for(reply, timeout)
        finally:
            reply.cancel()
        if msg.get("type") == "error":
            if on_error is not None:
                on_error()
            raise RaceError(msg)
        return msg


def session_stream(session_id: str) -> str:
    """The v2 stream of a race session's room."""
    return f"session:{session_id}"


def _request(kind: Literal["subscribe", "unsubscribe"], session_id: str) -> ClientMessage:
    if kind == "subscribe":
        return {"type": "subscribe", "data": {"sessionId": session_id}}
    return {"type": "unsubscribe", "data": {"sessionId": session_id}}


def _reply_for(kind: str, session_id: str) -> Callable[[Any], bool]:
    def pred(m: Any) -> bool:
        if m.get("type") == "error":
            return True
        data = m.get("data")
        return m.get("type") == kind and isinstance(data, dict) and data.get("sessionId") == session_id

    return pred


async def publish_update(
    base_url: str,
    session_id: str,
    update_type: UpdateType,
    data: Json,
    *,
    api_key: str,
    timestamp: Optional[str] = None,
    timeout: float = 10.0,
) -> PublishResponse:
    """``POST /sessions/<session_id>/updates``; returns ``{"sessionId","delivered"}`` (202).

    ``timestamp`` (ISO 8601 with a zone) defaults to the server's time. Raises
    :class:`~switchboard_clients.HttpError` for 4xx (401 wrong key, 403 publishing disabled).
    """
    check_session_id(session_id)
    body: PublishBody = {"type": update_type, "data": data}
    if timestamp is not None:
        body["timestamp"] = timestamp
    url = f"{http_base(base_url)}/sessions/{session_id}/updates"
    resp = await http_request("POST", url, json_body=body, api_key=api_key, timeout=timeout)
    return cast(PublishResponse, expect_status(resp, 202))


async def health(base_url: str, timeout: float = 10.0) -> Health:
    """``GET /health``: ``{"status","clients","sessions","uptime"}``."""
    resp = await http_request("GET", http_base(base_url) + "/health", timeout=timeout)
    return cast(Health, expect_status(resp, 200))

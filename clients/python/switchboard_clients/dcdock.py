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

import inspect
import urllib.parse
from typing import Any, Awaitable, Callable, Optional, TypedDict, Union

from websockets.asyncio.client import ClientConnection

from ._base import (
    AuthenticationFailed,
    ClientError,
    CloseInfo,
    Message,
    ReconnectingClient,
    expect_status,
    http_base,
    http_request,
)

DEFAULT_URL = "ws://localhost:8000/api/ws"
DIRECTIONS = ("IB", "OB")
ASSIGNMENT_TYPES = {
    "assignment_created": "CREATE",
    "assignment_updated": "UPDATE",
    "assignment_deleted": "DELETE",
}

TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]


class AssignmentEvent(TypedDict, total=False):
    """``assignment_created`` / ``assignment_updated`` / ``assignment_deleted``."""

    type: str
    timestamp: str
    assignment_id: Union[int, str]
    action: str
    user_id: Union[int, str]
    user_email: str
    data: dict


class ConflictEvent(TypedDict, total=False):
    """``conflict_detected``, sent only to the conflicting user's connections."""

    type: str
    timestamp: str
    assignment_id: Union[int, str]
    current_version: int
    attempted_version: int
    current_data: dict
    message: str
    user_id: Union[int, str]


class DcdockError(ClientError):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, msg: Message) -> None:
        super().__init__(f"{msg.get('message')}: {msg.get('details')}")
        self.frame = msg


class DcdockClient(ReconnectingClient):
    """A DCDock board's connection."""

    app_ping = True

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: TokenSource,
        direction: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, **kwargs)
        self._token_source = token
        self._token: Optional[str] = token if isinstance(token, str) else None
        self._direction = _check_direction(direction)
        #: ``client_id`` from ``connection_ack`` (changes on reconnect).
        self.client_id: Optional[str] = None

    @property
    def direction(self) -> Optional[str]:
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
        self, direction: Optional[str] = None, *, wait: bool = True, timeout: float = 10.0
    ) -> Optional[Message]:
        """Receive only events for loads of ``direction`` (``"IB"``/``"OB"``; ``None``: all).

        Replaces the previous filter. With ``wait``, returns the ``subscribed`` reply.
        """
        direction = _check_direction(direction)
        return await self._request(
            lambda: setattr(self, "_direction", direction),
            _subscribe_msg(direction),
            "subscribed",
            wait,
            timeout,
        )

    async def unsubscribe(self, *, wait: bool = True, timeout: float = 10.0) -> Optional[Message]:
        """Clear the filter (every event again). With ``wait``, returns ``unsubscribed``."""
        return await self._request(
            lambda: setattr(self, "_direction", None),
            {"type": "unsubscribe"},
            "unsubscribed",
            wait,
            timeout,
        )

    async def _request(
        self, change: Callable[[], Any], msg: dict, reply_type: str, wait: bool, timeout: float
    ) -> Optional[Message]:
        import asyncio

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


def _check_direction(direction: Optional[str]) -> Optional[str]:
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'IB', 'OB' or None, not {direction!r}")
    return direction


def _subscribe_msg(direction: Optional[str]) -> dict:
    return {"type": "subscribe", "filters": {"direction": direction} if direction else {}}


def is_assignment_event(msg: Message) -> bool:
    """``assignment_created`` / ``_updated`` / ``_deleted``."""
    return msg.get("type") in ASSIGNMENT_TYPES


async def publish(
    base_url: str, event: dict, *, api_key: str, timeout: float = 10.0
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
    event_type: str,
    *,
    assignment_id: Union[int, str],
    user_id: Union[int, str],
    user_email: str,
    data: dict,
    api_key: str,
    timestamp: Optional[str] = None,
    timeout: float = 10.0,
) -> int:
    """Publish ``assignment_created`` / ``_updated`` / ``_deleted`` (``action`` is filled in).

    ``data`` is the full assignment; its ``load.direction`` decides which filtered boards get it.
    """
    if event_type not in ASSIGNMENT_TYPES:
        raise ValueError(f"unknown assignment event {event_type!r}")
    event: dict = {
        "type": event_type,
        "assignment_id": assignment_id,
        "action": ASSIGNMENT_TYPES[event_type],
        "user_id": user_id,
        "user_email": user_email,
        "data": data,
    }
    if timestamp is not None:
        event["timestamp"] = timestamp
    return await publish(base_url, event, api_key=api_key, timeout=timeout)


async def publish_conflict(
    base_url: str,
    *,
    assignment_id: Union[int, str],
    user_id: Union[int, str],
    current_version: int,
    attempted_version: int,
    current_data: dict,
    api_key: str,
    message: str = "Another user has modified this assignment",
    timeout: float = 10.0,
) -> int:
    """Publish ``conflict_detected`` to ``user_id``'s connections only."""
    event = {
        "type": "conflict_detected",
        "assignment_id": assignment_id,
        "current_version": current_version,
        "attempted_version": attempted_version,
        "current_data": current_data,
        "message": message,
        "user_id": user_id,
    }
    return await publish(base_url, event, api_key=api_key, timeout=timeout)


async def stats(base_url: str, timeout: float = 10.0) -> dict:
    """``GET /api/ws/stats``: ``{"active_connections","clients":[{client_id, filters}]}``."""
    resp = await http_request("GET", http_base(base_url) + "/api/ws/stats", timeout=timeout)
    return expect_status(resp, 200)

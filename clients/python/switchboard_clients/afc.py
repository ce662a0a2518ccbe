"""AFC Stack events (``docs/protocol/afc-v1.md``).

Browsers listen on ``ws://<host>:4001/ws`` and receive every event
``{"type":"<entity>:<action>","payload":...}``; backends publish with
``POST /events/<entity>-<action>`` (:func:`publish_event`). The only client message is the
application-level ``{"type":"ping"}``, which this client sends as its heartbeat (pongs are
consumed by the heartbeat and not queued).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal, Optional, TypedDict, Union, Unpack, cast

from ._base import (
    ClientOptions,
    HttpResponse,
    Json,
    ReconnectingClient,
    expect_status,
    http_base,
    http_request,
)

if TYPE_CHECKING:  # TypeIs is in typing from Python 3.13
    from typing_extensions import TypeIs

DEFAULT_URL = "ws://localhost:4001/ws"

#: The v2 stream of every published event.
STREAM = "events"

_NAME = re.compile(r"^[A-Za-z0-9_-]+-[A-Za-z0-9_]+$")


class Ping(TypedDict):
    """The only client message: asks for a ``pong``."""

    type: Literal["ping"]


class Event(TypedDict):
    """An event frame: ``type`` is ``<entity>:<action>``, ``payload`` the published body (any
    JSON value, byte for byte as POSTed)."""

    type: str
    payload: Json


class PongPayload(TypedDict):
    """Server time, ``2025-01-01T12:30:00.000Z``."""

    timestamp: str


class Pong(TypedDict):
    """The reply to ``ping``, to the sender only."""

    type: Literal["pong"]
    payload: PongPayload


class ErrorPayload(TypedDict):
    """What was wrong: ``message`` (``Invalid message`` or ``Unknown message type``) and
    ``details``."""

    message: str
    details: str


class ErrorMessage(TypedDict):
    """The reply to a frame the server could not accept, to the sender only."""

    type: Literal["error"]
    payload: ErrorPayload


ClientMessage = Ping
"""What a client sends."""

ServerMessage = Union[Event, Pong, ErrorMessage]
"""What a client receives. ``Event``'s ``type`` is any ``<entity>:<action>`` (a ``str``), so
narrow with :func:`is_event` rather than on ``type``."""

PublishBody = Json
"""The body of ``POST /events/<entity>-<action>``: any JSON value."""


class Health(TypedDict):
    """``GET /health``."""

    status: str
    clients: int
    uptime: float


def is_event(msg: ServerMessage) -> TypeIs[Event]:
    """A published event (``<entity>:<action>``), not a ``pong`` or ``error`` reply."""
    return ":" in msg["type"]


class AfcClient(ReconnectingClient[ServerMessage, ClientMessage]):
    """Listener for AFC events."""

    app_ping = True

    def __init__(
        self, url: str = DEFAULT_URL, **kwargs: Unpack[ClientOptions[ServerMessage]]
    ) -> None:
        super().__init__(url, **kwargs)

    async def wait_event(self, event_type: str, timeout: float = 5.0) -> Event:
        """Take queued messages until an event of ``event_type`` (``todo:created``) arrives."""
        return cast(Event, await self.recv_match(event_type, timeout))


def event_path(event: str) -> str:
    """The publish path for ``todo:created`` or ``todo-created``: ``/events/todo-created``.

    Raises ``ValueError`` for a name the server would refuse.
    """
    if ":" in event:
        entity, action = event.rsplit(":", 1)
        event = f"{entity}-{action}"
    if not _NAME.match(event):
        raise ValueError(f"invalid event name {event!r}: expected `<entity>-<action>`")
    return f"/events/{event}"


async def publish_event(
    base_url: str,
    event: str,
    payload: PublishBody,
    *,
    api_key: Optional[str] = None,
    timeout: float = 10.0,
) -> None:
    """``POST /events/<entity>-<action>`` with ``payload`` as the JSON body (expects 204).

    ``base_url`` is ``http://host:4001`` (a ``ws://`` URL works too). ``event`` is
    ``todo-created`` or ``todo:created``. ``api_key`` is needed when the server sets
    ``AFC_API_KEY``. Raises :class:`~switchboard_clients.HttpError` on any other status.
    """
    resp = await publish_event_raw(
        base_url, event, _json_text(payload), api_key=api_key, timeout=timeout
    )
    expect_status(resp, 204)


async def publish_event_raw(
    base_url: str,
    event: str,
    body: str,
    *,
    api_key: Optional[str] = None,
    timeout: float = 10.0,
) -> HttpResponse:
    """Like :func:`publish_event` with the body given as text (kept byte for byte by the server),
    returning the response instead of raising."""
    url = http_base(base_url) + event_path(event)
    return await http_request("POST", url, raw_body=body, api_key=api_key, timeout=timeout)


async def health(base_url: str, timeout: float = 10.0) -> Health:
    """``GET /health``: ``{"status":"ok","clients":n,"uptime":s}``."""
    resp = await http_request("GET", http_base(base_url) + "/health", timeout=timeout)
    return cast(Health, expect_status(resp, 200))


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))

"""AFC Stack events (``docs/protocol/afc-v1.md``).

Browsers listen on ``ws://<host>:4001/ws`` and receive every event
``{"type":"<entity>:<action>","payload":...}``; backends publish with
``POST /events/<entity>-<action>`` (:func:`publish_event`). The only client message is the
application-level ``{"type":"ping"}``, which this client sends as its heartbeat (pongs are
consumed by the heartbeat and not queued).
"""

from __future__ import annotations

import re
from typing import Any, Optional, TypedDict

from ._base import HttpResponse, ReconnectingClient, expect_status, http_base, http_request

DEFAULT_URL = "ws://localhost:4001/ws"

_NAME = re.compile(r"^[A-Za-z0-9_-]+-[A-Za-z0-9_]+$")


class Event(TypedDict):
    """An event frame: ``type`` is ``<entity>:<action>``, ``payload`` the published body."""

    type: str
    payload: Any


class AfcClient(ReconnectingClient):
    """Listener for AFC events."""

    app_ping = True

    def __init__(self, url: str = DEFAULT_URL, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)

    async def wait_event(self, event_type: str, timeout: float = 5.0) -> Event:
        """Take queued messages until an event of ``event_type`` (``todo:created``) arrives."""
        return await self.recv_match(event_type, timeout)  # type: ignore[return-value]


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
    payload: Any,
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


async def health(base_url: str, timeout: float = 10.0) -> dict:
    """``GET /health``: ``{"status":"ok","clients":n,"uptime":s}``."""
    resp = await http_request("GET", http_base(base_url) + "/health", timeout=timeout)
    return expect_status(resp, 200)


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))

"""Collab project rooms (``docs/protocol/collab-v1.md``).

Clients connect to ``ws://<host>:3001/ws``, get ``CONNECTION_ESTABLISHED`` with their
``clientId``, join projects (``JOIN_PROJECT``) and exchange edits (``TASK_UPDATE``, ...) with the
other members; everyone in a project gets ``USER_PRESENCE`` when membership changes. Backends push
with ``POST /broadcast`` (:func:`broadcast`). There is no application-level ping: the server's
WebSocket pings keep the connection alive and this client sends its own WebSocket pings.

On reconnect the client restores its user and projects (``JOIN_PROJECT`` with ``userId`` for each),
so the other members see it come back in ``USER_PRESENCE``. On v2 each ``JOIN_PROJECT`` then carries
the project stream's position in the envelope's ``since``, so the server replays the edits and
broadcasts missed meanwhile (or reports ``not_recovered``).

    collab = CollabClient("ws://localhost:3001/ws", user_id="user_2abc")
    await collab.start()
    await collab.join_project("project-123")
    await collab.send_task_update("project-123", {"id": "task-456", "title": "New"}, "op-1")
"""

from __future__ import annotations

import asyncio
from typing import (
    TYPE_CHECKING,
    Any,
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
from websockets.asyncio.client import ClientConnection

from .v2 import Ack

if TYPE_CHECKING:  # TypeIs is in typing from Python 3.13
    from typing_extensions import TypeIs

DEFAULT_URL = "ws://localhost:3001/ws"

EditType = Literal[
    "TASK_CREATE",
    "TASK_UPDATE",
    "TASK_DELETE",
    "COMMENT_CREATE",
    "COMMENT_UPDATE",
    "COMMENT_DELETE",
    "PROJECT_UPDATE",
]
"""The seven edits a client relays."""

EDIT_TYPES: tuple[EditType, ...] = (
    "TASK_CREATE",
    "TASK_UPDATE",
    "TASK_DELETE",
    "COMMENT_CREATE",
    "COMMENT_UPDATE",
    "COMMENT_DELETE",
    "PROJECT_UPDATE",
)
SERVER_TYPES = ("CONNECTION_ESTABLISHED", "USER_PRESENCE", "ERROR")

_ABSENT = object()


# ----- client to server -------------------------------------------------------------------------


class UserRef(TypedDict):
    """``{"userId": ..}``."""

    userId: str


class SetUser(TypedDict):
    """Name the user behind this connection, as ``payload.userId`` (the form this client
    sends)."""

    type: Literal["SET_USER"]
    payload: UserRef
    userId: NotRequired[str]


class SetUserTopLevel(TypedDict):
    """``SET_USER`` with the top-level ``userId`` (used when ``payload.userId`` is absent or
    empty)."""

    type: Literal["SET_USER"]
    userId: str
    payload: NotRequired[Optional[dict[str, Json]]]


class JoinProject(TypedDict):
    """Join a project (``userId`` sets the user first); every member gets ``USER_PRESENCE``."""

    type: Literal["JOIN_PROJECT"]
    projectId: str
    userId: NotRequired[str]


class LeaveProject(TypedDict):
    """Leave a project; the remaining members get ``USER_PRESENCE``."""

    type: Literal["LEAVE_PROJECT"]
    projectId: str


class Edit(TypedDict):
    """An edit for a joined project, relayed to its other members (``payload`` untouched, may be
    ``None``)."""

    type: EditType
    projectId: str
    payload: Json
    operationId: NotRequired[str]


ClientMessage = Union[SetUser, SetUserTopLevel, JoinProject, LeaveProject, Edit]
"""What a client sends."""


# ----- server to client -------------------------------------------------------------------------


class ConnectionEstablished(TypedDict):
    """The greeting, first on every connection."""

    type: Literal["CONNECTION_ESTABLISHED"]
    #: ``client_<unix ms>_<serial>``.
    clientId: str
    #: Unix milliseconds.
    timestamp: int


class ActiveUser(TypedDict):
    """One listed member in ``USER_PRESENCE``."""

    userId: str
    clientId: str
    joinedAt: int


class Presence(TypedDict):
    """The body of ``USER_PRESENCE``."""

    projectId: str
    activeUsers: list[ActiveUser]
    userCount: int


class UserPresence(TypedDict):
    """Who is in a project now (after a join, a leave, a ``SET_USER``, a disconnect)."""

    type: Literal["USER_PRESENCE"]
    payload: Presence
    #: ``presence-<unix ms>``.
    operationId: str
    timestamp: int


class RelayedEdit(TypedDict):
    """An edit as the other members receive it, or a backend's ``POST /broadcast`` (whose
    ``type`` is the backend's choice and whose ``payload`` may be absent)."""

    type: str
    payload: NotRequired[Json]
    operationId: NotRequired[str]
    timestamp: int
    projectId: str
    userId: Optional[str]


class ErrorMessage(TypedDict):
    """``ERROR``, to the offending connection only."""

    type: Literal["ERROR"]
    message: str
    details: str
    #: The same text as ``message``.
    error: str
    timestamp: int


ServerMessage = Union[ConnectionEstablished, UserPresence, ErrorMessage, RelayedEdit]
"""What a client receives. ``RelayedEdit``'s ``type`` is a ``str`` (backends choose their
own), so narrow with :func:`is_update` or on ``projectId``."""


# ----- HTTP -------------------------------------------------------------------------------------


class BroadcastBody(TypedDict):
    """The body of ``POST /broadcast``: any ``type`` but the server's own three."""

    type: str
    projectId: str
    payload: NotRequired[Json]
    operationId: NotRequired[str]
    timestamp: NotRequired[int]
    userId: NotRequired[str]


PublishBody = BroadcastBody
"""The body of the publish endpoint, ``POST /broadcast``."""


class BroadcastResponse(TypedDict):
    """The ``200`` answer to ``POST /broadcast``."""

    success: bool
    message: str
    projectId: str
    clientCount: int


class Health(TypedDict):
    """``GET /health``."""

    status: str
    timestamp: int
    clients: int
    projects: int
    uptime: float


class ProjectStats(TypedDict):
    """One project in ``GET /stats``."""

    clientCount: int
    clients: list[str]


class Stats(TypedDict):
    """``GET /stats`` (at most 1000 projects; ``truncated`` when some were left out)."""

    totalClients: int
    totalProjects: int
    projectStats: dict[str, ProjectStats]
    truncated: NotRequired[Literal[True]]


def is_update(msg: ServerMessage) -> TypeIs[RelayedEdit]:
    """An edit or a backend broadcast (it has a ``projectId``), not a greeting, presence or
    error."""
    return "projectId" in msg


def is_presence(msg: ServerMessage) -> TypeIs[UserPresence]:
    """``USER_PRESENCE``."""
    return msg["type"] == "USER_PRESENCE" and "projectId" not in msg


class CollabError(ClientError):
    """The server answered with an ``ERROR`` frame."""

    def __init__(self, msg: Any) -> None:
        super().__init__(f"{msg.get('message')}: {msg.get('details')}")
        self.frame: ErrorMessage = msg


def project_stream(project_id: str) -> str:
    """The v2 stream of a project's room."""
    return f"project:{project_id}"


def presence_users(msg: Any) -> list[str]:
    """The user ids listed in a ``USER_PRESENCE`` message."""
    payload = msg.get("payload") or {}
    return [u.get("userId") for u in payload.get("activeUsers", [])]


class CollabClient(ReconnectingClient[ServerMessage, ClientMessage]):
    """A member of collab project rooms."""

    app_ping = False

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        user_id: Optional[str] = None,
        **kwargs: Unpack[ClientOptions[ServerMessage]],
    ) -> None:
        super().__init__(url, **kwargs)
        self.user_id = user_id
        self._projects: dict[str, None] = {}
        #: This connection's ``clientId`` (from ``CONNECTION_ESTABLISHED``; changes on reconnect).
        self.client_id: Optional[str] = None

    @property
    def projects(self) -> list[str]:
        """The projects this client is in (and re-joins after a reconnect)."""
        return list(self._projects)

    async def _handshake(self, ws: ClientConnection) -> None:
        greeting = await self._read_greeting(ws, "CONNECTION_ESTABLISHED")
        self.client_id = greeting.get("clientId")

    def _present_in_url(self, stream: str) -> bool:
        # Project positions go in JOIN_PROJECT's envelope, not in the upgrade URL.
        return not stream.startswith("project:")

    async def _resume(self) -> None:
        for p in list(self._projects):
            await self._send_now(
                self._join_msg_with(p, None), since=self._since_for(project_stream(p))
            )
        if self.user_id and not self._projects:
            await self._send_now({"type": "SET_USER", "payload": {"userId": self.user_id}})

    async def set_user(self, user_id: str) -> None:
        """Name the user behind this connection (no reply; members get ``USER_PRESENCE``)."""
        if not user_id:
            raise ValueError("user_id must be a non-empty string")

        def change() -> None:
            self.user_id = user_id

        await self._update_state(change, {"type": "SET_USER", "payload": {"userId": user_id}})

    async def join_project(
        self,
        project_id: str,
        *,
        user_id: Optional[str] = None,
        wait: bool = True,
        timeout: float = 10.0,
    ) -> Optional[UserPresence]:
        """Join ``project_id`` (optionally setting the user first).

        With ``wait``, returns the ``USER_PRESENCE`` the join produced, or raises
        :class:`CollabError` if the server answered ``ERROR`` (room limit).
        """
        if not project_id:
            raise ValueError("project_id must be a non-empty string")

        def pred(m: Any) -> bool:
            if m.get("type") == "ERROR":
                return True
            payload = m.get("payload")
            return (
                m.get("type") == "USER_PRESENCE"
                and isinstance(payload, dict)
                and payload.get("projectId") == project_id
            )

        reply = self.expect(pred) if wait else None

        def change() -> None:
            if user_id:
                self.user_id = user_id
            self._projects.setdefault(project_id, None)

        await self._update_state(change, self._join_msg_with(project_id, user_id))
        if reply is None:
            return None
        try:
            msg = await asyncio.wait_for(reply, timeout)
        finally:
            reply.cancel()
        if msg.get("type") == "ERROR":
            self._projects.pop(project_id, None)
            self._forget_stream(project_stream(project_id))
            raise CollabError(msg)
        return cast(UserPresence, msg)

    def _join_msg_with(self, project_id: str, user_id: Optional[str]) -> JoinProject:
        msg: JoinProject = {"type": "JOIN_PROJECT", "projectId": project_id}
        uid = user_id or self.user_id
        if uid:
            msg["userId"] = uid
        return msg

    async def leave_project(self, project_id: str) -> None:
        """Leave ``project_id`` (no reply; the remaining members get ``USER_PRESENCE``)."""
        def change() -> None:
            self._projects.pop(project_id, None)
            self._forget_stream(project_stream(project_id))

        await self._update_state(change, {"type": "LEAVE_PROJECT", "projectId": project_id})

    async def send_edit(
        self,
        edit_type: EditType,
        project_id: str,
        payload: Json,
        operation_id: Optional[str] = None,
        *,
        timeout: float = 10.0,
    ) -> Optional[Ack]:
        """Send an edit to the other members of ``project_id`` (which must have been joined).

        Waits up to ``timeout`` seconds for a connection. The server answers only on error
        (``ERROR`` ``Not a member of this project``), which arrives as a queued message. On v2
        returns the ack (``{"stream","epoch","offset"}`` once published), like ``send``.
        """
        if edit_type not in EDIT_TYPES:
            raise ValueError(f"unknown edit type {edit_type!r}; expected one of {EDIT_TYPES}")
        msg: Edit = {"type": edit_type, "projectId": project_id, "payload": payload}
        if operation_id is not None:
            msg["operationId"] = operation_id
        return await self.send(msg, timeout=timeout)

    async def send_task_create(self, project_id: str, task: Json, operation_id: Optional[str] = None) -> Optional[Ack]:
        """``TASK_CREATE``."""
        return await self.send_edit("TASK_CREATE", project_id, task, operation_id)

    async def send_task_update(self, project_id: str, task: Json, operation_id: Optional[str] = None) -> Optional[Ack]:
        """``TASK_UPDATE``."""
        return await self.send_edit("TASK_UPDATE", project_id, task, operation_id)

    async def send_task_delete(self, project_id: str, task: Json, operation_id: Optional[str] = None) -> Optional[Ack]:
        """``TASK_DELETE``."""
        return await self.send_edit("TASK_DELETE", project_id, task, operation_id)

    async def send_comment_create(self, project_id: str, comment: Json, operation_id: Optional[str] = None) -> Optional[Ack]:
        """``COMMENT_CREATE``."""
        return await self.send_edit("COMMENT_CREATE", project_id, comment, operation_id)

    async def send_comment_update(self, project_id: str, comment: Json, operation_id: Optional[str] = None) -> Optional[Ack]:
        """``COMMENT_UPDATE``."""
        return await self.send_edit("COMMENT_UPDATE", project_id, comment, operation_id)

    async def send_comment_delete(self, project_id: str, comment: Json, operation_id: Optional[str] = None) -> Optional[Ack]:
        """``COMMENT_DELETE``."""
        return await self.send_edit("COMMENT_DELETE", project_id, comment, operation_id)

    async def send_project_update(self, project_id: str, project: Json, operation_id: Optional[str] = None) -> Optional[Ack]:
        """``PROJECT_UPDATE``."""
        return await self.send_edit("PROJECT_UPDATE", project_id, project, operation_id)


async def broadcast(
    base_url: str,
    message_type: str,
    project_id: str,
    payload: Json = _ABSENT,
    *,
    operation_id: Optional[str] = None,
    timestamp: Optional[int] = None,
    user_id: Optional[str] = None,
    api_key: Optional[str] = None,
    timeout: float = 10.0,
) -> BroadcastResponse:
    """``POST /broadcast`` to every member of ``project_id``.

    Returns ``{"success":true,"message":"Broadcast sent","projectId":..,"clientCount":n}``.
    Leave ``payload`` out to send none. ``api_key`` is needed when the server sets
    ``COLLAB_API_KEY``. Raises :class:`~switchboard_clients.HttpError` on 4xx.
    """
    body: BroadcastBody = {"type": message_type, "projectId": project_id}
    if payload is not _ABSENT:
        body["payload"] = payload
    if operation_id is not None:
        body["operationId"] = operation_id
    if timestamp is not None:
        body["timestamp"] = timestamp
    if user_id is not None:
        body["userId"] = user_id
    resp = await http_request(
        "POST", http_base(base_url) + "/broadcast", json_body=body, api_key=api_key, timeout=timeout
    )
    return cast(BroadcastResponse, expect_status(resp, 200))


async def health(base_url: str, timeout: float = 10.0) -> Health:
    """``GET /health``: ``{"status":"healthy","timestamp","clients","projects","uptime"}``."""
    resp = await http_request("GET", http_base(base_url) + "/health", timeout=timeout)
    return cast(Health, expect_status(resp, 200))


async def stats(base_url: str, timeout: float = 10.0) -> Stats:
    """``GET /stats``: ``{"totalClients","totalProjects","projectStats"}``."""
    resp = await http_request("GET", http_base(base_url) + "/stats", timeout=timeout)
    return cast(Stats, expect_status(resp, 200))

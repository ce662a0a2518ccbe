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
from typing import Any, Optional, TypedDict

from ._base import (
    ClientError,
    Message,
    ReconnectingClient,
    expect_status,
    http_base,
    http_request,
)
from websockets.asyncio.client import ClientConnection

DEFAULT_URL = "ws://localhost:3001/ws"

EDIT_TYPES = (
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


class ActiveUser(TypedDict):
    """One listed member in ``USER_PRESENCE``."""

    userId: str
    clientId: str
    joinedAt: int


class RelayedEdit(TypedDict, total=False):
    """An edit (or backend broadcast) as members receive it."""

    type: str
    payload: Any
    operationId: str
    timestamp: int
    projectId: str
    userId: Optional[str]


class CollabError(ClientError):
    """The server answered with an ``ERROR`` frame."""

    def __init__(self, msg: Message) -> None:
        super().__init__(f"{msg.get('message')}: {msg.get('details')}")
        self.frame = msg


def project_stream(project_id: str) -> str:
    """The v2 stream of a project's room."""
    return f"project:{project_id}"


def presence_users(msg: Message) -> list[str]:
    """The user ids listed in a ``USER_PRESENCE`` message."""
    payload = msg.get("payload") or {}
    return [u.get("userId") for u in payload.get("activeUsers", [])]


class CollabClient(ReconnectingClient):
    """A member of collab project rooms."""

    app_ping = False

    def __init__(
        self, url: str = DEFAULT_URL, *, user_id: Optional[str] = None, **kwargs: Any
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
    ) -> Optional[Message]:
        """Join ``project_id`` (optionally setting the user first).

        With ``wait``, returns the ``USER_PRESENCE`` the join produced, or raises
        :class:`CollabError` if the server answered ``ERROR`` (room limit).
        """
        if not project_id:
            raise ValueError("project_id must be a non-empty string")

        def pred(m: Message) -> bool:
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
        return msg

    def _join_msg_with(self, project_id: str, user_id: Optional[str]) -> dict:
        msg: dict = {"type": "JOIN_PROJECT", "projectId": project_id}
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
        edit_type: str,
        project_id: str,
        payload: Any,
        operation_id: Optional[str] = None,
        *,
        timeout: float = 10.0,
    ) -> Optional[dict]:
        """Send an edit to the other members of ``project_id`` (which must have been joined).

        Waits up to ``timeout`` seconds for a connection. The server answers only on error
        (``ERROR`` ``Not a member of this project``), which arrives as a queued message. On v2
        returns the ack (``{"stream","epoch","offset"}`` once published), like ``send``.
        """
        if edit_type not in EDIT_TYPES:
            raise ValueError(f"unknown edit type {edit_type!r}; expected one of {EDIT_TYPES}")
        msg: dict = {"type": edit_type, "projectId": project_id, "payload": payload}
        if operation_id is not None:
            msg["operationId"] = operation_id
        return await self.send(msg, timeout=timeout)

    async def send_task_create(self, project_id: str, task: Any, operation_id: Optional[str] = None) -> Optional[dict]:
        """``TASK_CREATE``."""
        return await self.send_edit("TASK_CREATE", project_id, task, operation_id)

    async def send_task_update(self, project_id: str, task: Any, operation_id: Optional[str] = None) -> Optional[dict]:
        """``TASK_UPDATE``."""
        return await self.send_edit("TASK_UPDATE", project_id, task, operation_id)

    async def send_task_delete(self, project_id: str, task: Any, operation_id: Optional[str] = None) -> Optional[dict]:
        """``TASK_DELETE``."""
        return await self.send_edit("TASK_DELETE", project_id, task, operation_id)

    async def send_comment_create(self, project_id: str, comment: Any, operation_id: Optional[str] = None) -> Optional[dict]:
        """``COMMENT_CREATE``."""
        return await self.send_edit("COMMENT_CREATE", project_id, comment, operation_id)

    async def send_comment_update(self, project_id: str, comment: Any, operation_id: Optional[str] = None) -> Optional[dict]:
        """``COMMENT_UPDATE``."""
        return await self.send_edit("COMMENT_UPDATE", project_id, comment, operation_id)

    async def send_comment_delete(self, project_id: str, comment: Any, operation_id: Optional[str] = None) -> Optional[dict]:
        """``COMMENT_DELETE``."""
        return await self.send_edit("COMMENT_DELETE", project_id, comment, operation_id)

    async def send_project_update(self, project_id: str, project: Any, operation_id: Optional[str] = None) -> Optional[dict]:
        """``PROJECT_UPDATE``."""
        return await self.send_edit("PROJECT_UPDATE", project_id, project, operation_id)


async def broadcast(
    base_url: str,
    message_type: str,
    project_id: str,
    payload: Any = _ABSENT,
    *,
    operation_id: Optional[str] = None,
    timestamp: Optional[int] = None,
    user_id: Optional[str] = None,
    api_key: Optional[str] = None,
    timeout: float = 10.0,
) -> dict:
    """``POST /broadcast`` to every member of ``project_id``.

    Returns ``{"success":true,"message":"Broadcast sent","projectId":..,"clientCount":n}``.
    Leave ``payload`` out to send none. ``api_key`` is needed when the server sets
    ``COLLAB_API_KEY``. Raises :class:`~switchboard_clients.HttpError` on 4xx.
    """
    body: dict = {"type": message_type, "projectId": project_id}
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
    return expect_status(resp, 200)


async def health(base_url: str, timeout: float = 10.0) -> dict:
    """``GET /health``: ``{"status":"healthy","timestamp","clients","projects","uptime"}``."""
    resp = await http_request("GET", http_base(base_url) + "/health", timeout=timeout)
    return expect_status(resp, 200)


async def stats(base_url: str, timeout: float = 10.0) -> dict:
    """``GET /stats``: ``{"totalClients","totalProjects","projectStats"}``."""
    resp = await http_request("GET", http_base(base_url) + "/stats", timeout=timeout)
    return expect_status(resp, 200)

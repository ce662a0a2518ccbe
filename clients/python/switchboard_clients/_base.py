"""The reconnecting WebSocket client every system module builds on.

A :class:`ReconnectingClient` owns one background task that connects, reads frames, keeps a
heartbeat, and reconnects with capped, jittered exponential backoff whenever the connection
drops. Subclasses say what a "ready" connection is (for example "the server's greeting has
arrived"), how to restore their state on a new connection (re-subscribe, re-join), and whether the
system has an application-level ping.

Incoming messages are decoded JSON objects (``dict``). They reach the application three ways:

* ``async for msg in client`` / :meth:`ReconnectingClient.recv` /
  :meth:`ReconnectingClient.recv_match`: a bounded queue (oldest messages are dropped when it is
  full, see :attr:`ReconnectingClient.dropped`);
* the ``on_message`` callback (plain function or coroutine function), called for every message;
* :meth:`ReconnectingClient.expect`: a future for the next message matching a predicate, which
  does not take the message off the queue.

Protocol v2 (``docs/protocol/v2.md``) is the default: the client offers the ``switchboard.v2``
subprotocol, wraps what it sends in the envelope and unwraps what it receives, so the
application sees exactly the v1 messages. On top of that it keeps its session and its position in
every stream, presents them when it reconnects (the server replays what was missed), gives every
:meth:`ReconnectingClient.send` an id and resends unacknowledged ones after a reconnect, and
reports ``session``, ``subscribed``, ``recovered``, ``not_recovered``, ``gap`` and ``error``
events. A server without v2 (or ``protocol="v1"``) gives a plain v1 connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Generic,
    Literal,
    Mapping,
    Optional,
    Self,
    TypedDict,
    TypeGuard,
    TypeVar,
    Union,
    cast,
    overload,
)

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from .v2 import SUBPROTOCOL as SUBPROTOCOL  # the ``Sec-WebSocket-Protocol`` value of v2
from .v2 import (
    Ack,
    ErrorEvent,
    GapEvent,
    NotRecoveredEvent,
    Position,
    RecoveredEvent,
    SessionEvent,
    SubscribedEvent,
)

if TYPE_CHECKING:  # TypeIs is in typing from Python 3.13
    from typing_extensions import TypeIs

log = logging.getLogger("switchboard_clients")

JsonObject = dict[str, Any]
"""A decoded JSON object."""

Json = Any
"""Any JSON value (what ``json.loads`` returns): payloads the protocols relay untouched."""

Message = JsonObject
"""One decoded server frame (a JSON object). The system clients type theirs: their ``recv()``
returns their module's ``ServerMessage``."""

M = TypeVar("M")
"""The messages a client receives (its system's ``ServerMessage``)."""
C = TypeVar("C")
"""The messages a client sends (its system's ``ClientMessage``)."""
T = TypeVar("T")

Predicate = Callable[[M], bool]
"""A test on a received message."""
MessageCallback = Callable[[M], Union[None, Awaitable[None]]]
"""``on_message``: a plain or coroutine function of one message."""


class ClientError(Exception):
    """Base class of this package's errors."""


class NotConnected(ClientError):
    """No connection was ready within the time allowed."""


class ClientClosed(ClientError):
    """The client was closed (or stopped for good) and will not reconnect."""


class AuthenticationFailed(ClientError):
    """The server refused the credentials (for example DCDock's close 1008 after the upgrade)."""


class HandshakeRefused(ClientError):
    """The HTTP upgrade was answered with a non-101 status (404 path, 403 origin, 503 full)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upgrade refused with HTTP {status}")
        self.status = status


class BufferFull(ClientError):
    """Too many sent messages wait for their ack (``max_unacked``): the message was not sent."""


#: Most positions presented in one upgrade (the server reads at most 64).
MAX_POSITIONS = 64

#: Events a client reports (see :meth:`ReconnectingClient.on`).
EVENTS = ("session", "subscribed", "recovered", "not_recovered", "gap", "error")

EventName = Literal["session", "subscribed", "recovered", "not_recovered", "gap", "error"]

EventCallback = Callable[[Any], object]
"""A callback of one event (plain function or coroutine function)."""


class StreamPosition(TypedDict):
    """The position held for one stream (see :attr:`ReconnectingClient.positions`)."""

    epoch: str
    offset: int


@dataclass
class _Pending:
    """A sent message waiting for its ack."""

    id: str
    text: str
    future: "asyncio.Future[Optional[Ack]]"


@dataclass
class _Item:
    """What one received frame means for the application, delivered in order."""

    kind: str  # "msg", "pub", "session" or "event"
    msg: Optional[JsonObject] = None
    pos: Optional[tuple[Any, Any, Any]] = None
    events: list[tuple[str, Any]] = field(default_factory=list)


class HttpError(ClientError):
    """An HTTP endpoint answered with a status outside 2xx."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body


@dataclass
class Backoff:
    """Capped exponential backoff with jitter.

    The n-th retry (n = 0, 1, ...) waits a random time between half and all of
    ``min(cap, base * factor**n)`` seconds ("equal jitter"), so a crowd of clients that lost the
    same server do not all come back in the same instant, and no retry is immediate.
    """

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        ceiling = min(self.cap, self.base * (self.factor ** min(attempt, 64)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass
class CloseInfo:
    """How the last connection ended."""

    code: Optional[int]
    reason: str
    #: The HTTP status when the upgrade itself was refused.
    http_status: Optional[int] = None


def _is_type(kind: str) -> Callable[[Any], bool]:
    return lambda m: bool(m.get("type") == kind)


def as_predicate(what: Union[str, Callable[[M], bool]]) -> Callable[[M], bool]:
    """A predicate from a message ``type`` string or a callable."""
    return _is_type(what) if isinstance(what, str) else what


class ClientOptions(TypedDict, Generic[M], total=False):
    """The keyword options every system client takes (see :class:`ReconnectingClient`), for
    typing a subclass's ``**kwargs``."""

    backoff: Optional["Backoff"]
    heartbeat_interval: Optional[float]
    heartbeat_timeout: float
    on_message: Optional[MessageCallback[M]]
    on_connect: Optional[Callable[[], object]]
    on_disconnect: Optional[Callable[["CloseInfo"], object]]
    queue_size: int
    open_timeout: float
    max_size: int
    origin: Optional[str]
    headers: Optional[Mapping[str, str]]
    protocol: Literal["v2", "v1"]
    max_unacked: int
    on_session: Optional[Callable[[SessionEvent], object]]
    on_subscribed: Optional[Callable[[SubscribedEvent], object]]
    on_recovered: Optional[Callable[[RecoveredEvent], object]]
    on_not_recovered: Optional[Callable[[NotRecoveredEvent], object]]
    on_gap: Optional[Callable[[GapEvent], object]]
    on_error: Optional[Callable[[ErrorEvent], object]]


class ReconnectingClient(Generic[M, C]):
    """A WebSocket client that stays connected.

    Call :meth:`start` (or use ``async with``) to begin; :meth:`wait_connected` waits for a ready
    connection; :meth:`close` stops for good.

    Parameters common to every system client:

    - ``backoff``: the reconnect delays (:class:`Backoff`).
    - ``heartbeat_interval`` / ``heartbeat_timeout``: for systems with an application-level ping,
      how often to send it and how long to wait for the ``pong`` before the connection is treated
      as dead and replaced. For the others these drive the WebSocket-level ping of the
      ``websockets`` library instead. ``None`` disables the client's own heartbeat (the server's
      WebSocket pings are still answered).
    - ``on_message``: callback for every message.
    - ``on_connect`` / ``on_disconnect``: callbacks when a connection becomes ready / ends
      (``on_disconnect`` gets a :class:`CloseInfo`).
    - ``queue_size``: how many unread messages to keep.
    - ``open_timeout``: seconds allowed for the TCP connect, upgrade and greeting.
    - ``origin`` / ``headers``: an ``Origin`` header (browsers send one; servers that check
      origins refuse unlisted ones) and other upgrade headers.
    - ``protocol``: ``"v2"`` (default) or ``"v1"``. With ``"v2"`` a server that does not serve v2
      still gets a (v1) connection; :attr:`protocol` says which one is in use.
    - ``max_unacked``: sent messages kept until acked (v2); one more raises :class:`BufferFull`.
    - ``on_session``, ``on_subscribed``, ``on_recovered``, ``on_not_recovered``, ``on_gap``,
      ``on_error``: callbacks for the v2 events (see :meth:`on`).
    """

    #: Whether the protocol defines an application-level ping (``{"type":"ping"}`` -> ``pong``).
    app_ping: bool = False

    def __init__(
        self,
        url: str,
        *,
        backoff: Optional[Backoff] = None,
        heartbeat_interval: Optional[float] = 25.0,
        heartbeat_timeout: float = 10.0,
        on_message: Optional[MessageCallback[M]] = None,
        on_connect: Optional[Callable[[], object]] = None,
        on_disconnect: Optional[Callable[[CloseInfo], object]] = None,
        queue_size: int = 10_000,
        open_timeout: float = 10.0,
        max_size: int = 16 * 1024 * 1024,
        origin: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        protocol: Literal["v2", "v1"] = "v2",
        max_unacked: int = 1000,
        on_session: Optional[Callable[[SessionEvent], object]] = None,
        on_subscribed: Optional[Callable[[SubscribedEvent], object]] = None,
        on_recovered: Optional[Callable[[RecoveredEvent], object]] = None,
        on_not_recovered: Optional[Callable[[NotRecoveredEvent], object]] = None,
        on_gap: Optional[Callable[[GapEvent], object]] = None,
        on_error: Optional[Callable[[ErrorEvent], object]] = None,
    ) -> None:
        if protocol not in ("v2", "v1"):
            raise ValueError(f'protocol must be "v2" or "v1", not {protocol!r}')
        self.url = url
        #: The protocol asked for (``"v2"`` or ``"v1"``).
        self.requested_protocol = protocol
        #: The protocol of the current (or last) connection: ``"v2"``, ``"v1"``, or ``None``.
        self.protocol: Optional[Literal["v2", "v1"]] = None
        #: The subprotocol the server accepted on the current (or last) connection (``None``: none).
        self.subprotocol: Optional[str] = None
        #: The v2 session id (kept across reconnects), or ``None``.
        self.session: Optional[str] = None
        #: Whether the server still had the session when the last v2 connection presented it.
        self.session_resumed: Optional[bool] = None
        self.max_unacked = max(1, max_unacked)
        self._positions: dict[str, tuple[str, int]] = {}
        self._unacked: list[_Pending] = []
        self._next_id = 0
        self._listeners: dict[str, list[EventCallback]] = {name: [] for name in EVENTS}
        callbacks: tuple[tuple[str, Optional[EventCallback]], ...] = (
            ("session", on_session),
            ("subscribed", on_subscribed),
            ("recovered", on_recovered),
            ("not_recovered", on_not_recovered),
            ("gap", on_gap),
            ("error", on_error),
        )
        for name, cb in callbacks:
            if cb is not None:
                self._listeners[name].append(cb)
        self._early: list[_Item] = []
        self._v2 = False
        self.backoff = backoff or Backoff()
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.on_message = on_message
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.open_timeout = open_timeout
        self.max_size = max_size
        self.origin = origin
        self.headers = dict(headers or {})
        self._queue: asyncio.Queue[JsonObject] = asyncio.Queue(maxsize=max(1, queue_size))
        self._waiters: list[tuple[Callable[[Any], bool], asyncio.Future[Any]]] = []
        self._ws: Optional[ClientConnection] = None
        self._ready = asyncio.Event()
        self._state_lock = asyncio.Lock()
        self._task: Optional[asyncio.Task[None]] = None
        self._closing = False
        self._fatal: Optional[BaseException] = None
        #: Number of connections that became ready so far (1 after the first, 2 after a reconnect).
        self.connections = 0
        #: Messages dropped because the queue was full.
        self.dropped = 0
        #: How the most recent connection or attempt ended (``None`` before the first end).
        self.last_close: Optional[CloseInfo] = None

    # ----- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Self:
        """Start the background connection task (idempotent)."""
        if self._closing:
            raise ClientClosed("client is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """Whether a ready connection is open now."""
        return self._ready.is_set()

    async def wait_connected(self, timeout: Optional[float] = None) -> None:
        """Wait until a connection is ready.

        Raises :class:`NotConnected` on timeout, or the error that stopped the client for good
        (for example :class:`AuthenticationFailed`).
        """
        await self.start()
        ready = asyncio.ensure_future(self._ready.wait())
        assert self._task is not None
        done, _ = await asyncio.wait(
            {ready, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready in done:
            return
        ready.cancel()
        if self._task in done:
            raise self._fatal or ClientClosed("client is closed")
        raise NotConnected(f"no connection to {self._display_url()} within {timeout} s")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and stop reconnecting."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(code, reason)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._ready.clear()
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(ClientClosed("client is closed"))
        self._waiters.clear()
        self._fail_unacked(ClientClosed("client is closed"))

    def _fail_unacked(self, err: BaseException) -> None:
        for entry in self._unacked:
            if not entry.future.done():
                entry.future.set_exception(err)
                entry.future.exception()  # retrieved: no "never retrieved" warning if unawaited
        self._unacked.clear()

    async def drop_connection(self) -> None:
        """Close the current connection abruptly; the client reconnects (useful in tests)."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()

    # ----- sending -----------------------------------------------------------------------------

    async def send(self, message: C, *, timeout: float = 10.0) -> Optional[Ack]:
        """Send one message (a JSON object) and, on v2, wait for its ack.

        Waits up to ``timeout`` seconds for a ready connection (else :class:`NotConnected`). On a
        v2 connection the message gets an id (``c-<n>``) and is kept until the server acks it: if
        the connection drops first, it is sent again (same id, in order) on the next connection,
        and the server processes it once. Returns the ack: ``{"stream","epoch","offset"}`` when
        the message published into a stream, ``{}`` otherwise (``"duplicate": True`` added when it
        answered a resend). On a v1 connection returns ``None`` once sent. Raises
        :class:`BufferFull` when ``max_unacked`` messages wait for their ack, and
        :class:`ClientClosed` if the client is closed before the ack came.
        """
        return await (await self.submit(message, timeout=timeout))

    async def submit(
        self, message: C, *, timeout: float = 10.0
    ) -> "asyncio.Future[Optional[Ack]]":
        """Send like :meth:`send`, returning as soon as it is sent (or kept for the next
        connection), with a future for its ack (``None`` on v1)."""
        return await self._submit(json.dumps(message, separators=(",", ":")), timeout)

    async def send_json(self, message: C, *, timeout: float = 10.0) -> Optional[Ack]:
        """Same as :meth:`send` (kept for the v1 API)."""
        return await self.send(message, timeout=timeout)

    async def send_text(self, text: str, *, timeout: float = 10.0) -> Optional[Ack]:
        """Send a message given as JSON text, kept byte for byte (on v2 it goes in the envelope
        as is, so it must be JSON). Returns like :meth:`send`."""
        return await (await self._submit(text, timeout))

    async def send_frame(self, text: str, *, timeout: float = 10.0) -> None:
        """Send one raw WebSocket text frame as is, outside the v2 envelope and without an ack."""
        await self.wait_connected(timeout)
        ws = self._ws
        if ws is None:
            raise NotConnected("connection lost")
        await ws.send(text)

    @property
    def unacked(self) -> int:
        """How many sent messages wait for their ack."""
        return len(self._unacked)

    async def _submit(self, text: str, timeout: float) -> "asyncio.Future[Optional[Ack]]":
        await self.wait_connected(timeout)
        fut: asyncio.Future[Optional[Ack]] = asyncio.get_running_loop().create_future()
        async with self._state_lock:
            if self._closing:
                raise ClientClosed("client is closed")
            ws = self._ws
            if self.connected and self.protocol == "v1" and ws is not None:
                await ws.send(text)
                fut.set_result(None)
                return fut
            if self.requested_protocol == "v1":
                raise NotConnected("connection lost")
            try:
                json.loads(text)
            except ValueError:
                raise ValueError("a v2 message must be JSON text") from None
            if len(self._unacked) >= self.max_unacked:
                raise BufferFull(
                    f"{len(self._unacked)} sent messages wait for their ack (max_unacked)"
                )
            self._next_id += 1
            entry = _Pending(f"c-{self._next_id}", text, fut)
            self._unacked.append(entry)
            # Not ready (the connection just dropped): the next connection sends it.
            if self.connected and ws is not None:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(self._envelope(entry))
        return fut

    @staticmethod
    def _envelope(entry: _Pending) -> str:
        """``{"sb":"msg","id":..,"msg":<text>}``, the message text kept byte for byte."""
        return '{"sb":"msg","id":' + json.dumps(entry.id) + ',"msg":' + entry.text + "}"

    async def _flush_unacked(self) -> None:
        """On a new connection (under the state lock): resend every unacked message, in order."""
        ws = self._ws
        if ws is None:
            raise NotConnected("connection lost")
        if self.protocol == "v2":
            for entry in list(self._unacked):
                await ws.send(self._envelope(entry))
        else:
            # The server does not speak v2 (any more): send them as v1, where nothing is acked.
            while self._unacked:
                entry = self._unacked.pop(0)
                await ws.send(entry.text)
                if not entry.future.done():
                    entry.future.set_result(None)

    async def _send_now(
        self, message: Mapping[str, Any], *, since: Optional[list[Position]] = None
    ) -> None:
        """Send a message at once, without an id (joins, subscriptions, pings). On v2 it goes
        in the envelope, with ``since`` positions when given."""
        ws = self._ws
        if ws is None:
            raise NotConnected("connection lost")
        if self.protocol != "v2":
            await ws.send(json.dumps(message, separators=(",", ":")))
            return
        frame: JsonObject = {"sb": "msg"}
        if since:
            frame["since"] = since
        frame["msg"] = message
        await ws.send(json.dumps(frame, separators=(",", ":")))

    async def _update_state(self, change: Callable[[], object], message: Mapping[str, Any]) -> bool:
        """Record a state change, then send ``message`` if a connection is ready.

        Runs under the lock that :meth:`_resume` holds, so a change is either part of the state
        a new connection restores or sent on a ready connection, never lost in between. Returns
        whether the message was sent now.
        """
        async with self._state_lock:
            change()
            if not self.connected:
                return False
            try:
                await self._send_now(message)
            except (ConnectionClosed, NotConnected):
                return False
            return True

    # ----- receiving ---------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[M]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[M]:
        while True:
            try:
                yield await self.recv()
            except ClientClosed:
                return

    async def recv(self, timeout: Optional[float] = None) -> M:
        """The next queued message. Raises ``TimeoutError`` after ``timeout`` seconds."""
        if not self._queue.empty():
            return cast(M, self._queue.get_nowait())
        await self.start()
        assert self._task is not None
        get = asyncio.ensure_future(self._queue.get())
        done, _ = await asyncio.wait(
            {get, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if get in done:
            return cast(M, get.result())
        get.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await get
        if self._task in done:
            raise self._fatal or ClientClosed("client is closed")
        raise TimeoutError(f"no message within {timeout} s")

    @overload
    async def recv_match(self, what: Callable[[M], TypeIs[T]], timeout: float = 5.0) -> T: ...

    @overload
    async def recv_match(self, what: Callable[[M], TypeGuard[T]], timeout: float = 5.0) -> T: ...

    @overload
    async def recv_match(
        self, what: Union[str, Callable[[M], bool]], timeout: float = 5.0
    ) -> M: ...

    async def recv_match(self, what: Union[str, Callable[[M], bool]], timeout: float = 5.0) -> Any:
        """Take messages off the queue until one matches (a ``type`` or a predicate; a
        ``TypeGuard`` predicate narrows the result's type).

        Messages that do not match are discarded. Raises ``TimeoutError`` after ``timeout`` s.
        """
        pred = as_predicate(what)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching message within {timeout} s")
            msg = await self.recv(left)
            if pred(msg):
                return msg

    def drain(self) -> list[M]:
        """Take every queued message without waiting."""
        out: list[M] = []
        while not self._queue.empty():
            out.append(cast(M, self._queue.get_nowait()))
        return out

    @overload
    def expect(self, what: Callable[[M], TypeIs[T]]) -> "asyncio.Future[T]": ...

    @overload
    def expect(self, what: Callable[[M], TypeGuard[T]]) -> "asyncio.Future[T]": ...

    @overload
    def expect(self, what: Union[str, Callable[[M], bool]]) -> "asyncio.Future[M]": ...

    def expect(self, what: Union[str, Callable[[M], bool]]) -> "asyncio.Future[Any]":
        """A future for the next message (from now on) that matches; the queue is not touched."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append((as_predicate(what), fut))
        return fut

    async def _dispatch(self, msg: JsonObject) -> None:
        keep = []
        for pred, fut in self._waiters:
            if fut.done():
                continue
            try:
                hit = pred(msg)
            except Exception:  # a predicate that chokes on a message simply does not match
                hit = False
            if hit:
                fut.set_result(msg)
            else:
                keep.append((pred, fut))
        self._waiters = keep
        if self._is_heartbeat_reply(msg):
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(msg)
        if self.on_message is not None:
            try:
                result = self.on_message(cast(M, msg))
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_message callback failed")

    # ----- v2: events, positions, frames -------------------------------------------------------

    @overload
    def on(
        self, name: Literal["session"], callback: Callable[[SessionEvent], object]
    ) -> Self: ...

    @overload
    def on(
        self, name: Literal["subscribed"], callback: Callable[[SubscribedEvent], object]
    ) -> Self: ...

    @overload
    def on(
        self, name: Literal["recovered"], callback: Callable[[RecoveredEvent], object]
    ) -> Self: ...

    @overload
    def on(
        self, name: Literal["not_recovered"], callback: Callable[[NotRecoveredEvent], object]
    ) -> Self: ...

    @overload
    def on(
        self, name: Literal["gap"], callback: Callable[[GapEvent], object]
    ) -> Self: ...

    @overload
    def on(
        self, name: Literal["error"], callback: Callable[[ErrorEvent], object]
    ) -> Self: ...

    def on(self, name: EventName, callback: EventCallback) -> Self:
        """Call ``callback(event)`` (plain or coroutine function) for every ``name`` event:

        - ``session`` ``{"id", "resumed"}``: a v2 connection named its session;
        - ``subscribed`` ``{"stream", "epoch", "offset", ...}``: every ``subscribed`` frame;
        - ``recovered`` ``{"stream", "replayed", "epoch", "offset"}``: what was missed on
          ``stream`` while away was replayed (before this event, in order);
        - ``not_recovered`` ``{"stream", "reason", ...}``: what was missed cannot be given back
          (``trimmed``, ``epoch``, ``ahead``, ``session``, ``unavailable``): reload the state as
          at startup;
        - ``gap`` ``{"stream", "epoch", "from", "to"}``: offsets skipped on this connection
          (slow reader): reload;
        - ``error`` ``{"error"}``: the server could not read a frame's envelope.
        """
        if name not in self._listeners:
            raise ValueError(f"unknown event {name!r}; expected one of {EVENTS}")
        self._listeners[name].append(callback)
        return self

    def off(self, name: EventName, callback: EventCallback) -> Self:
        """Stop calling ``callback`` for ``name``."""
        with contextlib.suppress(KeyError, ValueError):
            self._listeners[name].remove(callback)
        return self

    @overload
    def expect_event(
        self, name: Literal["session"], pred: Optional[Callable[[SessionEvent], bool]] = None
    ) -> "asyncio.Future[SessionEvent]": ...

    @overload
    def expect_event(
        self, name: Literal["subscribed"], pred: Optional[Callable[[SubscribedEvent], bool]] = None
    ) -> "asyncio.Future[SubscribedEvent]": ...

    @overload
    def expect_event(
        self, name: Literal["recovered"], pred: Optional[Callable[[RecoveredEvent], bool]] = None
    ) -> "asyncio.Future[RecoveredEvent]": ...

    @overload
    def expect_event(
        self,
        name: Literal["not_recovered"],
        pred: Optional[Callable[[NotRecoveredEvent], bool]] = None,
    ) -> "asyncio.Future[NotRecoveredEvent]": ...

    @overload
    def expect_event(
        self, name: Literal["gap"], pred: Optional[Callable[[GapEvent], bool]] = None
    ) -> "asyncio.Future[GapEvent]": ...

    @overload
    def expect_event(
        self, name: Literal["error"], pred: Optional[Callable[[ErrorEvent], bool]] = None
    ) -> "asyncio.Future[ErrorEvent]": ...

    def expect_event(
        self, name: EventName, pred: Optional[Callable[[Any], bool]] = None
    ) -> "asyncio.Future[Any]":
        """A future for the next ``name`` event (from now on) matching ``pred``."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def listener(event: Any) -> None:
            if fut.done():
                self.off(name, listener)
                return
            try:
                hit = pred is None or pred(event)
            except Exception:
                hit = False
            if hit:
                self.off(name, listener)
                fut.set_result(event)

        self.on(name, listener)
        fut.add_done_callback(lambda _: self.off(name, listener))
        return fut

    def _emit(self, name: str, event: Any) -> None:
        for cb in list(self._listeners[name]):
            self._fire(cb, event)

    @property
    def positions(self) -> dict[str, StreamPosition]:
        """The position held for each stream: ``{stream: {"epoch", "offset"}}``."""
        return {k: {"epoch": e, "offset": o} for k, (e, o) in self._positions.items()}

    def _forget_stream(self, stream: str) -> None:
        """Forget the position of ``stream`` (a room left for good)."""
        self._positions.pop(stream, None)

    def _since_for(self, stream: str) -> list[Position]:
        """``[{stream, epoch, offset}]`` if a position is held (for an envelope's ``since``)."""
        p = self._positions.get(stream)
        return [{"stream": stream, "epoch": p[0], "offset": p[1]}] if p else []

    def _present_in_url(self, stream: str) -> bool:
        """Whether the position of ``stream`` goes in the upgrade URL (else the subclass
        presents it itself)."""
        return True

    def _attempt_url(self, v2: bool) -> str:
        """The URL of the next attempt: the subclass's, plus ``sb_session``/``sb_since`` on v2."""
        url = self._connect_url()
        if not v2:
            return url
        params = []
        if self.session:
            params.append(("sb_session", self.session))
        held = [(k, p) for k, p in self._positions.items() if self._present_in_url(k)]
        for stream, (epoch, offset) in held[-MAX_POSITIONS:]:
            params.append(("sb_since", f"{stream}~{epoch}~{offset}"))
        if not params:
            return url
        sep = "&" if "?" in url else "?"
        return url + sep + urllib.parse.urlencode(params)

    def _inbound(self, frame: JsonObject) -> Optional[_Item]:
        """What one received frame means (an item to deliver in order), or ``None``. Acks are
        settled here."""
        if not self._v2:
            return _Item("msg", frame)
        sb = frame.get("sb")
        if sb == "msg":
            msg = frame.get("msg")
            return _Item("msg", msg) if isinstance(msg, dict) else None
        if sb == "pub":
            msg = frame.get("msg")
            at = (frame.get("stream"), frame.get("epoch"), frame.get("offset"))
            return _Item("pub", msg if isinstance(msg, dict) else None, at)
        if sb == "session":
            self.session = frame.get("session")
            self.session_resumed = frame.get("resumed") is True
            session: JsonObject = {"id": self.session, "resumed": self.session_resumed}
            return _Item("session", events=[("session", session)])
        if sb == "subscribed":
            data: JsonObject = {k: v for k, v in frame.items() if k != "sb"}
            events: list[tuple[str, Any]] = [("subscribed", data)]
            common: JsonObject = {
                "stream": frame.get("stream"),
                "epoch": frame.get("epoch"),
                "offset": frame.get("offset"),
            }
            if frame.get("recovered") is True:
                events.append(("recovered", {**common, "replayed": frame.get("replayed", 0)}))
            elif frame.get("recovered") is False:
                events.append(("not_recovered", {**common, "reason": frame.get("reason")}))
            pos: Optional[tuple[Any, Any, Any]] = None
            if "epoch" in frame and "offset" in frame:
                pos = (frame.get("stream"), frame["epoch"], frame["offset"])
            return _Item("event", pos=pos, events=events)
        if sb == "ack":
            for i, entry in enumerate(self._unacked):
                if entry.id == frame.get("id"):
                    del self._unacked[i]
                    ack: Ack = {}
                    if "stream" in frame:
                        ack["stream"] = frame["stream"]
                        ack["epoch"] = cast(str, frame.get("epoch"))
                        ack["offset"] = cast(int, frame.get("offset"))
                    if frame.get("duplicate") is True:
                        ack["duplicate"] = True
                    if not entry.future.done():
                        entry.future.set_result(ack)
                    break
            return None
        if sb == "gap":
            gap: JsonObject = {k: frame.get(k) for k in ("stream", "epoch", "from", "to")}
            return _Item("event", events=[("gap", gap)])
        if sb == "error":
            return _Item("event", events=[("error", {"error": frame.get("error")})])
        return None

    async def _deliver(self, item: _Item) -> None:
        """Hand one item to the application: record its position, then message and events."""
        if item.pos is not None:
            stream, epoch, offset = item.pos
            if isinstance(stream, str) and isinstance(epoch, str) and isinstance(offset, int):
                self._positions.pop(stream, None)  # most recently updated last: kept first
                self._positions[stream] = (epoch, offset)
        if item.msg is not None:
            await self._dispatch(item.msg)
        for name, event in item.events:
            self._emit(name, event)

    async def _next_item(self, ws: ClientConnection) -> Optional[_Item]:
        """Read frames until one means something (during the handshake)."""
        while True:
            try:
                raw = await ws.recv()
            except ConnectionClosed as e:
                rcvd = e.rcvd
                if rcvd is not None and rcvd.code == 1008:
                    raise AuthenticationFailed(rcvd.reason or "policy violation") from None
                raise
            if isinstance(raw, bytes):
                continue
            try:
                frame = json.loads(raw)
            except ValueError:
                continue
            if isinstance(frame, dict):
                item = self._inbound(frame)
                if item is not None:
                    return item

    # ----- hooks for subclasses ----------------------------------------------------------------

    def _connect_url(self) -> str:
        """The URL for the next connection attempt (may change, e.g. a fresh token)."""
        return self.url

    async def _prepare(self) -> None:
        """Called before each connection attempt (e.g. to refresh a token)."""

    async def _handshake(self, ws: ClientConnection) -> None:
        """Wait for the server's greeting, if the protocol has one."""

    async def _resume(self) -> None:
        """Restore the client's state (subscriptions, rooms) on a new connection."""

    def _ping_message(self) -> Optional[JsonObject]:
        """The application-level ping, when :attr:`app_ping` is set."""
        return {"type": "ping"} if self.app_ping else None

    def _is_heartbeat_reply(self, msg: JsonObject) -> bool:
        return self.app_ping and msg.get("type") == "pong"

    def _display_url(self) -> str:
        return self.url.split("?", 1)[0]

    def _close_is_fatal(self, info: CloseInfo, ready: bool) -> Optional[BaseException]:
        """An error to stop reconnecting with, or ``None`` to retry.

        By default an upgrade refused with a 4xx status (wrong path, origin not allowed) is
        final, except 408 and 429; 5xx (503: server full) and network errors are retried.
        """
        s = info.http_status
        if s is not None and 400 <= s < 500 and s not in (408, 429):
            return HandshakeRefused(s)
        return None

    # ----- the connection task -----------------------------------------------------------------

    async def ping(self, timeout: float = 10.0) -> M:
        """Send the application-level ping and wait for its ``pong`` (systems that have one)."""
        msg = self._ping_message()
        if msg is None:
            raise ClientError("this protocol has no application-level ping")
        pong = self.expect("pong")
        try:
            await self.wait_connected(timeout)
            await self._send_now(msg)  # no id: a ping is not acked, nor resent after a reconnect
            return await asyncio.wait_for(pong, timeout)
        finally:
            pong.cancel()

    async def _heartbeat(self, ws: ClientConnection) -> None:
        assert self.heartbeat_interval is not None
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.ping(self.heartbeat_timeout)
            except (TimeoutError, asyncio.TimeoutError):
                log.warning("no pong from %s; reconnecting", self._display_url())
                ws.transport.abort()
                return
            except (ConnectionClosed, NotConnected):
                return

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                ready = False
                info = CloseInfo(None, "")
                try:
                    await self._prepare()
                    ws_ping = None if self.app_ping else self.heartbeat_interval
                    ask_v2 = self.requested_protocol == "v2"
                    self._early = []
                    async with asyncio.timeout(self.open_timeout):
                        ws = await connect(
                            self._attempt_url(ask_v2),
                            subprotocols=[Subprotocol(SUBPROTOCOL)] if ask_v2 else None,
                            open_timeout=self.open_timeout,
                            ping_interval=ws_ping,
                            ping_timeout=self.heartbeat_timeout if ws_ping else None,
                            close_timeout=2,
                            max_size=self.max_size,
                            proxy=None,
                            compression=None,
                            origin=self.origin,  # type: ignore[arg-type]
                            additional_headers=self.headers or None,
                        )
                        self._ws = ws
                        self.subprotocol = ws.subprotocol
                        self._v2 = ask_v2 and ws.subprotocol == SUBPROTOCOL
                        self.protocol = "v2" if self._v2 else "v1"
                        if self._v2:
                            first = await self._next_item(ws)
                            if first is None or first.kind != "session":
                                raise ClientError("v2: expected the `session` frame first")
                            self._early.append(first)
                        await self._handshake(ws)
                    reader = asyncio.ensure_future(self._read(ws))
                    try:
                        # Restore state before anyone else may send, so that e.g. an edit
                        # waiting for the connection goes out after the re-join it needs.
                        async with self._state_lock:
                            await self._resume()
                            await self._flush_unacked()
                            ready = True
                            attempt = 0
                            self.connections += 1
                            self._ready.set()
                    except BaseException:
                        reader.cancel()
                        raise
                    log.debug("connected to %s", self._display_url())
                    self._fire(self.on_connect)
                    beat = (
                        asyncio.ensure_future(self._heartbeat(ws))
                        if self.app_ping and self.heartbeat_interval
                        else None
                    )
                    try:
                        await reader
                    finally:
                        if beat is not None:
                            beat.cancel()
                    info = self._close_info(ws)
                except InvalidStatus as e:
                    status = e.response.status_code
                    info = CloseInfo(None, f"HTTP {status}", status)
                    log.info("upgrade refused by %s: %s", self._display_url(), info.reason)
                except ConnectionClosed as e:
                    info = CloseInfo(e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else "")
                except (OSError, TimeoutError, asyncio.TimeoutError) as e:
                    info = CloseInfo(None, str(e) or type(e).__name__)
                except AuthenticationFailed as e:
                    info = CloseInfo(1008, str(e))
                except ClientError as e:
                    info = CloseInfo(None, str(e))
                except Exception as e:  # protocol errors from the library, bad greeting, ...
                    log.warning("connection to %s failed: %r", self._display_url(), e)
                    info = CloseInfo(None, repr(e))
                finally:
                    self._ready.clear()
                    ws_now, self._ws = self._ws, None
                    if ws_now is not None:
                        with contextlib.suppress(Exception):
                            ws_now.transport.abort()
                self.last_close = info
                if ready:
                    self._fire(self.on_disconnect, info)
                fatal = self._close_is_fatal(info, ready)
                if fatal is not None:
                    self._fatal = fatal
                    return
                if self._closing:
                    return
                delay = self.backoff.delay(attempt)
                attempt += 1
                log.debug(
                    "connection to %s ended (%s %s); retry in %.2f s",
                    self._display_url(),
                    info.code,
                    info.reason,
                    delay,
                )
                await asyncio.sleep(delay)
        finally:
            self._ready.clear()
            for _, fut in self._waiters:
                if not fut.done():
                    fut.set_exception(self._fatal or ClientClosed("client is closed"))
            self._waiters.clear()

    async def _read(self, ws: ClientConnection) -> None:
        # What came in with the greeting goes out first, in order.
        early, self._early = self._early, []
        for waiting in early:
            await self._deliver(waiting)
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue  # every protocol here is JSON text; ignore stray binary frames
                try:
                    msg = json.loads(raw)
                except ValueError:
                    log.warning("ignoring a frame that is not JSON: %.80r", raw)
                    continue
                if isinstance(msg, dict):
                    item = self._inbound(msg)
                    if item is not None:
                        await self._deliver(item)
        except ConnectionClosed:
            pass

    @staticmethod
    def _close_info(ws: ClientConnection) -> CloseInfo:
        rcvd = ws.protocol.close_rcvd
        if rcvd is not None:
            return CloseInfo(rcvd.code, rcvd.reason)
        return CloseInfo(None, "connection lost")

    def _fire(self, callback: Optional[Callable[..., Any]], *args: Any) -> None:
        if callback is None:
            return
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)
        except Exception:
            log.exception("lifecycle callback failed")

    async def _read_greeting(self, ws: ClientConnection, kind: str) -> JsonObject:
        """Read the first message and check it is ``kind``; handles a close instead of it.

        On v2, publications and events before it are kept (in order) for delivery once the
        connection is ready."""
        while True:
            item = await self._next_item(ws)
            assert item is not None
            if item.kind == "msg":
                break
            self._early.append(item)
        msg = item.msg
        if not isinstance(msg, dict) or msg.get("type") != kind:
            raise ClientError(f"expected `{kind}` first, got {json.dumps(msg)!r:.120}")
        return msg


# ----- HTTP helpers (standard library only) -----------------------------------------------------


@dataclass
class HttpResponse:
    """An HTTP answer: status, headers and the body (parsed JSON, text, or ``None`` if empty)."""

    status: int
    headers: dict[str, str]
    body: Any


def _http_sync(
    method: str,
    url: str,
    body: Optional[bytes],
    headers: Mapping[str, str],
    timeout: float,
) -> HttpResponse:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            status, hdrs, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, dict(e.headers or {}), e.read()
    text = raw.decode("utf-8", "replace")
    parsed: Any = None
    if text.strip():
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
    return HttpResponse(status, hdrs, parsed)


async def http_request(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    raw_body: Optional[Union[str, bytes]] = None,
    api_key: Optional[str] = None,
    headers: Optional[Mapping[str, str]] = None,
    timeout: float = 10.0,
) -> HttpResponse:
    """One HTTP request via ``urllib`` in a worker thread. Never raises for a 4xx/5xx status."""
    h = {"Accept": "application/json"}
    body: Optional[bytes] = None
    if json_body is not None:
        body = json.dumps(json_body, separators=(",", ":")).encode()
        h["Content-Type"] = "application/json"
    elif raw_body is not None:
        body = raw_body.encode() if isinstance(raw_body, str) else raw_body
        h["Content-Type"] = "application/json"
    if api_key:
        h["X-API-Key"] = api_key
    if headers:
        h.update(headers)
    return await asyncio.to_thread(_http_sync, method, url, body, h, timeout)


def expect_status(resp: HttpResponse, *ok: int) -> Any:
    """The body if the status is one of ``ok``; otherwise raise :class:`HttpError`."""
    if resp.status not in ok:
        raise HttpError(resp.status, resp.body)
    return resp.body


def http_base(url: str) -> str:
    """``http://host:port`` for a ``ws://host:port/...`` (or ``http://...``) URL."""
    scheme, rest = url.split("://", 1)
    host = rest.split("/", 1)[0].split("?", 1)[0]
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{scheme}://{host}"


def ws_url(base: str, path: str) -> str:
    """``ws://host:port<path>`` from ``host:port``, ``http://host:port`` or ``ws://host:port``."""
    if "://" not in base:
        base = "ws://" + base
    scheme, rest = base.split("://", 1)
    host = rest.split("/", 1)[0]
    scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    return f"{scheme}://{host}{path}"

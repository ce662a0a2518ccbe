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
import urllib.request
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional, Union

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

log = logging.getLogger("switchboard_clients")

Message = dict
"""One decoded server frame (a JSON object)."""

Predicate = Callable[[Message], bool]
MessageCallback = Callable[[Message], Union[None, Awaitable[None]]]


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


def _is_type(kind: str) -> Predicate:
    return lambda m: m.get("type") == kind


def as_predicate(what: Union[str, Predicate]) -> Predicate:
    """A predicate from a message ``type`` string or a callable."""
    return _is_type(what) if isinstance(what, str) else what


class ReconnectingClient:
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
        on_message: Optional[MessageCallback] = None,
        on_connect: Optional[Callable[[], Any]] = None,
        on_disconnect: Optional[Callable[[CloseInfo], Any]] = None,
        queue_size: int = 10_000,
        open_timeout: float = 10.0,
        max_size: int = 16 * 1024 * 1024,
        origin: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.url = url
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
        self._queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=max(1, queue_size))
        self._waiters: list[tuple[Predicate, asyncio.Future[Message]]] = []
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

    async def start(self) -> "ReconnectingClient":
        """Start the background connection task (idempotent)."""
        if self._closing:
            raise ClientClosed("client is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aenter__(self) -> "ReconnectingClient":
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

    async def drop_connection(self) -> None:
        """Close the current connection abruptly; the client reconnects (useful in tests)."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()

    # ----- sending -----------------------------------------------------------------------------

    async def send_json(self, message: Mapping[str, Any], *, timeout: float = 10.0) -> None:
        """Send one JSON object, waiting up to ``timeout`` seconds for a ready connection."""
        await self.wait_connected(timeout)
        await self._send_now(message)

    async def send_text(self, text: str, *, timeout: float = 10.0) -> None:
        """Send a raw text frame (for protocols that relay bytes exactly)."""
        await self.wait_connected(timeout)
        ws = self._ws
        if ws is None:
            raise NotConnected("connection lost")
        await ws.send(text)

    async def _send_now(self, message: Mapping[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            raise NotConnected("connection lost")
        await ws.send(json.dumps(message, separators=(",", ":")))

    async def _update_state(self, change: Callable[[], Any], message: Mapping[str, Any]) -> bool:
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

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.recv()
            except ClientClosed:
                return

    async def recv(self, timeout: Optional[float] = None) -> Message:
        """The next queued message. Raises ``TimeoutError`` after ``timeout`` seconds."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        await self.start()
        assert self._task is not None
        get = asyncio.ensure_future(self._queue.get())
        done, _ = await asyncio.wait(
            {get, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if get in done:
            return get.result()
        get.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await get
        if self._task in done:
            raise self._fatal or ClientClosed("client is closed")
        raise TimeoutError(f"no message within {timeout} s")

    async def recv_match(self, what: Union[str, Predicate], timeout: float = 5.0) -> Message:
        """Take messages off the queue until one matches (a ``type`` or a predicate).

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

    def drain(self) -> list[Message]:
        """Take every queued message without waiting."""
        out = []
        while not self._queue.empty():
            out.append(self._queue.get_nowait())
        return out

    def expect(self, what: Union[str, Predicate]) -> "asyncio.Future[Message]":
        """A future for the next message (from now on) that matches; the queue is not touched."""
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiters.append((as_predicate(what), fut))
        return fut

    async def _dispatch(self, msg: Message) -> None:
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
                result = self.on_message(msg)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_message callback failed")

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

    def _ping_message(self) -> Optional[Message]:
        """The application-level ping, when :attr:`app_ping` is set."""
        return {"type": "ping"} if self.app_ping else None

    def _is_heartbeat_reply(self, msg: Message) -> bool:
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

    async def ping(self, timeout: float = 10.0) -> Message:
        """Send the application-level ping and wait for its ``pong`` (systems that have one)."""
        msg = self._ping_message()
        if msg is None:
            raise ClientError("this protocol has no application-level ping")
        pong = self.expect("pong")
        try:
            await self.send_json(msg, timeout=timeout)
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
                    async with asyncio.timeout(self.open_timeout):
                        ws = await connect(
                            self._connect_url(),
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
                        await self._handshake(ws)
                    reader = asyncio.ensure_future(self._read(ws))
                    try:
                        # Restore state before anyone else may send, so that e.g. an edit
                        # waiting for the connection goes out after the re-join it needs.
                        async with self._state_lock:
                            await self._resume()
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
                    await self._dispatch(msg)
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

    async def _read_greeting(self, ws: ClientConnection, kind: str) -> Message:
        """Read the first frame and check it is ``kind``; handles a close instead of it."""
        try:
            raw = await ws.recv()
        except ConnectionClosed as e:
            rcvd = e.rcvd
            code = rcvd.code if rcvd else None
            reason = rcvd.reason if rcvd else ""
            if code == 1008:
                raise AuthenticationFailed(reason or "policy violation") from None
            raise
        msg = json.loads(raw)
        if not isinstance(msg, dict) or msg.get("type") != kind:
            raise ClientError(f"expected `{kind}` first, got {raw!r:.120}")
        return msg


# ----- HTTP helpers (standard library only) -----------------------------------------------------


@dataclass
class HttpResponse:
    """An HTTP answer: status, headers and the body (parsed JSON, text, or ``None`` if empty)."""

    status: int
    headers: dict
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

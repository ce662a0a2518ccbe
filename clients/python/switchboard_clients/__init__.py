"""Python clients for the switchboard hub's five systems.

One module per system, each with a reconnecting client class and HTTP publishing helpers:

- :mod:`switchboard_clients.laptimes` (:class:`LaptimesClient`)
- :mod:`switchboard_clients.afc` (:class:`AfcClient`, ``publish_event``)
- :mod:`switchboard_clients.race` (:class:`RaceClient`, ``publish_update``)
- :mod:`switchboard_clients.collab` (:class:`CollabClient`, ``broadcast``)
- :mod:`switchboard_clients.dcdock` (:class:`DcdockClient`, ``publish``)

:mod:`switchboard_clients.devtoken` makes HS256 JWTs for local DCDock testing.

Messages are typed (``TypedDict``): each system module has ``ClientMessage`` (what its client
sends), ``ServerMessage`` (what ``recv()`` returns) and, where the system has a publish endpoint,
``PublishBody``; :mod:`switchboard_clients.v2` has the v2 frames and the events. The package is
typed (``py.typed``) and checked with ``mypy --strict``.
"""

from ._base import (
    AuthenticationFailed,
    Backoff,
    BufferFull,
    ClientClosed,
    ClientError,
    ClientOptions,
    CloseInfo,
    HandshakeRefused,
    HttpError,
    HttpResponse,
    Json,
    JsonObject,
    NotConnected,
    ReconnectingClient,
    SUBPROTOCOL,
    StreamPosition,
    http_request,
)
from . import v2
from .afc import AfcClient
from .collab import CollabClient
from .dcdock import DcdockClient
from .laptimes import LaptimesClient
from .race import RaceClient

__all__ = [
    "AfcClient",
    "AuthenticationFailed",
    "Backoff",
    "BufferFull",
    "ClientClosed",
    "ClientError",
    "ClientOptions",
    "CloseInfo",
    "CollabClient",
    "DcdockClient",
    "HandshakeRefused",
    "HttpError",
    "HttpResponse",
    "Json",
    "JsonObject",
    "LaptimesClient",
    "NotConnected",
    "RaceClient",
    "ReconnectingClient",
    "SUBPROTOCOL",
    "StreamPosition",
    "http_request",
    "v2",
]

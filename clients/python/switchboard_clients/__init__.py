"""Python clients for the switchboard hub's five systems.

One module per system, each with a reconnecting client class and HTTP publishing helpers:

- :mod:`switchboard_clients.laptimes` (:class:`LaptimesClient`)
- :mod:`switchboard_clients.afc` (:class:`AfcClient`, ``publish_event``)
- :mod:`switchboard_clients.race` (:class:`RaceClient`, ``publish_update``)
- :mod:`switchboard_clients.collab` (:class:`CollabClient`, ``broadcast``)
- :mod:`switchboard_clients.dcdock` (:class:`DcdockClient`, ``publish``)

:mod:`switchboard_clients.devtoken` makes HS256 JWTs for local DCDock testing.
"""

from ._base import (
    AuthenticationFailed,
    Backoff,
    BufferFull,
    ClientClosed,
    ClientError,
    CloseInfo,
    HandshakeRefused,
    HttpError,
    HttpResponse,
    NotConnected,
    ReconnectingClient,
    SUBPROTOCOL,
    http_request,
)
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
    "CloseInfo",
    "CollabClient",
    "DcdockClient",
    "HandshakeRefused",
    "HttpError",
    "HttpResponse",
    "LaptimesClient",
    "NotConnected",
    "RaceClient",
    "ReconnectingClient",
    "SUBPROTOCOL",
    "http_request",
]

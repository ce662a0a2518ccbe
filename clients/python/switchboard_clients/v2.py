"""Protocol v2 frames and client events, typed (``docs/protocol/v2.md``).

A v2 frame is a JSON object whose ``sb`` field says what it is; the system's own message travels
inside as ``msg``. The clients wrap and unwrap frames themselves, so an application sees only
its system's messages and the events below; these types are for code that reads the wire (tests,
proxies, other clients) and for the events' callbacks.

Frames that carry a system message are generic in it: ``PubFrame[laptimes.ServerMessage]``,
``ServerFrame[race.ServerMessage]``, ``ClientFrame[collab.ClientMessage]``.

Every JSON example of the protocol documents is checked against these types by
``clients/doc_examples.py`` (``python/tests/test_types.py``).
"""

from __future__ import annotations

from typing import Generic, Literal, NotRequired, TypedDict, TypeVar, Union

#: The ``Sec-WebSocket-Protocol`` value of protocol v2.
SUBPROTOCOL = "switchboard.v2"

#: Every ``sb`` kind the server sends.
SERVER_KINDS = ("session", "pub", "msg", "subscribed", "ack", "gap", "error")

#: Why a ``subscribed`` frame says ``recovered: false``.
NOT_RECOVERED_REASONS = ("trimmed", "epoch", "ahead", "session", "unavailable")

NotRecoveredReason = Literal["trimmed", "epoch", "ahead", "session", "unavailable"]

M = TypeVar("M")
"""The system message a frame carries."""


class Position(TypedDict):
    """A stream position: everything of ``stream`` up to and including ``offset``."""

    stream: str
    #: 16 hex digits naming the stream's history.
    epoch: str
    offset: int


# ----- client to server ---------------------------------------------------------------------------


class ClientFrame(TypedDict, Generic[M]):
    """The only frame a client sends: ``{"sb":"msg","msg":..}``, with an optional ``id`` (acked,
    recognised when resent) and ``since`` positions (at most 64)."""

    sb: Literal["msg"]
    msg: M
    id: NotRequired[str]
    since: NotRequired[list[Position]]


# ----- server to client ---------------------------------------------------------------------------


class SessionFrame(TypedDict):
    """The first frame of every v2 connection: its session, and whether it was resumed."""

    sb: Literal["session"]
    #: 32 hex digits.
    session: str
    resumed: bool


class PubFrame(TypedDict, Generic[M]):
    """A publication of a stream, with its position."""

    sb: Literal["pub"]
    stream: str
    epoch: str
    offset: int
    msg: M


class MsgFrame(TypedDict, Generic[M]):
    """A message that is not a kept publication (greetings, replies, errors, presence); ``re``
    is the id of the client message it answers."""

    sb: Literal["msg"]
    msg: M
    re: NotRequired[str]


class SubscribedFreshFrame(TypedDict):
    """Subscribed to ``stream`` without a position presented (a first connect): live from
    ``offset``. Without ``epoch``/``offset`` the history was unavailable."""

    sb: Literal["subscribed"]
    stream: str
    epoch: NotRequired[str]
    offset: NotRequired[int]


class SubscribedRecoveredFrame(TypedDict):
    """Everything after the presented position was replayed (``replayed`` frames, before this)."""

    sb: Literal["subscribed"]
    stream: str
    epoch: NotRequired[str]
    offset: NotRequired[int]
    recovered: Literal[True]
    replayed: int


class SubscribedNotRecoveredFrame(TypedDict):
    """What was missed cannot be given back: reload the state, then carry on from ``offset``."""

    sb: Literal["subscribed"]
    stream: str
    epoch: NotRequired[str]
    offset: NotRequired[int]
    recovered: Literal[False]
    reason: NotRecoveredReason


SubscribedFrame = Union[SubscribedFreshFrame, SubscribedRecoveredFrame, SubscribedNotRecoveredFrame]
"""Any ``subscribed`` frame."""


class PlainAckFrame(TypedDict):
    """A client message with an ``id`` was processed (and published nothing)."""

    sb: Literal["ack"]
    id: str
    duplicate: NotRequired[Literal[True]]


class PublishedAckFrame(TypedDict):
    """A client message with an ``id`` was processed and published at this position."""

    sb: Literal["ack"]
    id: str
    stream: str
    epoch: str
    offset: int
    duplicate: NotRequired[Literal[True]]


AckFrame = Union[PlainAckFrame, PublishedAckFrame]
"""Any ``ack`` frame."""

GapFrame = TypedDict(
    "GapFrame",
    {"sb": Literal["gap"], "stream": str, "epoch": str, "from": int, "to": int},
)
"""Offsets ``from`` to ``to`` (inclusive) of ``stream`` were skipped on this connection."""


class ErrorFrame(TypedDict):
    """The server could not read a frame's envelope (at most 120 bytes of reason)."""

    sb: Literal["error"]
    error: str


ServerFrame = Union[
    SessionFrame,
    PubFrame[M],
    MsgFrame[M],
    SubscribedFreshFrame,
    SubscribedRecoveredFrame,
    SubscribedNotRecoveredFrame,
    PlainAckFrame,
    PublishedAckFrame,
    GapFrame,
    ErrorFrame,
]
"""Any frame the server sends, carrying system messages of type ``M``."""


# ----- events (what the clients report) -----------------------------------------------------------


class SessionEvent(TypedDict):
    """``session``: a v2 connection named its session."""

    id: str
    resumed: bool


class SubscribedEvent(TypedDict):
    """``subscribed``: a ``subscribed`` frame, without its ``sb``."""

    stream: str
    epoch: NotRequired[str]
    offset: NotRequired[int]
    recovered: NotRequired[bool]
    replayed: NotRequired[int]
    reason: NotRequired[NotRecoveredReason]


class RecoveredEvent(TypedDict):
    """``recovered``: what was missed on ``stream`` was replayed, just before this event."""

    stream: str
    replayed: int
    epoch: str
    offset: int


class NotRecoveredEvent(TypedDict):
    """``not_recovered``: what was missed cannot be given back; reload the state."""

    stream: str
    reason: NotRecoveredReason
    epoch: str | None
    offset: int | None


GapEvent = TypedDict("GapEvent", {"stream": str, "epoch": str, "from": int, "to": int})
"""``gap``: offsets ``from``..``to`` of ``stream`` were skipped on this connection."""


class ErrorEvent(TypedDict):
    """``error``: the server could not read a frame's envelope."""

    error: str


class Ack(TypedDict, total=False):
    """What ``send`` resolves to on v2: ``{}``, or the position the message was published at,
    with ``duplicate`` when the ack answered a resend."""

    stream: str
    epoch: str
    offset: int
    duplicate: Literal[True]

// Protocol v2 frames and client events (docs/protocol/v2.md). A v2 frame is a JSON object whose
// `sb` says what it is; the system's own message travels inside as `msg`. The clients wrap and
// unwrap frames themselves, so an application sees only its system's messages and the events;
// these types are for code that reads the wire (tests, proxies) and for the event callbacks.
//
// Frames that carry a system message are generic in it: `PubFrame<laptimes.ServerMessage>`,
// `ServerFrame<race.ServerMessage>`, `ClientFrame<collab.ClientMessage>`.

import type { Json } from './base.js';

export { SUBPROTOCOL } from './base.js';

/** Every `sb` kind the server sends. */
export const SERVER_KINDS: readonly ['session', 'pub', 'msg', 'subscribed', 'ack', 'gap', 'error'];

/** Why a `subscribed` frame says `recovered: false`. */
export const NOT_RECOVERED_REASONS: readonly NotRecoveredReason[];

/** Why a `subscribed` frame says `recovered: false`. */
export type NotRecoveredReason = 'trimmed' | 'epoch' | 'ahead' | 'session' | 'unavailable';

/** A stream position: everything of `stream` up to and including `offset`. */
export interface Position {
  stream: string;
  /** 16 hex digits naming the stream's history. */
  epoch: string;
  offset: number;
}

// ----- client to server ---------------------------------------------------------------------

/**
 * The only frame a client sends: `{"sb":"msg","msg":..}`, with an optional `id` (acked, and
 * recognised when resent) and `since` positions (at most 64).
 */
export interface ClientFrame<M = Json> {
  sb: 'msg';
  msg: M;
  /** 1-64 bytes. */
  id?: string;
  since?: Position[];
}

// ----- server to client ---------------------------------------------------------------------

/** The first frame of every v2 connection: its session, and whether it was resumed. */
export interface SessionFrame {
  sb: 'session';
  /** 32 hex digits. */
  session: string;
  resumed: boolean;
}

/** A publication of a stream, with its position. */
export interface PubFrame<M = Json> {
  sb: 'pub';
  stream: string;
  epoch: string;
  offset: number;
  msg: M;
}

/**
 * A message that is not a kept publication (greetings, replies, errors, presence); `re` is the
 * id of the client message it answers.
 */
export interface MsgFrame<M = Json> {
  sb: 'msg';
  msg: M;
  re?: string;
}

interface SubscribedBase {
  sb: 'subscribed';
  stream: string;
  /** Absent when the history was unavailable. */
  epoch?: string;
  offset?: number;
}

/** Subscribed without a position presented (a first connect): live from `offset`. */
export interface SubscribedFreshFrame extends SubscribedBase {
  recovered?: never;
  replayed?: never;
  reason?: never;
}

/** Everything after the presented position was replayed (`replayed` frames, before this one). */
export interface SubscribedRecoveredFrame extends SubscribedBase {
  recovered: true;
  replayed: number;
  reason?: never;
}

/** What was missed cannot be given back: reload the state, then carry on from `offset`. */
export interface SubscribedNotRecoveredFrame extends SubscribedBase {
  recovered: false;
  reason: NotRecoveredReason;
  replayed?: never;
}

/** Any `subscribed` frame. */
export type SubscribedFrame = SubscribedFreshFrame | SubscribedRecoveredFrame | SubscribedNotRecoveredFrame;

/** A client message with an `id` was processed (and published nothing). */
export interface PlainAckFrame {
  sb: 'ack';
  id: string;
  stream?: never;
  epoch?: never;
  offset?: never;
  /** The ack answers a resend of a message already processed. */
  duplicate?: true;
}

/** A client message with an `id` was processed and published at this position. */
export interface PublishedAckFrame {
  sb: 'ack';
  id: string;
  stream: string;
  epoch: string;
  offset: number;
  duplicate?: true;
}

/** Any `ack` frame. */
export type AckFrame = PlainAckFrame | PublishedAckFrame;

/** Offsets `from` to `to` (inclusive) of `stream` were skipped on this connection. */
export interface GapFrame {
  sb: 'gap';
  stream: string;
  epoch: string;
  from: number;
  to: number;
}

/** The server could not read a frame's envelope (at most 120 bytes of reason). */
export interface ErrorFrame {
  sb: 'error';
  error: string;
}

/** Any frame the server sends, carrying system messages of type `M`. */
export type ServerFrame<M = Json> =
  | SessionFrame
  | PubFrame<M>
  | MsgFrame<M>
  | SubscribedFrame
  | AckFrame
  | GapFrame
  | ErrorFrame;

// ----- events (what the clients report) -----------------------------------------------------

/** `session`: a v2 connection named its session. */
export interface SessionEvent {
  id: string;
  resumed: boolean;
}

/** `subscribed`: a `subscribed` frame, without its `sb`. */
export type SubscribedEvent =
  | Omit<SubscribedFreshFrame, 'sb'>
  | Omit<SubscribedRecoveredFrame, 'sb'>
  | Omit<SubscribedNotRecoveredFrame, 'sb'>;

/** `recovered`: what was missed on `stream` was replayed, just before this event. */
export interface RecoveredEvent {
  stream: string;
  replayed: number;
  epoch: string;
  offset: number;
}

/** `notRecovered`: what was missed cannot be given back; reload the state. */
export interface NotRecoveredEvent {
  stream: string;
  reason: NotRecoveredReason;
  epoch: string | undefined;
  offset: number | undefined;
}

/** `gap`: offsets `from`..`to` of `stream` were skipped on this connection. */
export interface GapEvent {
  stream: string;
  epoch: string;
  from: number;
  to: number;
}

/** `error`: the server could not read a frame's envelope. */
export interface ErrorEvent {
  error: string;
}

/**
 * What `send` resolves to on v2: `{}`, or the position the message was published at, with
 * `duplicate` when the ack answered a resend.
 */
export interface Ack {
  stream?: string;
  epoch?: string;
  offset?: number;
  duplicate?: true;
}

// Types of base.js: the reconnecting client every system module builds on, the errors, and the
// HTTP helpers. Checked by `tsc --noEmit` (test/types.test.js): against every JSON example of
// docs/protocol/*.md, against the runtime exports of base.js, and by test/types/*.ts.

import type { Ack, GapEvent, NotRecoveredEvent, RecoveredEvent, SessionEvent, SubscribedEvent, ErrorEvent } from './v2.js';

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A JSON object. */
export type JsonObject = { [key: string]: Json };

/**
 * The members of the message union `M` whose `type` can be `T`: `MessageOfType<race.ServerMessage,
 * 'subscribed'>` is `race.Subscribed`. A member whose `type` is open (an AFC event's
 * `${string}:${string}`, a collab broadcast's `string`) is kept when `T` fits it.
 */
export type MessageOfType<M, T extends string> = M extends { type: infer U } ? (T extends U ? M : never) : never;

/** Base class of this package's errors. */
export class ClientError extends Error {
  constructor(message?: string);
}

/** No ready connection within the time allowed. */
export class NotConnected extends ClientError {}

/** The client was closed (or stopped for good) and will not reconnect. */
export class ClientClosed extends ClientError {}

/** The server refused the credentials (DCDock: close 1008 before `connection_ack`). */
export class AuthenticationFailed extends ClientError {}

/** The HTTP upgrade was refused with a 4xx status (wrong path, origin not allowed). */
export class HandshakeRefused extends ClientError {
  constructor(status: number);
  status: number;
}

/** An HTTP endpoint answered with a status outside 2xx. */
export class HttpError extends ClientError {
  constructor(status: number, body: unknown);
  status: number;
  /** The parsed JSON body, the text, or null. */
  body: unknown;
}

/** A `recv`/`expect` that waited longer than allowed. */
export class TimeoutError extends ClientError {}

/** Too many sent messages wait for their ack (`maxUnacked`): the message was not sent. */
export class BufferFull extends ClientError {}

/** The `Sec-WebSocket-Protocol` value of protocol v2. */
export const SUBPROTOCOL: 'switchboard.v2';

/**
 * Capped exponential backoff with "equal jitter": retry n (0-based) waits a random time between
 * half and all of min(cap, base * factor^n) milliseconds.
 */
export class Backoff {
  constructor(opts?: { base?: number; factor?: number; cap?: number });
  base: number;
  factor: number;
  cap: number;
  /** Milliseconds before retry number `attempt`. */
  delay(attempt: number): number;
}

/** A WebSocket class: the platform's (`globalThis.WebSocket`) or the `ws` package's. */
export type WebSocketClass = new (url: string, protocols?: string | string[], options?: object) => object;

/** The WebSocket class to use: `globalThis.WebSocket` when present, else the `ws` package. */
export function defaultWebSocket(): Promise<WebSocketClass>;

/** A test on a message. */
export type Predicate<M> = (msg: M) => boolean;

/** A predicate from a message `type` string or a function. */
export function asPredicate<M>(what: string | Predicate<M>): Predicate<M>;

/** `promise`, or a TimeoutError after `ms` milliseconds (`null`: no limit). */
export function withTimeout<T>(promise: Promise<T>, ms: number | null | undefined, what: string): Promise<T>;

/** A promise that can stop waiting (`expect`, `expectEvent`). */
export interface Expectation<T> extends Promise<T> {
  /** Stop waiting: the promise never settles. */
  cancel(): void;
}

/** How a connection (or an attempt) ended. */
export interface CloseInfo {
  /** The close code, or null when there was no close frame. */
  code: number | null;
  reason: string;
  /** The HTTP status when the upgrade itself was refused. */
  httpStatus?: number;
}

/** The protocol a client asks for or uses. */
export type Protocol = 'v2' | 'v1';

/** The events a client reports, and what each callback receives. */
export interface EventMap {
  /** A v2 connection named its session. */
  session: SessionEvent;
  /** Every `subscribed` frame (without its `sb`). */
  subscribed: SubscribedEvent;
  /** What was missed on `stream` while away was replayed, just before this event. */
  recovered: RecoveredEvent;
  /** What was missed cannot be given back: reload the state as at startup. */
  notRecovered: NotRecoveredEvent;
  /** Offsets `from`..`to` of `stream` were skipped on this connection (slow reader): reload. */
  gap: GapEvent;
  /** The server could not read a frame's envelope. */
  error: ErrorEvent;
}

/** An event's name. */
export type EventName = keyof EventMap;

/** A callback (plain or async). */
export type Callback<A extends unknown[]> = (...args: A) => unknown;

/** The options every client takes. `M` is the message type its system receives. */
export interface ClientOptions<M = JsonObject> {
  /** Reconnect delays (default: 0.5 s doubling up to 30 s). */
  backoff?: Backoff;
  /**
   * Ms between heartbeats (the app-level ping where the protocol has one, else a WebSocket ping
   * with the `ws` package). `null` disables. Default 25000.
   */
  heartbeatInterval?: number | null;
  /** Ms to wait for the pong before reconnecting. Default 10000. */
  heartbeatTimeout?: number;
  /** Called for every message. */
  onMessage?: Callback<[msg: M]>;
  /** Called when a connection is ready. */
  onConnect?: Callback<[]>;
  /** Called when a ready connection ends. */
  onDisconnect?: Callback<[info: CloseInfo]>;
  /** Unread messages kept (the oldest is dropped beyond). Default 10000. */
  queueSize?: number;
  /** Ms for connect, upgrade and greeting. Default 10000. */
  openTimeout?: number;
  /** WebSocket class (default: see `defaultWebSocket`). */
  WebSocket?: WebSocketClass;
  /** Upgrade headers (the `ws` package only). */
  headers?: Record<string, string>;
  /** `Origin` header (the `ws` package only; browsers send their own). */
  origin?: string;
  /** The protocol to ask for. Default 'v2' (a server without v2 still gives a v1 connection). */
  protocol?: Protocol;
  /** Sent messages kept until acked (v2); one more is refused with BufferFull. Default 1000. */
  maxUnacked?: number;
  onSession?: Callback<[event: SessionEvent]>;
  onSubscribed?: Callback<[event: SubscribedEvent]>;
  onRecovered?: Callback<[event: RecoveredEvent]>;
  onNotRecovered?: Callback<[event: NotRecoveredEvent]>;
  onGap?: Callback<[event: GapEvent]>;
  onError?: Callback<[event: ErrorEvent]>;
}

/** The string `type`s of a message union. */
export type TypeOf<M> = M extends { type: infer U extends string } ? U : never;

/**
 * A WebSocket client that stays connected: reconnects with backoff, restores its state, keeps a
 * heartbeat, and on protocol v2 resumes its streams and resends unacked messages.
 *
 * `M` is the message type it receives (its system's `ServerMessage`), `C` the message type it
 * sends (its system's `ClientMessage`).
 */
export class ReconnectingClient<M = JsonObject, C = JsonObject> {
  /** Whether the protocol has an application-level ping (`{"type":"ping"}` -> `pong`). */
  static appPing: boolean;

  constructor(url: string, opts?: ClientOptions<M>);

  /** The WebSocket URL. */
  url: string;
  /** The protocol asked for. */
  requestedProtocol: Protocol;
  /** The protocol of the current (or last) connection, or null before the first. */
  protocol: Protocol | null;
  /** The subprotocol the server accepted on the current (or last) connection ('' for none). */
  subprotocol: string | null;
  /** The v2 session id (kept across reconnects), or null. */
  session: string | null;
  /** Whether the server still had the session when the last v2 connection presented it. */
  sessionResumed: boolean | null;
  maxUnacked: number;
  backoff: Backoff;
  heartbeatInterval: number | null;
  heartbeatTimeout: number;
  onMessage: Callback<[msg: M]> | null;
  onConnect: Callback<[]> | null;
  onDisconnect: Callback<[info: CloseInfo]> | null;
  queueSize: number;
  openTimeout: number;
  WebSocketImpl: WebSocketClass | null;
  headers: Record<string, string> | null;
  origin: string | null;
  /** Connections that became ready so far (2 after one reconnect). */
  connections: number;
  /** Messages dropped because the queue was full. */
  dropped: number;
  /** How the most recent connection or attempt ended. */
  lastClose: CloseInfo | null;

  /** Start connecting in the background (idempotent). Returns the client. */
  start(): this;
  /** Whether a ready connection is open now. */
  get connected(): boolean;
  /** Wait until a connection is ready; rejects with NotConnected on timeout, or the fatal error. */
  waitConnected(timeout?: number | null): Promise<void>;
  /** Close the connection and stop reconnecting. */
  close(code?: number, reason?: string): Promise<void>;
  /** Drop the current connection without a close handshake; the client reconnects. */
  dropConnection(): void;

  /**
   * Send one message, waiting up to `timeout` ms for a ready connection. On v2 resolves to the
   * ack (`{stream, epoch, offset}` when it published into a stream, `{}` otherwise); on v1 to
   * null once sent.
   */
  send(message: C, opts?: { timeout?: number }): Promise<Ack | null>;
  /** Same as `send` (kept for the v1 API). */
  sendJson(message: C, opts?: { timeout?: number }): Promise<Ack | null>;
  /** Send a message given as JSON text, kept byte for byte. Resolves like `send`. */
  sendText(text: string, opts?: { timeout?: number }): Promise<Ack | null>;
  /** Send one raw WebSocket text frame as is, outside the v2 envelope and without an ack. */
  sendFrame(text: string, opts?: { timeout?: number }): Promise<void>;
  /** How many sent messages wait for their ack. */
  get unacked(): number;

  [Symbol.asyncIterator](): AsyncGenerator<M, void, unknown>;
  /** The next queued message; rejects with TimeoutError after `timeout` ms. */
  recv(timeout?: number | null): Promise<M>;
  /** Take messages off the queue until one matches (a `type` or a predicate); others are discarded. */
  recvMatch<T extends TypeOf<M>>(type: T, timeout?: number): Promise<MessageOfType<M, T>>;
  recvMatch<S extends M>(pred: (msg: M) => msg is S, timeout?: number): Promise<S>;
  recvMatch(what: string | Predicate<M>, timeout?: number): Promise<M>;
  /** Every queued message, without waiting. */
  drain(): M[];
  /** A promise for the next message (from now on) that matches; the queue is not touched. */
  expect<T extends TypeOf<M>>(type: T): Expectation<MessageOfType<M, T>>;
  expect<S extends M>(pred: (msg: M) => msg is S): Expectation<S>;
  expect(what: string | Predicate<M>): Expectation<M>;

  /** Listen to an event. Returns the client. */
  on<K extends EventName>(name: K, fn: Callback<[event: EventMap[K]]>): this;
  /** Stop listening. */
  off<K extends EventName>(name: K, fn: Callback<[event: EventMap[K]]>): this;
  /** A promise for the next `name` event (from now on) that matches `pred`. */
  expectEvent<K extends EventName>(name: K, pred?: (event: EventMap[K]) => boolean): Expectation<EventMap[K]>;
  /** The position held for each stream. */
  get positions(): Record<string, { epoch: string; offset: number }>;

  /** Send the application-level ping and wait for the `pong` (systems that have one). */
  ping(timeout?: number): Promise<M>;
}

/** An HTTP answer. */
export interface HttpResponse {
  status: number;
  /** The response headers (`fetch`'s `Headers`). */
  headers: { get(name: string): string | null };
  /** Parsed JSON, text, or null when empty. */
  body: unknown;
}

/** Options of the HTTP helpers. */
export interface HttpOptions {
  /** Sent as `X-API-Key`. */
  apiKey?: string;
  /** Ms. Default 10000. */
  timeout?: number;
}

/** One HTTP request with `fetch`. Never throws for a 4xx/5xx status. */
export function httpRequest(
  method: string,
  url: string,
  opts?: HttpOptions & { json?: unknown; body?: string; headers?: Record<string, string> },
): Promise<HttpResponse>;

/** The body if the status is one of `ok`, else throw HttpError. */
export function expectStatus(resp: HttpResponse, ...ok: number[]): unknown;

/** `http://host:port` for a `ws://host:port/...` or `http://...` URL. */
export function httpBase(url: string): string;

/** A promise resolved after `ms` milliseconds. */
export function sleep(ms: number): Promise<void>;

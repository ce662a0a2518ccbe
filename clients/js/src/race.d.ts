// Types of race.js (docs/protocol/race-v1.md).

import type { ClientError, ClientOptions, HttpOptions, Json, ReconnectingClient } from './base.js';

export const DEFAULT_URL: string;

/** The v2 stream of a session's room. */
export type Stream = `session:${string}`;

/** The eight update types. */
export type UpdateType =
  | 'session_update'
  | 'driver_update'
  | 'position_change'
  | 'lap_update'
  | 'sector_update'
  | 'tire_change'
  | 'status_change'
  | 'drs_update';

export const UPDATE_TYPES: readonly UpdateType[];

/** `{sessionId}`: 1-128 of `A-Z a-z 0-9 _ - . :`, at least one letter or digit. */
export interface SessionRef {
  sessionId: string;
}

/** Follow a session (answered with `subscribed`). */
export interface Subscribe {
  type: 'subscribe';
  data: SessionRef;
  /** Any string; ignored. */
  timestamp?: string;
}

/** Stop following a session (answered with `unsubscribed`). */
export interface Unsubscribe {
  type: 'unsubscribe';
  data: SessionRef;
  timestamp?: string;
}

/** Heartbeat (answered with `pong`); `data` may be left out. */
export interface Ping {
  type: 'ping';
  data?: Json;
  timestamp?: string;
}

/** The client now follows `data.sessionId`. */
export interface Subscribed {
  type: 'subscribed';
  data: SessionRef;
  timestamp: string;
}

/** The client no longer follows `data.sessionId`. */
export interface Unsubscribed {
  type: 'unsubscribed';
  data: SessionRef;
  timestamp: string;
}

/** The reply to `ping`. */
export interface Pong {
  type: 'pong';
  data: Record<string, never>;
  timestamp: string;
}

/** The reply to a message (or `?sessionId=`) the server could not accept. */
export interface ErrorMessage {
  type: 'error';
  data: { message: string; details: string };
  timestamp: string;
}

/** A live update for a followed session: `data` as published; `timestamp` the publisher's or the server's. */
export interface Update {
  type: UpdateType;
  data: Json;
  timestamp: string;
}

/** What a client sends. */
export type ClientMessage = Subscribe | Unsubscribe | Ping;

/** What a client receives: every server message is `{type, data, timestamp}`. */
export type ServerMessage = Subscribed | Unsubscribed | Pong | ErrorMessage | Update;

/** The body of `POST /sessions/<sessionId>/updates`; `timestamp` (ISO 8601 with a zone) defaults to the server's time. */
export interface PublishBody {
  type: UpdateType;
  data: Json;
  timestamp?: string;
}

/** The `202` answer: clients on this server the update was queued to. */
export interface PublishResponse {
  sessionId: string;
  delivered: number;
}

/** `GET /health`. */
export interface Health {
  status: string;
  clients: number;
  sessions: number;
  uptime: number;
}

/** One of the eight updates (not a reply). */
export function isUpdate(msg: ServerMessage | null | undefined): msg is Update;

/** The server answered with an `error` frame. */
export class RaceError extends ClientError {
  constructor(frame: ErrorMessage);
  frame: ErrorMessage;
}

/** `id` if it is a valid session id, else throws. */
export function checkSessionId(id: string): string;

/** The v2 stream of a race session's room. */
export function sessionStream(sessionId: string): Stream;

export interface RaceClientOptions extends ClientOptions<ServerMessage> {
  /** Session ids to follow from the start. */
  sessions?: string[];
}

export class RaceClient extends ReconnectingClient<ServerMessage, ClientMessage> {
  constructor(url?: string, opts?: RaceClientOptions);
  /** The sessions followed (and re-followed after a reconnect). */
  get sessions(): string[];
  /** Follow `sessionId`; with `wait`, resolves to the `subscribed` reply (RaceError on `error`). */
  subscribe(sessionId: string, opts?: { wait?: true; timeout?: number }): Promise<Subscribed>;
  subscribe(sessionId: string, opts: { wait: boolean; timeout?: number }): Promise<Subscribed | null>;
  /** Stop following `sessionId`; with `wait` (and a connection), resolves to `unsubscribed`. */
  unsubscribe(sessionId: string, opts?: { wait?: boolean; timeout?: number }): Promise<Unsubscribed | null>;
}

/** POST /sessions/<sessionId>/updates; resolves to {sessionId, delivered} (202). */
export function publishUpdate(
  baseUrl: string,
  sessionId: string,
  type: UpdateType,
  data: Json,
  opts?: HttpOptions & { timestamp?: string },
): Promise<PublishResponse>;

/** GET /health. */
export function health(baseUrl: string, opts?: { timeout?: number }): Promise<Health>;

// Types of dcdock.js (docs/protocol/dcdock-v1.md). Timestamps are ISO 8601 strings, seconds, no
// zone (UTC).

import type { ClientError, ClientOptions, HttpOptions, JsonObject, ReconnectingClient } from './base.js';

export const DEFAULT_URL: string;

/** The v2 stream of every assignment event and conflict. */
export type Stream = 'assignments';

/** A load's direction: inbound or outbound. */
export type Direction = 'IB' | 'OB';

export const DIRECTIONS: readonly Direction[];

/** The three assignment events, and the `action` each carries. */
export const ASSIGNMENT_TYPES: {
  readonly assignment_created: 'CREATE';
  readonly assignment_updated: 'UPDATE';
  readonly assignment_deleted: 'DELETE';
};

export type AssignmentType = keyof typeof ASSIGNMENT_TYPES;

/** A record id: an integer, or a non-empty string (`3` and `"3"` name the same user). */
export type Id = number | string;

/** A subscription filter (`{}`: everything). */
export interface Filters {
  direction?: Direction;
}

// ----- client to server ---------------------------------------------------------------------

/** Replace the connection's filter (absent, null or `{}`: everything). */
export interface Subscribe {
  type: 'subscribe';
  filters?: Filters | null;
}

/** Clear the filter. */
export interface Unsubscribe {
  type: 'unsubscribe';
}

/** Ask for a `pong`. */
export interface Ping {
  type: 'ping';
}

/** What a client sends. */
export type ClientMessage = Subscribe | Unsubscribe | Ping;

// ----- server to client ---------------------------------------------------------------------

/** The greeting, first on every authenticated connection. */
export interface ConnectionAck {
  type: 'connection_ack';
  timestamp: string;
  /** `user_<user id>_<serial>`. */
  client_id: string;
  /** Always `Connected to DCDock real-time updates`. */
  message: string;
}

/** The reply to `subscribe`: the filter now in force. */
export interface Subscribed {
  type: 'subscribed';
  timestamp: string;
  filters: Filters;
}

/** The reply to `unsubscribe`. */
export interface Unsubscribed {
  type: 'unsubscribed';
  timestamp: string;
}

/** The reply to `ping`. */
export interface Pong {
  type: 'pong';
  timestamp: string;
}

/** An assignment event of type `T` (`data`: the full assignment; before deletion for a delete). */
export interface AssignmentEventOf<T extends AssignmentType> {
  type: T;
  timestamp: string;
  assignment_id: Id;
  action: (typeof ASSIGNMENT_TYPES)[T];
  user_id: Id;
  user_email: string;
  /** Its `load.direction` decides which filtered boards get it. */
  data: JsonObject;
}

export type AssignmentCreated = AssignmentEventOf<'assignment_created'>;
export type AssignmentUpdated = AssignmentEventOf<'assignment_updated'>;
export type AssignmentDeleted = AssignmentEventOf<'assignment_deleted'>;

/** `assignment_created` / `assignment_updated` / `assignment_deleted`. */
export type AssignmentEvent = AssignmentCreated | AssignmentUpdated | AssignmentDeleted;

/** An update lost an optimistic-locking race; sent only to that user's connections. */
export interface ConflictEvent {
  type: 'conflict_detected';
  timestamp: string;
  assignment_id: Id;
  current_version: number;
  attempted_version: number;
  current_data: JsonObject;
  message: string;
  user_id: Id;
}

/** `error`, to the offending connection only (`message`: `Invalid message format`). */
export interface ErrorMessage {
  type: 'error';
  timestamp: string;
  message: string;
  details: string;
}

/** What a client receives. */
export type ServerMessage =
  | ConnectionAck
  | Subscribed
  | Unsubscribed
  | Pong
  | AssignmentCreated
  | AssignmentUpdated
  | AssignmentDeleted
  | ConflictEvent
  | ErrorMessage;

// ----- HTTP ---------------------------------------------------------------------------------

/** An event as a backend publishes it: `timestamp` defaults to now. */
export type Publishable<E extends { timestamp: string }> = Omit<E, 'timestamp'> & { timestamp?: string };

/** The body of `POST /api/ws/publish`: one event. */
export type PublishBody =
  | Publishable<AssignmentCreated>
  | Publishable<AssignmentUpdated>
  | Publishable<AssignmentDeleted>
  | Publishable<ConflictEvent>;

/** `GET /api/ws/stats` (at most 1000 clients; `truncated` when some were left out). */
export interface Stats {
  active_connections: number;
  clients: { client_id: string; filters: Filters }[];
  truncated?: true;
}

/** The server answered with an `error` frame. */
export class DcdockError extends ClientError {
  constructor(frame: ErrorMessage);
  frame: ErrorMessage;
}

/** assignment_created / _updated / _deleted. */
export function isAssignmentEvent(msg: ServerMessage | null | undefined): msg is AssignmentEvent;

/** A token, or a function (sync or async) that returns a fresh one for every connection. */
export type TokenSource = string | (() => string | Promise<string>);

export interface DcdockClientOptions extends ClientOptions<ServerMessage> {
  /** With a fixed string, a refused token stops the client (AuthenticationFailed). */
  token: TokenSource;
  /** The initial filter. */
  direction?: Direction | null;
}

export class DcdockClient extends ReconnectingClient<ServerMessage, ClientMessage> {
  constructor(url: string | undefined, opts: DcdockClientOptions);
  /** client_id from connection_ack (changes on reconnect). */
  clientId: string | null;
  /** The direction filter in force (null: every event). */
  get direction(): Direction | null;
  /** Only events for loads of `direction` (null: all). With `wait`, resolves to `subscribed`. */
  subscribe(direction?: Direction | null, opts?: { wait?: true; timeout?: number }): Promise<Subscribed>;
  subscribe(direction: Direction | null | undefined, opts: { wait: boolean; timeout?: number }): Promise<Subscribed | null>;
  /** Clear the filter. With `wait` (and a connection), resolves to `unsubscribed`. */
  unsubscribe(opts?: { wait?: boolean; timeout?: number }): Promise<Unsubscribed | null>;
}

/** POST /api/ws/publish one event; resolves to `delivered` (202). */
export function publish(baseUrl: string, event: PublishBody, opts?: HttpOptions): Promise<number>;

/** Publish assignment_created / _updated / _deleted (`action` filled in). */
export function publishAssignment(
  baseUrl: string,
  type: AssignmentType,
  opts: HttpOptions & { assignmentId: Id; userId: Id; userEmail: string; data: JsonObject; timestamp?: string },
): Promise<number>;

/** Publish conflict_detected to `userId`'s connections only. */
export function publishConflict(
  baseUrl: string,
  opts: HttpOptions & {
    assignmentId: Id;
    userId: Id;
    currentVersion: number;
    attemptedVersion: number;
    currentData: JsonObject;
    message?: string;
  },
): Promise<number>;

/** GET /api/ws/stats. */
export function stats(baseUrl: string, opts?: { timeout?: number }): Promise<Stats>;

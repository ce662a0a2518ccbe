// Types of afc.js (docs/protocol/afc-v1.md).

import type { ClientOptions, HttpOptions, HttpResponse, Json, ReconnectingClient } from './base.js';

export const DEFAULT_URL: string;

/** The v2 stream of every published event. */
export type Stream = 'events';

/** An event's type: `<entity>:<action>` (the publish path's last hyphen made a colon). */
export type EventType = `${string}:${string}`;

/** The only client message: asks for a `pong`. */
export interface Ping {
  type: 'ping';
}

/** A published event: `payload` is the POSTed body, byte for byte. */
export interface Event {
  type: EventType;
  payload: Json;
}

/** The reply to `ping`, to the sender only. */
export interface Pong {
  type: 'pong';
  /** Server time, `2025-01-01T12:30:00.000Z`. */
  payload: { timestamp: string };
}

/** The reply to a frame the server could not accept, to the sender only. */
export interface ErrorMessage {
  type: 'error';
  /** `message`: `Invalid message` or `Unknown message type`. */
  payload: { message: string; details: string };
}

/** What a client sends. */
export type ClientMessage = Ping;

/** What a client receives. */
export type ServerMessage = Event | Pong | ErrorMessage;

/** The body of `POST /events/<entity>-<action>`: any JSON value. */
export type PublishBody = Json;

/** A published event (`<entity>:<action>`), not a `pong` or `error` reply. */
export function isEvent(msg: ServerMessage | null | undefined): msg is Event;

/** `GET /health`. */
export interface Health {
  status: string;
  clients: number;
  uptime: number;
}

export class AfcClient extends ReconnectingClient<ServerMessage, ClientMessage> {
  constructor(url?: string, opts?: ClientOptions<ServerMessage>);
  /** Take queued messages until an event of `eventType` (`todo:created`) arrives. */
  waitEvent(eventType: EventType, timeout?: number): Promise<Event>;
}

/** `/events/todo-created` for `todo:created` or `todo-created`; throws for an invalid name. */
export function eventPath(event: string): string;

/** POST /events/<entity>-<action> with `payload` as the JSON body; expects 204. */
export function publishEvent(baseUrl: string, event: string, payload: PublishBody, opts?: HttpOptions): Promise<void>;

/** Like publishEvent with the body as text (kept byte for byte); returns the response. */
export function publishEventRaw(baseUrl: string, event: string, body: string, opts?: HttpOptions): Promise<HttpResponse>;

/** GET /health. */
export function health(baseUrl: string, opts?: { timeout?: number }): Promise<Health>;

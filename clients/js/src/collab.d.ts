// Types of collab.js (docs/protocol/collab-v1.md). Timestamps are Unix milliseconds (numbers).

import type { ClientError, ClientOptions, HttpOptions, Json, JsonObject, ReconnectingClient } from './base.js';
import type { Ack } from './v2.js';

export const DEFAULT_URL: string;

/** The v2 stream of a project's room. */
export type Stream = `project:${string}`;

/** The seven edits a client relays. */
export type EditType =
  | 'TASK_CREATE'
  | 'TASK_UPDATE'
  | 'TASK_DELETE'
  | 'COMMENT_CREATE'
  | 'COMMENT_UPDATE'
  | 'COMMENT_DELETE'
  | 'PROJECT_UPDATE';

export const EDIT_TYPES: readonly EditType[];
export const SERVER_TYPES: readonly ['CONNECTION_ESTABLISHED', 'USER_PRESENCE', 'ERROR'];

// ----- client to server ---------------------------------------------------------------------

/**
 * Name the user behind this connection: `payload.userId`, or (when that is absent or empty) the
 * top-level `userId`.
 */
export type SetUser =
  | { type: 'SET_USER'; payload: { userId: string }; userId?: string }
  | { type: 'SET_USER'; userId: string; payload?: JsonObject | null };

/** Join a project (`userId` sets the user first); every member gets USER_PRESENCE. */
export interface JoinProject {
  type: 'JOIN_PROJECT';
  projectId: string;
  userId?: string;
}

/** Leave a project; the remaining members get USER_PRESENCE. */
export interface LeaveProject {
  type: 'LEAVE_PROJECT';
  projectId: string;
}

/** An edit for a joined project, relayed to its other members (`payload` untouched, may be null). */
export interface Edit {
  type: EditType;
  projectId: string;
  payload: Json;
  operationId?: string;
}

/** What a client sends. */
export type ClientMessage = SetUser | JoinProject | LeaveProject | Edit;

// ----- server to client ---------------------------------------------------------------------

/** The greeting, first on every connection. */
export interface ConnectionEstablished {
  type: 'CONNECTION_ESTABLISHED';
  /** `client_<unix ms>_<serial>`. */
  clientId: string;
  timestamp: number;
}

/** One listed member in USER_PRESENCE. */
export interface ActiveUser {
  userId: string;
  clientId: string;
  /** When that connection opened. */
  joinedAt: number;
}

/** Who is in a project now (after a join, a leave, a SET_USER, a disconnect). */
export interface UserPresence {
  type: 'USER_PRESENCE';
  payload: { projectId: string; activeUsers: ActiveUser[]; userCount: number };
  /** `presence-<unix ms>`. */
  operationId: string;
  timestamp: number;
}

/**
 * An edit as the other members receive it, or a backend's `POST /broadcast` (whose `type` is the
 * backend's choice and whose `payload` may be absent).
 */
export interface RelayedEdit {
  type: string;
  payload?: Json;
  operationId?: string;
  timestamp: number;
  projectId: string;
  /** The sender's user, or null. */
  userId: string | null;
}

/** ERROR, to the offending connection only. */
export interface ErrorMessage {
  type: 'ERROR';
  message: string;
  details: string;
  /** The same text as `message`. */
  error: string;
  timestamp: number;
}

/** What a client receives. */
export type ServerMessage = ConnectionEstablished | UserPresence | ErrorMessage | RelayedEdit;

// ----- HTTP ---------------------------------------------------------------------------------

/** The body of `POST /broadcast`: any `type` but the server's own three. */
export interface BroadcastBody {
  type: string;
  projectId: string;
  payload?: Json;
  operationId?: string;
  timestamp?: number;
  userId?: string;
}

/** The body of the publish endpoint, `POST /broadcast`. */
export type PublishBody = BroadcastBody;

/** The `200` answer to `POST /broadcast`. */
export interface BroadcastResponse {
  success: boolean;
  message: string;
  projectId: string;
  clientCount: number;
}

/** `GET /health`. */
export interface Health {
  status: string;
  timestamp: number;
  clients: number;
  projects: number;
  uptime: number;
}

/** `GET /stats` (at most 1000 projects; `truncated` when some were left out). */
export interface Stats {
  totalClients: number;
  totalProjects: number;
  projectStats: Record<string, { clientCount: number; clients: string[] }>;
  truncated?: true;
}

/** The server answered with an ERROR frame. */
export class CollabError extends ClientError {
  constructor(frame: ErrorMessage);
  frame: ErrorMessage;
}

/** The v2 stream of a project's room. */
export function projectStream(projectId: string): Stream;

/** An edit or a backend broadcast (it has a `projectId`), not a greeting, presence or error. */
export function isUpdate(msg: ServerMessage | null | undefined): msg is RelayedEdit;

/** USER_PRESENCE. */
export function isPresence(msg: ServerMessage | null | undefined): msg is UserPresence;

/** The user ids listed in a USER_PRESENCE message. */
export function presenceUsers(msg: UserPresence | null | undefined): string[];

export interface CollabClientOptions extends ClientOptions<ServerMessage> {
  /** The user, named on every (re)connection. */
  userId?: string | null;
}

export interface EditOptions {
  operationId?: string;
  /** Ms to wait for a connection. */
  timeout?: number;
}

export class CollabClient extends ReconnectingClient<ServerMessage, ClientMessage> {
  constructor(url?: string, opts?: CollabClientOptions);
  userId: string | null;
  /** This connection's clientId (changes on reconnect). */
  clientId: string | null;
  /** The projects this client is in (re-joined after a reconnect). */
  get projects(): string[];
  /** Name the user behind this connection (no reply; members get USER_PRESENCE). */
  setUser(userId: string): Promise<void>;
  /** Join `projectId`; with `wait`, resolves to the USER_PRESENCE it produced (CollabError on ERROR). */
  joinProject(projectId: string, opts?: { userId?: string; wait?: true; timeout?: number }): Promise<UserPresence>;
  joinProject(projectId: string, opts: { userId?: string; wait: boolean; timeout?: number }): Promise<UserPresence | null>;
  /** Leave `projectId` (no reply; the remaining members get USER_PRESENCE). */
  leaveProject(projectId: string): Promise<void>;
  /** Send an edit to the other members of a joined project; on v2 resolves to the ack. */
  sendEdit(type: EditType, projectId: string, payload?: Json, opts?: EditOptions): Promise<Ack | null>;
  sendTaskCreate(projectId: string, task: Json, opts?: EditOptions): Promise<Ack | null>;
  sendTaskUpdate(projectId: string, task: Json, opts?: EditOptions): Promise<Ack | null>;
  sendTaskDelete(projectId: string, task: Json, opts?: EditOptions): Promise<Ack | null>;
  sendCommentCreate(projectId: string, comment: Json, opts?: EditOptions): Promise<Ack | null>;
  sendCommentUpdate(projectId: string, comment: Json, opts?: EditOptions): Promise<Ack | null>;
  sendCommentDelete(projectId: string, comment: Json, opts?: EditOptions): Promise<Ack | null>;
  sendProjectUpdate(projectId: string, project: Json, opts?: EditOptions): Promise<Ack | null>;
}

/** POST /broadcast to every member of `projectId`; leave `payload` undefined to send none. */
export function broadcast(
  baseUrl: string,
  type: string,
  projectId: string,
  payload?: Json,
  opts?: HttpOptions & { operationId?: string; timestamp?: number; userId?: string },
): Promise<BroadcastResponse>;

/** GET /health. */
export function health(baseUrl: string, opts?: { timeout?: number }): Promise<Health>;

/** GET /stats. */
export function stats(baseUrl: string, opts?: { timeout?: number }): Promise<Stats>;

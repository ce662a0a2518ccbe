// Types of laptimes.js (docs/protocol/laptimes-v1.md).

import type { ClientOptions, ReconnectingClient } from './base.js';

export const DEFAULT_URL: string;
export const TABLES: readonly string[];

/** The v2 stream of every relayed notice. */
export type Stream = 'all';

/**
 * A change notice, in both directions: `table` and `operation` (non-empty strings), an optional
 * ISO 8601 `timestamp`, and any other fields (relayed untouched).
 */
export interface ChangeNotice {
  /** `cars`, `tracks`, `drivers`, `times` (any other string is relayed too). */
  table: string;
  /** Always `CHANGE` in the seed. */
  operation: string;
  timestamp?: string | null;
  [extra: string]: unknown;
}

/** The reply to an invalid notice, to its sender alone. */
export interface ErrorReply {
  type: 'error';
  /** Always `Invalid change notice`. */
  message: string;
  details?: string;
}

/** What a client sends: a change notice. */
export type ClientMessage = ChangeNotice;

/** What a client receives: another client's notice, or an error reply. */
export type ServerMessage = ChangeNotice | ErrorReply;

/** A relayed change notice (it has a `table`), as opposed to an `error` reply. */
export function isNotice(msg: ServerMessage | null | undefined): msg is ChangeNotice;

/** The server's reply to an invalid notice (`type: "error"`, no `table`). */
export function isError(msg: ServerMessage | null | undefined): msg is ErrorReply;

export interface NotifyOptions {
  /** Default `CHANGE`. */
  operation?: string;
  /** Default: now (`toISOString()`); `null` sends null. */
  timestamp?: string | null;
  /** Extra fields, relayed untouched. */
  extra?: Record<string, unknown>;
  /** Ms to wait for a connection. */
  timeout?: number;
}

export class LaptimesClient extends ReconnectingClient<ServerMessage, ClientMessage> {
  constructor(url?: string, opts?: ClientOptions<ServerMessage>);
  /**
   * Tell every other client that `table` changed. Resolves to the notice sent (on v2, once the
   * server acked it).
   */
  notify(table: string, opts?: NotifyOptions): Promise<ChangeNotice>;
}

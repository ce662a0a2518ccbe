// PC2 Laptimes change-notice relay (docs/protocol/laptimes-v1.md).
//
// A change notice {table, operation, timestamp} sent by one client is relayed byte for byte to
// every other client. No rooms, no greeting, no application-level ping (the server's WebSocket
// pings keep the connection alive; under Node this client also sends WebSocket pings).

import { ReconnectingClient } from './base.js';

export const DEFAULT_URL = 'ws://localhost:3002/';
export const TABLES = ['cars', 'tracks', 'drivers', 'times'];

/** A relayed change notice (it has a `table`), as opposed to an `error` reply. */
export const isNotice = (msg) => typeof msg?.table === 'string';

/** The server's reply to an invalid notice (`type: "error"`, no `table`). */
export const isError = (msg) => msg?.type === 'error' && !('table' in msg);

export class LaptimesClient extends ReconnectingClient {
  static appPing = false;

  constructor(url = DEFAULT_URL, opts = {}) {
    super(url, opts);
  }

  /**
   * Tell every other client that `table` changed. Returns the notice sent (on v2, once the
   * server acked it: it is published exactly once, even if the connection drops meanwhile).
   * @param {string} table
   * @param {object} [opts]
   * @param {string} [opts.operation='CHANGE']
   * @param {string|null} [opts.timestamp] default: now (`toISOString()`); `null` sends null.
   * @param {object} [opts.extra] extra fields, relayed untouched.
   */
  async notify(table, { operation = 'CHANGE', timestamp, extra = {}, timeout } = {}) {
    const notice = {
      table,
      operation,
      timestamp: timestamp === undefined ? new Date().toISOString() : timestamp,
      ...extra,
    };
    await this.sendJson(notice, { timeout });
    return notice;
  }
}

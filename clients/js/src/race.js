// Race live updates (docs/protocol/race-v1.md).
//
// Clients follow sessions on ws://<host>:3000/ws and get the updates published for them;
// backends publish with POST /sessions/<sessionId>/updates (publishUpdate, needs RACE_API_KEY).
// The server forgets sessions on disconnect, so every (re)connection carries the followed
// sessions as `?sessionId=` parameters. Heartbeat: the protocol's ping/pong.

import { ClientError, ReconnectingClient, expectStatus, httpBase, httpRequest, withTimeout } from './base.js';

export const DEFAULT_URL = 'ws://localhost:3000/ws';

export const UPDATE_TYPES = [
  'session_update',
  'driver_update',
  'position_change',
  'lap_update',
  'sector_update',
  'tire_change',
  'status_change',
  'drs_update',
];

const SESSION_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

/** One of the eight updates (not a reply). */
export const isUpdate = (msg) => UPDATE_TYPES.includes(msg?.type);

/** The server answered with an `error` frame. */
export class RaceError extends ClientError {
  constructor(frame) {
    super(`${frame?.data?.message}: ${frame?.data?.details}`);
    this.frame = frame;
  }
}

/** `id` if it is a valid session id (1-128 of A-Z a-z 0-9 _ - . :), else throws. */
export function checkSessionId(id) {
  if (typeof id !== 'string' || !SESSION_ID.test(id)) {
    throw new TypeError(`invalid sessionId ${JSON.stringify(id)}: 1 to 128 characters of A-Z, a-z, 0-9, _ - . :`);
  }
  return id;
}

const request = (type, sessionId) => ({ type, data: { sessionId } });

/** The v2 stream of a race session's room. */
export const sessionStream = (sessionId) => `session:${sessionId}`;

function replyFor(type, sessionId) {
  return (m) => m?.type === 'error' || (m?.type === type && m?.data?.sessionId === sessionId);
}

export class RaceClient extends ReconnectingClient {
  static appPing = true;

  /**
   * @param {string} [url]
   * @param {object} [opts] ReconnectingClient options, plus `sessions`: ids to follow from the start.
   */
  constructor(url = DEFAULT_URL, opts = {}) {
    super(url, opts);
    this._sessions = new Set((opts.sessions ?? []).map(checkSessionId));
    this._urlSessions = new Set();
  }

  /** The sessions followed (and re-followed after a reconnect). */
  get sessions() {
    return [...this._sessions];
  }

  _connectUrl() {
    this._urlSessions = new Set(this._sessions);
    if (!this._sessions.size) return this.url;
    const q = new URLSearchParams([...this._sessions].map((s) => ['sessionId', s]));
    return `${this.url}${this.url.includes('?') ? '&' : '?'}${q}`;
  }

  async _resume() {
    for (const s of this._sessions) {
      if (!this._urlSessions.has(s)) this._sendNow(request('subscribe', s));
    }
  }

  /** Follow `sessionId`; with `wait`, resolves to the `subscribed` reply (RaceError on `error`). */
  async subscribe(sessionId, { wait = true, timeout = 10_000 } = {}) {
    checkSessionId(sessionId);
    const reply = wait ? this.expect(replyFor('subscribed', sessionId)) : null;
    await this._updateState(() => this._sessions.add(sessionId), request('subscribe', sessionId));
    if (!reply) return null;
    return this._awaitReply(reply, timeout, () => this._sessions.delete(sessionId));
  }

  /** Stop following `sessionId`; with `wait` (and a connection), resolves to `unsubscribed`. */
  async unsubscribe(sessionId, { wait = true, timeout = 10_000 } = {}) {
    checkSessionId(sessionId);
    const reply = wait ? this.expect(replyFor('unsubscribed', sessionId)) : null;
    const sent = await this._updateState(() => {
      this._sessions.delete(sessionId);
      this._forgetStream(sessionStream(sessionId));
    }, request('unsubscribe', sessionId));
    if (!reply || !sent) {
      reply?.cancel();
      return null;
    }
    return this._awaitReply(reply, timeout, null);
  }

  async _awaitReply(reply, timeout, onError) {
    let msg;
    try {
      msg = await withTimeout(reply, timeout, 'no reply');
    } finally {
      reply.cancel();
    }
    if (msg.type === 'error') {
      onError?.();
      throw new RaceError(msg);
    }
    return msg;
  }
}

/**
 * POST /sessions/<sessionId>/updates; resolves to {sessionId, delivered} (202).
 * `timestamp` (ISO 8601 with zone) defaults to the server's time. Throws HttpError on 4xx.
 */
export async function publishUpdate(baseUrl, sessionId, type, data, { apiKey, timestamp, timeout } = {}) {
  checkSessionId(sessionId);
  const json = { type, data };
  if (timestamp !== undefined) json.timestamp = timestamp;
  const resp = await httpRequest('POST', `${httpBase(baseUrl)}/sessions/${sessionId}/updates`, { json, apiKey, timeout });
  return expectStatus(resp, 202);
}

/** GET /health: {status, clients, sessions, uptime}. */
export async function health(baseUrl, { timeout } = {}) {
  return expectStatus(await httpRequest('GET', `${httpBase(baseUrl)}/health`, { timeout }), 200);
}

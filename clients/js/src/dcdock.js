// DCDock assignment updates (docs/protocol/dcdock-v1.md).
//
// Boards connect to ws://<host>:8000/api/ws?token=<JWT>, get connection_ack with their
// client_id, may subscribe to one load direction (IB/OB), and receive assignment_created /
// _updated / _deleted plus conflict_detected for their own user. Backends publish with
// POST /api/ws/publish (publish; needs DCDOCK_API_KEY). Heartbeat: the protocol's ping/pong.
//
// A bad or expired token closes with 1008 before connection_ack. With a fixed `token` string
// that stops the client (AuthenticationFailed); pass a function (sync or async, e.g. one that
// logs in again) to get a fresh token on every (re)connection and keep retrying.

import {
  AuthenticationFailed,
  ClientError,
  ReconnectingClient,
  expectStatus,
  httpBase,
  httpRequest,
  withTimeout,
} from './base.js';

export const DEFAULT_URL = 'ws://localhost:8000/api/ws';
export const DIRECTIONS = ['IB', 'OB'];
export const ASSIGNMENT_TYPES = {
  assignment_created: 'CREATE',
  assignment_updated: 'UPDATE',
  assignment_deleted: 'DELETE',
};

/** The server answered with an `error` frame. */
export class DcdockError extends ClientError {
  constructor(frame) {
    super(`${frame?.message}: ${frame?.details}`);
    this.frame = frame;
  }
}

function checkDirection(direction) {
  if (direction != null && !DIRECTIONS.includes(direction)) {
    throw new TypeError(`direction must be "IB", "OB" or null, not ${JSON.stringify(direction)}`);
  }
  return direction ?? null;
}

const subscribeMsg = (direction) => ({ type: 'subscribe', filters: direction ? { direction } : {} });

/** assignment_created / _updated / _deleted. */
export const isAssignmentEvent = (msg) => Object.hasOwn(ASSIGNMENT_TYPES, msg?.type ?? '');

export class DcdockClient extends ReconnectingClient {
  static appPing = true;

  /**
   * @param {string} [url]
   * @param {object} opts ReconnectingClient options, plus `token` (string, or a function
   *   returning one or a promise of one) and `direction` (initial filter).
   */
  constructor(url = DEFAULT_URL, opts = {}) {
    super(url, opts);
    this._tokenSource = opts.token;
    this._token = typeof opts.token === 'string' ? opts.token : null;
    this._direction = checkDirection(opts.direction);
    /** client_id from connection_ack (changes on reconnect). */
    this.clientId = null;
  }

  /** The direction filter in force (null: every event). */
  get direction() {
    return this._direction;
  }

  _displayUrl() {
    return this.url.split('?')[0];
  }

  async _prepare() {
    if (typeof this._tokenSource === 'function') this._token = await this._tokenSource();
  }

  _connectUrl() {
    const q = new URLSearchParams({ token: this._token ?? '' });
    return `${this.url}${this.url.includes('?') ? '&' : '?'}${q}`;
  }

  async _handshake(conn) {
    const ack = await this._readGreeting(conn, 'connection_ack');
    this.clientId = ack.client_id ?? null;
  }

  _closeIsFatal(info, ready) {
    if (!ready && info.code === 1008 && typeof this._tokenSource !== 'function') {
      return new AuthenticationFailed(info.reason || 'token refused');
    }
    return super._closeIsFatal(info, ready);
  }

  async _resume() {
    if (this._direction) this._sendNow(subscribeMsg(this._direction));
  }

  /** Only events for loads of `direction` ("IB"/"OB"; null: all). With `wait`, resolves to `subscribed`. */
  subscribe(direction = null, { wait = true, timeout = 10_000 } = {}) {
    const d = checkDirection(direction);
    return this._request(() => {
      this._direction = d;
    }, subscribeMsg(d), 'subscribed', wait, timeout);
  }

  /** Clear the filter. With `wait`, resolves to `unsubscribed`. */
  unsubscribe({ wait = true, timeout = 10_000 } = {}) {
    return this._request(() => {
      this._direction = null;
    }, { type: 'unsubscribe' }, 'unsubscribed', wait, timeout);
  }

  async _request(change, msg, replyType, wait, timeout) {
    const reply = wait ? this.expect((m) => m?.type === replyType || m?.type === 'error') : null;
    const sent = await this._updateState(change, msg);
    if (!reply) return null;
    if (!sent && replyType === 'unsubscribed') {
      reply.cancel(); // a new connection starts unfiltered: nothing to wait for
      return null;
    }
    let got;
    try {
      got = await withTimeout(reply, timeout, `no ${replyType}`);
    } finally {
      reply.cancel();
    }
    if (got.type === 'error') throw new DcdockError(got);
    return got;
  }
}

/** POST /api/ws/publish one event; resolves to `delivered` (202). Throws HttpError on 4xx. */
export async function publish(baseUrl, event, { apiKey, timeout } = {}) {
  const resp = await httpRequest('POST', `${httpBase(baseUrl)}/api/ws/publish`, { json: event, apiKey, timeout });
  return expectStatus(resp, 202).delivered;
}

/** Publish assignment_created / _updated / _deleted (`action` filled in). */
export function publishAssignment(baseUrl, type, { assignmentId, userId, userEmail, data, timestamp, apiKey, timeout }) {
  if (!Object.hasOwn(ASSIGNMENT_TYPES, type)) throw new TypeError(`unknown assignment event ${type}`);
  const event = {
    type,
    assignment_id: assignmentId,
    action: ASSIGNMENT_TYPES[type],
    user_id: userId,
    user_email: userEmail,
    data,
  };
  if (timestamp !== undefined) event.timestamp = timestamp;
  return publish(baseUrl, event, { apiKey, timeout });
}

/** Publish conflict_detected to `userId`'s connections only. */
export function publishConflict(baseUrl, {
  assignmentId, userId, currentVersion, attemptedVersion, currentData,
  message = 'Another user has modified this assignment', apiKey, timeout,
}) {
  return publish(baseUrl, {
    type: 'conflict_detected',
    assignment_id: assignmentId,
    current_version: currentVersion,
    attempted_version: attemptedVersion,
    current_data: currentData,
    message,
    user_id: userId,
  }, { apiKey, timeout });
}

/** GET /api/ws/stats: {active_connections, clients: [{client_id, filters}]}. */
export async function stats(baseUrl, { timeout } = {}) {
  return expectStatus(await httpRequest('GET', `${httpBase(baseUrl)}/api/ws/stats`, { timeout }), 200);
}

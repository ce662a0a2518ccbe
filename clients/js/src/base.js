// The reconnecting WebSocket client every system module builds on.
//
// A ReconnectingClient runs one loop that connects, reads frames, keeps a heartbeat and
// reconnects with capped, jittered exponential backoff whenever the connection drops. Subclasses
// say what a ready connection is (e.g. "the greeting arrived"), how to restore their state on a
// new connection (re-subscribe, re-join) and whether the protocol has an application-level ping.
//
// Incoming messages (decoded JSON objects) reach the application three ways:
//  - `for await (const msg of client)`, `client.recv()`, `client.recvMatch()`: a bounded queue
//    (the oldest message is dropped when it is full; `client.dropped` counts them);
//  - the `onMessage` callback, for every message;
//  - `client.expect(pred)`: a promise for the next matching message, not taken off the queue.
//
// The WebSocket class is the platform's `globalThis.WebSocket` when there is one (browsers,
// Node >= 22), else the `ws` package (Node 20). Pass `WebSocket` in the options to choose.
//
// Protocol v2 (docs/protocol/v2.md) is the default: the client offers the `switchboard.v2`
// subprotocol, wraps what it sends in the envelope and unwraps what it receives, so the
// application sees exactly the v1 messages. On top of that it keeps its session and its position
// in every stream, presents them when it reconnects (the server replays what was missed), gives
// every `send` an id and resends unacknowledged ones after a reconnect, and reports `session`,
// `subscribed`, `recovered`, `notRecovered`, `gap` and `error` events. A server without v2 (or
// `protocol: 'v1'`) gives a plain v1 connection.

/** Base class of this package's errors. */
export class ClientError extends Error {
  constructor(message) {
    super(message);
    this.name = this.constructor.name;
  }
}

/** No ready connection within the time allowed. */
export class NotConnected extends ClientError {}

/** The client was closed (or stopped for good) and will not reconnect. */
export class ClientClosed extends ClientError {}

/** The server refused the credentials (DCDock: close 1008 before `connection_ack`). */
export class AuthenticationFailed extends ClientError {}

/** The HTTP upgrade was refused with a 4xx status (wrong path, origin not allowed). */
export class HandshakeRefused extends ClientError {
  constructor(status) {
    super(`upgrade refused with HTTP ${status}`);
    this.status = status;
  }
}

/** An HTTP endpoint answered with a status outside 2xx. */
export class HttpError extends ClientError {
  constructor(status, body) {
    super(`HTTP ${status}: ${JSON.stringify(body)}`);
    this.status = status;
    this.body = body;
  }
}

/** A `recv`/`expect` that waited longer than allowed. */
export class TimeoutError extends ClientError {}

/** Too many sent messages wait for their ack (`maxUnacked`): the message was not sent. */
export class BufferFull extends ClientError {}

/** The `Sec-WebSocket-Protocol` value of protocol v2. */
export const SUBPROTOCOL = 'switchboard.v2';

/** Most positions presented in one upgrade (the server reads at most 64). */
const MAX_POSITIONS = 64;

/** Events a client reports, with the option name of their callback. */
const EVENT_OPTIONS = {
  session: 'onSession',
  subscribed: 'onSubscribed',
  recovered: 'onRecovered',
  notRecovered: 'onNotRecovered',
  gap: 'onGap',
  error: 'onError',
};

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Capped exponential backoff with "equal jitter": retry n (0-based) waits a random time between
 * half and all of min(cap, base * factor^n) milliseconds.
 */
export class Backoff {
  constructor({ base = 500, factor = 2, cap = 30_000 } = {}) {
    this.base = base;
    this.factor = factor;
    this.cap = cap;
  }

  /** Milliseconds before retry number `attempt`. */
  delay(attempt) {
    const ceiling = Math.min(this.cap, this.base * this.factor ** Math.min(attempt, 64));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }
}

let wsModule = null;

/** The WebSocket class to use: `globalThis.WebSocket` when present, else the `ws` package. */
export async function defaultWebSocket() {
  if (typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  if (!wsModule) wsModule = (await import('ws')).default;
  return wsModule;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A predicate from a message `type` string or a function. */
export function asPredicate(what) {
  return typeof what === 'function' ? what : (m) => m?.type === what;
}

/** `promise`, or a TimeoutError after `ms` milliseconds (`null`: no limit). */
export function withTimeout(promise, ms, what) {
  if (ms == null) return promise;
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`${what} within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** A simple lock: `await lock.run(async () => ...)` runs one body at a time. */
class Lock {
  constructor() {
    this.tail = Promise.resolve();
  }

  run(fn) {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => {});
    return result;
  }
}

export class ReconnectingClient {
  /** Whether the protocol has an application-level ping (`{"type":"ping"}` -> `pong`). */
  static appPing = false;

  /**
   * @param {string} url WebSocket URL.
   * @param {object} [opts]
   * @param {Backoff} [opts.backoff] reconnect delays.
   * @param {number|null} [opts.heartbeatInterval=25000] ms between heartbeats (the app-level
   *   ping where the protocol has one, else a WebSocket ping when the `ws` package is used;
   *   browsers answer the server's pings themselves). `null` disables.
   * @param {number} [opts.heartbeatTimeout=10000] ms to wait for the pong before reconnecting.
   * @param {(msg: object) => void} [opts.onMessage] called for every message.
   * @param {() => void} [opts.onConnect] called when a connection is ready.
   * @param {(info: {code: number|null, reason: string, httpStatus?: number}) => void} [opts.onDisconnect]
   * @param {number} [opts.queueSize=10000] unread messages kept.
   * @param {number} [opts.openTimeout=10000] ms for connect, upgrade and greeting.
   * @param {Function} [opts.WebSocket] WebSocket class (default: see `defaultWebSocket`).
   * @param {object} [opts.headers] upgrade headers (the `ws` package only).
   * @param {string} [opts.origin] `Origin` header (the `ws` package only; browsers send their own).
   * @param {'v2'|'v1'} [opts.protocol='v2'] the protocol to ask for. With 'v2' a server that does
   *   not serve v2 still gets a (v1) connection; `client.protocol` says which one is in use.
   * @param {number} [opts.maxUnacked=1000] sent messages kept until acked (v2); one more is
   *   refused with BufferFull.
   * @param {(e: {id: string, resumed: boolean}) => void} [opts.onSession] a v2 connection named its session.
   * @param {(e: {stream: string, epoch?: string, offset?: number, recovered?: boolean, replayed?: number, reason?: string}) => void} [opts.onSubscribed]
   *   every `subscribed` frame.
   * @param {(e: {stream: string, replayed: number, epoch: string, offset: number}) => void} [opts.onRecovered]
   *   what was missed on `stream` while away was replayed (before this event, in order).
   * @param {(e: {stream: string, reason: string, epoch?: string, offset?: number}) => void} [opts.onNotRecovered]
   *   what was missed cannot be given back (`trimmed`, `epoch`, `ahead`, `session`,
   *   `unavailable`): reload the state as at startup.
   * @param {(e: {stream: string, epoch: string, from: number, to: number}) => void} [opts.onGap]
   *   offsets `from`..`to` of `stream` were skipped on this connection (slow reader): reload.
   * @param {(e: {error: string}) => void} [opts.onError] the server could not read a frame's envelope.
   */
  constructor(url, opts = {}) {
    this.url = url;
    const protocol = opts.protocol ?? 'v2';
    if (protocol !== 'v2' && protocol !== 'v1') throw new TypeError(`protocol must be "v2" or "v1", not ${JSON.stringify(protocol)}`);
    /** The protocol asked for ('v2' or 'v1'). */
    this.requestedProtocol = protocol;
    /** The protocol of the current (or last) connection: 'v2', 'v1', or null before the first. */
    this.protocol = null;
    /** The subprotocol the server accepted on the current (or last) connection ('' for none). */
    this.subprotocol = null;
    /** The v2 session id (kept across reconnects), or null. */
    this.session = null;
    /** Whether the server still had the session when the last v2 connection presented it. */
    this.sessionResumed = null;
    this.maxUnacked = Math.max(1, opts.maxUnacked ?? 1000);
    this._positions = new Map();
    this._unacked = [];
    this._nextId = 0;
    this._listeners = new Map();
    for (const [name, opt] of Object.entries(EVENT_OPTIONS)) if (opts[opt]) this.on(name, opts[opt]);
    this._v1Once = false;
    this.backoff = opts.backoff ?? new Backoff();
    this.heartbeatInterval = opts.heartbeatInterval === undefined ? 25_000 : opts.heartbeatInterval;
    this.heartbeatTimeout = opts.heartbeatTimeout ?? 10_000;
    this.onMessage = opts.onMessage ?? null;
    this.onConnect = opts.onConnect ?? null;
    this.onDisconnect = opts.onDisconnect ?? null;
    this.queueSize = Math.max(1, opts.queueSize ?? 10_000);
    this.openTimeout = opts.openTimeout ?? 10_000;
    this.WebSocketImpl = opts.WebSocket ?? null;
    this.headers = opts.headers ?? null;
    this.origin = opts.origin ?? null;
    /** Connections that became ready so far (2 after one reconnect). */
    this.connections = 0;
    /** Messages dropped because the queue was full. */
    this.dropped = 0;
    /** How the most recent connection or attempt ended. */
    this.lastClose = null;
    this._queue = [];
    this._queueWaiters = [];
    this._waiters = [];
    this._readyWaiters = [];
    this._ws = null;
    this._ready = false;
    this._closing = false;
    this._fatal = null;
    this._loop = null;
    this._stateLock = new Lock();
    this._wake = null;
    this._abort = null;
  }

  get _appPing() {
    return this.constructor.appPing;
  }

  // ----- lifecycle --------------------------------------------------------------------------

  /** Start connecting in the background (idempotent). Returns the client. */
  start() {
    if (this._closing) throw new ClientClosed('client is closed');
    if (!this._loop) {
      this._loop = this._run().catch((e) => {
        this._fatal ??= e;
      }).finally(() => this._stopped());
    }
    return this;
  }

  /** Whether a ready connection is open now. */
  get connected() {
    return this._ready;
  }

  /** Wait until a connection is ready; rejects with NotConnected on timeout, or the fatal error. */
  waitConnected(timeout = null) {
    this.start();
    if (this._ready) return Promise.resolve();
    if (this._done) return Promise.reject(this._fatal ?? new ClientClosed('client is closed'));
    let entry;
    const p = new Promise((resolve, reject) => {
      entry = { resolve, reject };
      this._readyWaiters.push(entry);
    });
    return withTimeout(p, timeout, `no connection to ${this._displayUrl()}`).catch((e) => {
      this._readyWaiters = this._readyWaiters.filter((w) => w !== entry);
      throw e instanceof TimeoutError ? new NotConnected(e.message) : e;
    });
  }

  /** Close the connection and stop reconnecting. */
  async close(code = 1000, reason = '') {
    this._closing = true;
    const ws = this._ws;
    if (ws && ws.readyState <= 1) {
      try {
        ws.close(code, reason);
      } catch {
        /* already closing */
      }
    }
    this._wake?.();
    if (this._loop) await this._loop;
    else this._stopped();
  }

  /** Drop the current connection without a close handshake; the client reconnects. */
  dropConnection() {
    this._abort?.('dropped by client');
  }

  _stopped() {
    this._done = true;
    this._ready = false;
    const err = this._fatal ?? new ClientClosed('client is closed');
    for (const w of this._readyWaiters) w.reject(err);
    this._readyWaiters = [];
    for (const w of this._queueWaiters) w.reject(err);
    this._queueWaiters = [];
    for (const w of this._waiters) w.reject(err);
    this._waiters = [];
    for (const e of this._unacked.splice(0)) e.reject(err);
  }

  // ----- sending ----------------------------------------------------------------------------

  /**
   * Send one message (a JSON object), waiting up to `timeout` ms for a ready connection.
   *
   * On a v2 connection the message gets an id (`c-<n>`) and is kept until the server acks it:
   * if the connection drops first, it is sent again (same id, in order) on the next connection,
   * and the server processes it once. Resolves to the ack: `{stream, epoch, offset}` when the
   * message published into a stream, `{}` otherwise (`duplicate: true` added when it answered a
   * resend). On a v1 connection it resolves to `null` once sent. Rejects with NotConnected when
   * no connection is ready in time, BufferFull when `maxUnacked` messages wait for their ack, and
   * ClientClosed when the client is closed before the ack came.
   */
  send(message, { timeout = 10_000 } = {}) {
    return this._submit(JSON.stringify(message), timeout);
  }

  /** Same as `send` (kept for the v1 API). */
  sendJson(message, opts = {}) {
    return this.send(message, opts);
  }

  /**
   * Send a message given as JSON text, kept byte for byte (on v2 it is put in the envelope as
   * is, so the text must be JSON). Resolves like `send`.
   */
  sendText(text, { timeout = 10_000 } = {}) {
    return this._submit(text, timeout);
  }

  /** Send one raw WebSocket text frame as is, outside the v2 envelope and without an ack. */
  async sendFrame(text, { timeout = 10_000 } = {}) {
    await this.waitConnected(timeout);
    if (!this._ws) throw new NotConnected('connection lost');
    this._ws.send(text);
  }

  /** How many sent messages wait for their ack. */
  get unacked() {
    return this._unacked.length;
  }

  async _submit(text, timeout) {
    await this.waitConnected(timeout);
    let acked = null;
    await this._stateLock.run(async () => {
      if (this._closing) throw new ClientClosed('client is closed');
      if (this._ready && this.protocol === 'v1') {
        this._ws.send(text);
        return;
      }
      if (this.requestedProtocol === 'v1') throw new NotConnected('connection lost');
      try {
        JSON.parse(text);
      } catch {
        throw new TypeError('a v2 message must be JSON text');
      }
      if (this._unacked.length >= this.maxUnacked) {
        throw new BufferFull(`${this._unacked.length} sent messages wait for their ack (maxUnacked)`);
      }
      const entry = { id: `c-${++this._nextId}`, text };
      acked = new Promise((resolve, reject) => {
        entry.resolve = resolve;
        entry.reject = reject;
      });
      this._unacked.push(entry);
      // Not ready (the connection just dropped): the next connection sends it.
      if (this._ready) this._trySend(this._envelope(entry));
    });
    return acked;
  }

  /** `{"sb":"msg","id":..,"msg":<text>}` with the message text kept byte for byte. */
  _envelope(entry) {
    return `{"sb":"msg","id":${JSON.stringify(entry.id)},"msg":${entry.text}}`;
  }

  _trySend(text) {
    try {
      this._ws.send(text);
      return true;
    } catch {
      return false;
    }
  }

  /** On a new connection (under the state lock): resend every unacked message, in order. */
  _flushUnacked() {
    if (this.protocol === 'v2') {
      for (const e of this._unacked) this._sendRawNow(this._envelope(e));
    } else {
      // The server does not speak v2 (any more): send them as v1, where nothing is acked.
      for (const e of this._unacked.splice(0)) {
        this._sendRawNow(e.text);
        e.resolve(null);
      }
    }
  }

  _sendRawNow(text) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) throw new NotConnected('connection lost');
    ws.send(text);
  }

  /**
   * Send a message at once, without an id (state messages: joins, subscriptions, pings). On v2
   * it goes in the envelope, with `since` positions when given.
   */
  _sendNow(message, { since } = {}) {
    if (this.protocol !== 'v2') {
      this._sendRawNow(JSON.stringify(message));
      return;
    }
    const frame = { sb: 'msg' };
    if (since?.length) frame.since = since;
    frame.msg = message;
    this._sendRawNow(JSON.stringify(frame));
  }

  /**
   * Record a state change, then send `message` if a connection is ready. Runs under the lock
   * that `_resume` holds, so a change is either restored by a new connection or sent on a ready
   * one. Resolves to whether it was sent now.
   */
  _updateState(change, message) {
    return this._stateLock.run(async () => {
      change();
      if (!this._ready) return false;
      try {
        this._sendNow(message);
        return true;
      } catch {
        return false;
      }
    });
  }

  // ----- receiving --------------------------------------------------------------------------

  async *[Symbol.asyncIterator]() {
    for (;;) {
      try {
        yield await this.recv();
      } catch (e) {
        if (e instanceof ClientClosed) return;
        throw e;
      }
    }
  }

  /** The next queued message; rejects with TimeoutError after `timeout` ms. */
  recv(timeout = null) {
    if (this._queue.length) return Promise.resolve(this._queue.shift());
    this.start();
    if (this._done) return Promise.reject(this._fatal ?? new ClientClosed('client is closed'));
    let entry;
    const p = new Promise((resolve, reject) => {
      entry = { resolve, reject };
      this._queueWaiters.push(entry);
    });
    return withTimeout(p, timeout, 'no message').catch((e) => {
      this._queueWaiters = this._queueWaiters.filter((w) => w !== entry);
      throw e;
    });
  }

  /** Take messages off the queue until one matches (a `type` or a predicate); others are discarded. */
  async recvMatch(what, timeout = 5_000) {
    const pred = asPredicate(what);
    const deadline = Date.now() + timeout;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new TimeoutError(`no matching message within ${timeout} ms`);
      const msg = await this.recv(left);
      if (pred(msg)) return msg;
    }
  }

  /** Every queued message, without waiting. */
  drain() {
    return this._queue.splice(0);
  }

  /**
   * A promise for the next message (from now on) that matches; the queue is not touched.
   * The promise has a `cancel()` method.
   */
  expect(what) {
    const pred = asPredicate(what);
    let entry;
    const p = new Promise((resolve, reject) => {
      entry = { pred, resolve, reject };
    });
    if (this._done) entry.reject(this._fatal ?? new ClientClosed('client is closed'));
    else this._waiters.push(entry);
    p.cancel = () => {
      this._waiters = this._waiters.filter((w) => w !== entry);
    };
    p.catch(() => {}); // a cancelled expectation must not become an unhandled rejection
    return p;
  }

  _dispatch(msg) {
    const keep = [];
    for (const w of this._waiters) {
      let hit = false;
      try {
        hit = w.pred(msg);
      } catch {
        hit = false;
      }
      if (hit) w.resolve(msg);
      else keep.push(w);
    }
    this._waiters = keep;
    if (this._isHeartbeatReply(msg)) return;
    const waiter = this._queueWaiters.shift();
    if (waiter) waiter.resolve(msg);
    else {
      if (this._queue.length >= this.queueSize) {
        this._queue.shift();
        this.dropped += 1;
      }
      this._queue.push(msg);
    }
    if (this.onMessage) {
      try {
        const r = this.onMessage(msg);
        if (r && typeof r.catch === 'function') r.catch((e) => console.error('onMessage failed', e));
      } catch (e) {
        console.error('onMessage failed', e);
      }
    }
  }

  // ----- v2: events, positions, frames ------------------------------------------------------

  /**
   * Listen to an event: `session`, `subscribed`, `recovered`, `notRecovered`, `gap`, `error`
   * (see the constructor's options). Returns the client.
   */
  on(name, fn) {
    if (!Object.hasOwn(EVENT_OPTIONS, name)) throw new TypeError(`unknown event ${JSON.stringify(name)}`);
    if (!this._listeners.has(name)) this._listeners.set(name, []);
    this._listeners.get(name).push({ fn });
    return this;
  }

  /** Stop listening. */
  off(name, fn) {
    const list = this._listeners.get(name);
    if (list) this._listeners.set(name, list.filter((l) => l.fn !== fn));
    return this;
  }

  /**
   * A promise for the next `name` event (from now on) that matches `pred`. It has `cancel()`.
   */
  expectEvent(name, pred = () => true) {
    let entry;
    const p = new Promise((resolve, reject) => {
      entry = {
        fn: (e) => {
          let hit = false;
          try {
            hit = pred(e);
          } catch {
            hit = false;
          }
          if (hit) {
            this.off(name, entry.fn);
            resolve(e);
          }
        },
        reject,
      };
    });
    this.on(name, entry.fn);
    p.cancel = () => this.off(name, entry.fn);
    p.catch(() => {});
    return p;
  }

  _emit(name, data) {
    for (const l of [...(this._listeners.get(name) ?? [])]) this._fire(l.fn, data);
  }

  /** The position held for each stream: `{stream: {epoch, offset}}`. */
  get positions() {
    return Object.fromEntries([...this._positions].map(([k, v]) => [k, { ...v }]));
  }

  /** Forget the position of `stream` (a room left for good). */
  _forgetStream(stream) {
    this._positions.delete(stream);
  }

  /** `[{stream, epoch, offset}]` for `stream` if a position is held (for an envelope's `since`). */
  _sinceFor(stream) {
    const p = this._positions.get(stream);
    return p ? [{ stream, epoch: p.epoch, offset: p.offset }] : [];
  }

  /** Whether the position of `stream` goes in the upgrade URL (else the subclass presents it). */
  _presentInUrl(_stream) {
    return true;
  }

  /** The URL of the next attempt: the subclass's, plus `sb_session` and `sb_since` on v2. */
  _attemptUrl(v2) {
    const url = this._connectUrl();
    if (!v2) return url;
    const q = new URLSearchParams();
    if (this.session) q.append('sb_session', this.session);
    const held = [...this._positions].filter(([stream]) => this._presentInUrl(stream));
    for (const [stream, p] of held.slice(-MAX_POSITIONS)) q.append('sb_since', `${stream}~${p.epoch}~${p.offset}`);
    const qs = q.toString();
    if (!qs) return url;
    return `${url}${url.includes('?') ? '&' : '?'}${qs}`;
  }

  /**
   * What one received frame means: an item to deliver in order (`msg`: a message for the app;
   * `pos`: a position to record; `events`: events to report), or null. Acks are settled here.
   */
  _inbound(frame, v2) {
    if (!v2) return { kind: 'msg', msg: frame };
    switch (frame.sb) {
      case 'msg':
        return isObject(frame.msg) ? { kind: 'msg', msg: frame.msg } : null;
      case 'pub':
        return {
          kind: 'pub',
          msg: isObject(frame.msg) ? frame.msg : undefined,
          pos: [frame.stream, frame.epoch, frame.offset],
        };
      case 'session':
        this.session = frame.session;
        this.sessionResumed = frame.resumed === true;
        return { kind: 'session', events: [['session', { id: frame.session, resumed: frame.resumed === true }]] };
      case 'subscribed': {
        const { sb, ...data } = frame;
        const events = [['subscribed', data]];
        if (frame.recovered === true) {
          events.push(['recovered', { stream: frame.stream, replayed: frame.replayed ?? 0, epoch: frame.epoch, offset: frame.offset }]);
        } else if (frame.recovered === false) {
          events.push(['notRecovered', { stream: frame.stream, reason: frame.reason, epoch: frame.epoch, offset: frame.offset }]);
        }
        const pos = frame.epoch !== undefined && frame.offset !== undefined ? [frame.stream, frame.epoch, frame.offset] : null;
        return { kind: 'event', events, pos };
      }
      case 'ack': {
        const i = this._unacked.findIndex((e) => e.id === frame.id);
        if (i >= 0) {
          const [entry] = this._unacked.splice(i, 1);
          const ack = {};
          if (frame.stream !== undefined) Object.assign(ack, { stream: frame.stream, epoch: frame.epoch, offset: frame.offset });
          if (frame.duplicate === true) ack.duplicate = true;
          entry.resolve(ack);
        }
        return null;
      }
      case 'gap':
        return { kind: 'event', events: [['gap', { stream: frame.stream, epoch: frame.epoch, from: frame.from, to: frame.to }]] };
      case 'error':
        return { kind: 'event', events: [['error', { error: frame.error }]] };
      default:
        return null;
    }
  }

  /** Hand one item to the application: record its position, then the message and events. */
  _deliver(item) {
    if (item.pos) {
      const [stream, epoch, offset] = item.pos;
      if (typeof stream === 'string' && typeof epoch === 'string' && Number.isSafeInteger(offset)) {
        this._positions.delete(stream); // most recently updated last: the first to keep
        this._positions.set(stream, { epoch, offset });
      }
    }
    if (item.msg !== undefined) this._dispatch(item.msg);
    for (const [name, data] of item.events ?? []) this._emit(name, data);
  }

  // ----- hooks for subclasses ---------------------------------------------------------------

  /** The URL for the next attempt. */
  _connectUrl() {
    return this.url;
  }

  /** Called before each attempt (e.g. to fetch a fresh token). */
  async _prepare() {}

  /** Wait for the greeting, if the protocol has one: `await conn.next()` reads a message. */
  async _handshake(_conn) {}

  /** Restore state on a new connection, with `this._sendNow`. */
  async _resume() {}

  _pingMessage() {
    return this._appPing ? { type: 'ping' } : null;
  }

  _isHeartbeatReply(msg) {
    return this._appPing && msg?.type === 'pong';
  }

  _displayUrl() {
    return this.url.split('?')[0];
  }

  /** An error to stop reconnecting with, or null to retry. */
  _closeIsFatal(info, _ready) {
    const s = info.httpStatus;
    if (s != null && s >= 400 && s < 500 && s !== 408 && s !== 429) return new HandshakeRefused(s);
    return null;
  }

  // ----- heartbeat --------------------------------------------------------------------------

  /** Send the application-level ping and wait for the `pong`. */
  async ping(timeout = 10_000) {
    const msg = this._pingMessage();
    if (!msg) throw new ClientError('this protocol has no application-level ping');
    const pong = this.expect('pong');
    try {
      await this.waitConnected(timeout);
      this._sendNow(msg); // no id: a ping is not acked, and not resent after a reconnect
      return await withTimeout(pong, timeout, 'no pong');
    } finally {
      pong.cancel();
    }
  }

  _startHeartbeat(abort) {
    if (!this.heartbeatInterval) return () => {};
    const ws = this._ws;
    let stopped = false;
    let timer;
    const kill = () => abort('heartbeat timeout');
    const beat = async () => {
      if (stopped) return;
      if (this._appPing) {
        try {
          await this.ping(this.heartbeatTimeout);
        } catch (e) {
          if (!stopped && e instanceof TimeoutError) kill();
          return;
        }
      } else if (typeof ws.ping === 'function' && typeof ws.once === 'function') {
        // The `ws` package: a WebSocket-level ping, answered by any conforming server.
        const ok = await new Promise((resolve) => {
          const t = setTimeout(() => resolve(false), this.heartbeatTimeout);
          ws.once('pong', () => {
            clearTimeout(t);
            resolve(true);
          });
          try {
            ws.ping();
          } catch {
            clearTimeout(t);
            resolve(true); // closing anyway
          }
        });
        if (!ok && !stopped) {
          kill();
          return;
        }
      } else {
        return; // a browser answers the server's pings; nothing more to do
      }
      if (!stopped) timer = setTimeout(beat, this.heartbeatInterval);
    };
    timer = setTimeout(beat, this.heartbeatInterval);
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  // ----- the connection loop ----------------------------------------------------------------

  async _run() {
    const WS = this.WebSocketImpl ?? (await defaultWebSocket());
    let attempt = 0;
    while (!this._closing) {
      let info;
      let ready = false;
      let noSubprotocol = false;
      try {
        await this._prepare();
        ({ info, ready, noSubprotocol } = await this._connectOnce(WS));
        if (ready) attempt = 0;
      } catch (e) {
        info = { code: null, reason: String(e?.message ?? e) };
        if (e instanceof AuthenticationFailed) info.code = 1008;
      }
      this.lastClose = info;
      this._ready = false;
      this._ws = null;
      if (ready) this._fire(this.onDisconnect, info);
      const fatal = this._closeIsFatal(info, ready);
      if (fatal) {
        this._fatal = fatal;
        return;
      }
      if (this._closing) return;
      if (noSubprotocol && !ready) {
        // The `ws` package refuses an upgrade answered without the subprotocol it offered: the
        // server does not serve v2. Connect again at once, as v1 (the next reconnect asks again).
        this._v1Once = true;
        continue;
      }
      const delay = this.backoff.delay(attempt);
      attempt += 1;
      await new Promise((resolve) => {
        const t = setTimeout(resolve, delay);
        this._wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this._wake = null;
    }
  }

  _connectOnce(WS) {
    return new Promise((resolveConn) => {
      const native = WS === globalThis.WebSocket;
      const askV2 = this.requestedProtocol === 'v2' && !this._v1Once;
      this._v1Once = false;
      const protocols = askV2 ? [SUBPROTOCOL] : [];
      let v2 = false;
      let noSubprotocol = false;
      const opts = {};
      if (!native) {
        if (this.headers) opts.headers = this.headers;
        if (this.origin) opts.origin = this.origin;
        opts.handshakeTimeout = this.openTimeout;
        opts.perMessageDeflate = false;
      }
      let ws;
      try {
        const url = this._attemptUrl(askV2);
        ws = native ? new WS(url, protocols) : new WS(url, protocols, opts);
      } catch (e) {
        resolveConn({ info: { code: null, reason: String(e?.message ?? e) }, ready: false, noSubprotocol });
        return;
      }
      this._ws = ws;
      let phase = 'connecting'; // -> 'handshake' -> 'open' -> 'closed'
      let ready = false;
      let httpStatus;
      let stopHeartbeat = () => {};
      let errorTimer = null;
      let endInfo = null;
      const inbox = [];
      let inboxWaiter = null;

      // Ends this attempt once, whichever comes first: the close event, the open timeout, a
      // heartbeat failure, dropConnection(), or an error not followed by a close event (some
      // WebSocket implementations fire only `error` when the connection cannot be made).
      const finish = (info) => {
        if (phase === 'closed') return;
        phase = 'closed';
        clearTimeout(openTimer);
        clearTimeout(errorTimer);
        stopHeartbeat();
        const closeInfo = httpStatus != null ? { code: null, reason: `HTTP ${httpStatus}`, httpStatus } : info;
        endInfo = closeInfo;
        if (inboxWaiter) {
          const w = inboxWaiter;
          inboxWaiter = null;
          w.reject(Object.assign(new ClientError('closed'), { close: closeInfo }));
        }
        this._ready = false;
        if (this._abort === abort) this._abort = null;
        resolveConn({ info: closeInfo, ready, noSubprotocol });
      };
      // Drop the socket without waiting for a close handshake, and end the attempt now.
      const abort = (reason) => {
        try {
          if (typeof ws.terminate === 'function') ws.terminate();
          else ws.close(4000, reason.slice(0, 100));
        } catch {
          /* not open yet, or already closed */
        }
        finish({ code: null, reason });
      };
      this._abort = abort;
      const openTimer = setTimeout(() => {
        if (phase !== 'open') abort(`no ready connection within ${this.openTimeout} ms`);
      }, this.openTimeout);

      // Items received before the connection is ready wait in `inbox`, in order, and are
      // delivered when it is. `take(pred, keep)` finds the first matching one (removing it
      // unless `keep`), waiting for it if need be; it rejects if the connection closes first.
      const take = (pred, keep) =>
        new Promise((resolve, reject) => {
          const i = inbox.findIndex(pred);
          if (i >= 0) return resolve(keep ? inbox[i] : inbox.splice(i, 1)[0]);
          if (phase === 'closed') return reject(Object.assign(new ClientError('closed'), { close: endInfo }));
          inboxWaiter = { pred, keep, resolve, reject };
        });
      const conn = {
        ws,
        // The next message (not a publication) during the handshake: the greeting.
        next: () => take((it) => it.kind === 'msg').then((it) => it.msg),
        // v2: the session frame, which comes first (it stays in the inbox to be reported).
        session: () => take((it) => it.kind === 'session', true),
      };

      ws.addEventListener('error', (ev) => {
        const text = ev?.message ?? ev?.error?.message ?? '';
        const m = /Unexpected server response: (\d+)/.exec(text);
        if (m) httpStatus = Number(m[1]);
        if (askV2 && /Server sent no subprotocol/.test(text)) noSubprotocol = true;
        if (phase === 'connecting') {
          errorTimer ??= setTimeout(() => abort(String(ev?.message || 'connection failed')), 250);
        }
      });
      ws.addEventListener('message', (ev) => {
        if (phase === 'closed' || typeof ev.data !== 'string') return; // JSON text protocols only
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (!isObject(msg)) return;
        if (phase === 'connecting') return; // cannot happen: frames come after open
        const item = this._inbound(msg, v2);
        if (!item) return;
        if (phase === 'open') {
          this._deliver(item);
          return;
        }
        inbox.push(item);
        if (inboxWaiter && inboxWaiter.pred(item)) {
          const w = inboxWaiter;
          inboxWaiter = null;
          if (!w.keep) inbox.splice(inbox.indexOf(item), 1);
          w.resolve(item);
        }
      });
      ws.addEventListener('close', (ev) => finish({ code: ev.code ?? null, reason: ev.reason ?? '' }));
      ws.addEventListener('open', async () => {
        if (phase !== 'connecting') {
          abort('stale connection');
          return;
        }
        phase = 'handshake';
        this.subprotocol = ws.protocol ?? '';
        v2 = askV2 && this.subprotocol === SUBPROTOCOL;
        this.protocol = v2 ? 'v2' : 'v1';
        try {
          if (v2) await take((it) => it.kind === 'session', true);
          await this._handshake(conn);
          if (phase === 'closed') return;
          await this._stateLock.run(async () => {
            if (phase === 'closed') return;
            await this._resume();
            this._flushUnacked();
            // What came in with the greeting goes out first, in order.
            phase = 'open';
            for (const it of inbox.splice(0)) this._deliver(it);
            ready = true;
            this._ready = true;
            this.connections += 1;
          });
          if (!ready || phase === 'closed') return;
          clearTimeout(openTimer);
          for (const w of this._readyWaiters.splice(0)) w.resolve();
          stopHeartbeat = this._startHeartbeat(abort);
          this._fire(this.onConnect);
        } catch (e) {
          if (phase !== 'closed') abort(String(e?.message ?? e));
        }
      });
    });
  }

  _fire(cb, ...args) {
    if (!cb) return;
    try {
      const r = cb(...args);
      if (r && typeof r.catch === 'function') r.catch((e) => console.error('callback failed', e));
    } catch (e) {
      console.error('callback failed', e);
    }
  }

  /** Read the first message and check it is `kind`; a 1008 close instead is AuthenticationFailed. */
  async _readGreeting(conn, kind) {
    let msg;
    try {
      msg = await conn.next();
    } catch (e) {
      if (e.close?.code === 1008) throw new AuthenticationFailed(e.close.reason || 'policy violation');
      throw e;
    }
    if (msg?.type !== kind) throw new ClientError(`expected \`${kind}\` first, got ${JSON.stringify(msg)}`);
    return msg;
  }
}

// ----- HTTP helpers (fetch) ---------------------------------------------------------------------

/**
 * One HTTP request with `fetch`. Never throws for a 4xx/5xx status.
 * @returns {Promise<{status: number, headers: Headers, body: any}>} body: parsed JSON, text, or null.
 */
export async function httpRequest(method, url, { json, body, apiKey, headers, timeout = 10_000 } = {}) {
  const h = { Accept: 'application/json', ...(headers ?? {}) };
  let payload;
  if (json !== undefined) {
    payload = JSON.stringify(json);
    h['Content-Type'] = 'application/json';
  } else if (body !== undefined) {
    payload = body;
    h['Content-Type'] = 'application/json';
  }
  if (apiKey) h['X-API-Key'] = apiKey;
  const resp = await fetch(url, { method, headers: h, body: payload, signal: AbortSignal.timeout(timeout) });
  const text = await resp.text();
  let parsed = null;
  if (text.trim()) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  return { status: resp.status, headers: resp.headers, body: parsed };
}

/** The body if the status is one of `ok`, else throw HttpError. */
export function expectStatus(resp, ...ok) {
  if (!ok.includes(resp.status)) throw new HttpError(resp.status, resp.body);
  return resp.body;
}

/** `http://host:port` for a `ws://host:port/...` or `http://...` URL. */
export function httpBase(url) {
  const u = new URL(url);
  const scheme = { 'ws:': 'http:', 'wss:': 'https:' }[u.protocol] ?? u.protocol;
  return `${scheme}//${u.host}`;
}

export { sleep };

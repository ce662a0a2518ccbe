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
   */
  constructor(url, opts = {}) {
    this.url = url;
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
  }

  // ----- sending ----------------------------------------------------------------------------

  /** Send one JSON object, waiting up to `timeout` ms for a ready connection. */
  async sendJson(message, { timeout = 10_000 } = {}) {
    await this.waitConnected(timeout);
    this._sendNow(message);
  }

  /** Send a raw text frame. */
  async sendText(text, { timeout = 10_000 } = {}) {
    await this.waitConnected(timeout);
    if (!this._ws) throw new NotConnected('connection lost');
    this._ws.send(text);
  }

  _sendNow(message) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) throw new NotConnected('connection lost');
    ws.send(JSON.stringify(message));
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
      await this.sendJson(msg, { timeout });
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
      try {
        await this._prepare();
        ({ info, ready } = await this._connectOnce(WS));
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
      const opts = {};
      if (!native) {
        if (this.headers) opts.headers = this.headers;
        if (this.origin) opts.origin = this.origin;
        opts.handshakeTimeout = this.openTimeout;
        opts.perMessageDeflate = false;
      }
      let ws;
      try {
        ws = native ? new WS(this._connectUrl()) : new WS(this._connectUrl(), [], opts);
      } catch (e) {
        resolveConn({ info: { code: null, reason: String(e?.message ?? e) }, ready: false });
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
        resolveConn({ info: closeInfo, ready });
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

      const conn = {
        ws,
        // The next message during the handshake; rejects if the connection closes first.
        next: () =>
          new Promise((resolve, reject) => {
            if (inbox.length) return resolve(inbox.shift());
            if (phase === 'closed') return reject(Object.assign(new ClientError('closed'), { close: endInfo }));
            inboxWaiter = { resolve, reject };
          }),
      };

      ws.addEventListener('error', (ev) => {
        const m = /Unexpected server response: (\d+)/.exec(ev?.message ?? ev?.error?.message ?? '');
        if (m) httpStatus = Number(m[1]);
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
        if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return;
        if (phase === 'open') this._dispatch(msg);
        else if (inboxWaiter) {
          const w = inboxWaiter;
          inboxWaiter = null;
          w.resolve(msg);
        } else inbox.push(msg);
      });
      ws.addEventListener('close', (ev) => finish({ code: ev.code ?? null, reason: ev.reason ?? '' }));
      ws.addEventListener('open', async () => {
        if (phase !== 'connecting') {
          abort('stale connection');
          return;
        }
        phase = 'handshake';
        try {
          await this._handshake(conn);
          if (phase === 'closed') return;
          await this._stateLock.run(async () => {
            if (phase === 'closed') return;
            await this._resume();
            // Messages that came in with the greeting go out first, in order.
            phase = 'open';
            for (const m of inbox.splice(0)) this._dispatch(m);
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

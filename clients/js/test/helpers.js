// Starts the real switchboard binary on free loopback ports for the client tests.
//
// The binary is $SWITCHBOARD_BIN when set, else $CARGO_TARGET_DIR/debug/switchboard
// (<repo>/target when CARGO_TARGET_DIR is unset). clients/run-tests.sh builds it.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import WS from 'ws';

import { Backoff, TimeoutError } from '../src/base.js';

/** The `ws` package's WebSocket, for tests of what only it can do (origin header, HTTP status of a
 * refused upgrade, client-side WebSocket pings), whatever the platform's default. */
export { WS };

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const SYSTEMS = ['laptimes', 'afc', 'race', 'collab', 'dcdock'];
export const JWT_SECRET = 'test-jwt-secret';
export const KEYS = { afc: 'afc-test-key', race: 'race-test-key', collab: 'collab-test-key', dcdock: 'dcdock-test-key' };

/** Short reconnect delays so tests do not wait long. */
export const FAST = new Backoff({ base: 50, factor: 2, cap: 500 });

export function serverBinary() {
  if (process.env.SWITCHBOARD_BIN) return process.env.SWITCHBOARD_BIN;
  const target = path.resolve(REPO, process.env.CARGO_TARGET_DIR || 'target');
  return path.join(target, 'debug', 'switchboard');
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One switchboard process on fixed ports; can stop and start again. */
export class Server {
  /** @param {string[]} [extraArgs] more command-line flags (e.g. `--history-max-entries 2`). */
  constructor(systems = SYSTEMS, extraArgs = []) {
    this.systems = systems;
    this.extraArgs = extraArgs;
    this.ports = {};
    this.proc = null;
    this.logFile = path.join(mkdtempSync(path.join(tmpdir(), 'switchboard-js-')), 'server.log');
  }

  async allocate() {
    for (const s of this.systems) this.ports[s] = await freePort();
    return this;
  }

  args() {
    const a = ['--bind', '127.0.0.1', '--systems', this.systems.join(','), '--log-level', 'warn'];
    // Stop at once on SIGTERM: no ready delay, every client closed together (with 1012).
    a.push('--drain-ready-delay-secs', '0', '--drain-window-secs', '0');
    for (const s of this.systems) {
      a.push(`--${s}-port`, String(this.ports[s]));
      if (KEYS[s]) a.push(`--${s}-api-key`, KEYS[s]);
    }
    if (this.systems.includes('dcdock')) a.push('--dcdock-jwt-secret', JWT_SECRET);
    return [...a, ...this.extraArgs];
  }

  async start(timeout = 15_000) {
    if (!Object.keys(this.ports).length) await this.allocate();
    const bin = serverBinary();
    if (!existsSync(bin)) throw new Error(`server binary ${bin} is missing: run clients/run-tests.sh`);
    const env = Object.fromEntries(
      Object.entries(process.env).filter(
        ([k]) => !k.endsWith('_API_KEY') && !['WS_PORT', 'PORT', 'DCDOCK_JWT_SECRET', 'ALLOWED_ORIGINS'].includes(k),
      ),
    );
    const log = openSync(this.logFile, 'a');
    this.proc = spawn(bin, this.args(), { env, stdio: ['ignore', log, log] });
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
    const deadline = Date.now() + timeout;
    const pending = new Set(Object.values(this.ports));
    while (pending.size) {
      if (this.proc.exitCode !== null) throw new Error(`server exited: ${this.output()}`);
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`server did not listen on ${[...pending]}: ${this.output()}`);
      }
      for (const p of [...pending]) if (await canConnect(p)) pending.delete(p);
      if (pending.size) await sleep(20);
    }
    return this;
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGCONT'); // in case a test froze it
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(t);
  }

  /** Stop the process (SIGSTOP): its sockets stay open but nothing answers. */
  freeze() {
    this.proc.kill('SIGSTOP');
  }

  /** Let a frozen process run again (SIGCONT). */
  thaw() {
    this.proc.kill('SIGCONT');
  }

  output() {
    try {
      return readFileSync(this.logFile, 'utf8').slice(-4000);
    } catch {
      return '';
    }
  }

  ws(system, p = '') {
    return `ws://127.0.0.1:${this.ports[system]}${p}`;
  }

  http(system) {
    return `http://127.0.0.1:${this.ports[system]}`;
  }
}

/** Resolves when no message arrives on `client` for `ms`; rejects with the message otherwise. */
export async function assertSilent(client, ms = 300) {
  let msg;
  try {
    msg = await client.recv(ms);
  } catch (e) {
    if (e instanceof TimeoutError) return;
    throw e;
  }
  throw new Error(`unexpected message: ${JSON.stringify(msg)}`);
}

/** Wait until `pred()` is true. */
export async function eventually(pred, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(20);
  }
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** An HS256 JWT signed with node:crypto. */
export function makeToken(secret, claims = {}, ttlSeconds = 3600) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = { exp: Math.floor(Date.now() / 1000) + ttlSeconds, ...claims };
  const payload = b64url(JSON.stringify(body));
  const sig = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
}

/**
 * A TCP proxy on 127.0.0.1 (port 0) in front of one server port, to break connections the way a
 * network does: `cut()` kills every connection through it abruptly (RST, no close frame),
 * `hold()` keeps new connections waiting (not forwarded) until `release()`, and
 * `swallowReplies()` stops forwarding what the server sends on the current connections.
 */
export class TcpProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.pairs = new Set();
    this.held = [];
    this.holding = false;
    this.accepted = 0;
  }

  start() {
    this.server = net.createServer((sock) => this._accept(sock));
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.port = this.server.address().port;
        resolve(this);
      });
    });
  }

  _accept(client) {
    client.on('error', () => {});
    if (this.holding) {
      this.held.push(client);
      return;
    }
    this.accepted += 1;
    const up = net.connect({ host: '127.0.0.1', port: this.targetPort });
    up.on('error', () => {});
    const pair = { client, up, down: true };
    this.pairs.add(pair);
    client.on('data', (d) => up.write(d));
    up.on('data', (d) => {
      if (pair.down) client.write(d);
    });
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      up.destroy();
    };
    client.on('close', end);
    up.on('close', end);
  }

  ws(p = '') {
    return `ws://127.0.0.1:${this.port}${p}`;
  }

  /** Kill every current connection abruptly (TCP reset on both sides). */
  cut() {
    for (const { client, up } of [...this.pairs]) {
      client.resetAndDestroy();
      up.resetAndDestroy();
    }
    this.pairs.clear();
  }

  /** Stop forwarding server-to-client bytes on the current connections. */
  swallowReplies() {
    for (const pair of this.pairs) pair.down = false;
  }

  hold() {
    this.holding = true;
  }

  release() {
    this.holding = false;
    for (const sock of this.held.splice(0)) if (!sock.destroyed) this._accept(sock);
  }

  close() {
    this.cut();
    for (const sock of this.held.splice(0)) sock.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

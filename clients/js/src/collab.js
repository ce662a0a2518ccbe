// Collab project rooms (docs/protocol/collab-v1.md).
//
// Clients connect to ws://<host>:3001/ws, get CONNECTION_ESTABLISHED with their clientId, join
// projects and exchange edits with the other members; USER_PRESENCE goes to every member when
// membership changes. Backends push with POST /broadcast (broadcast). No application-level ping.
// On reconnect the client re-joins its projects (with its userId). On v2 each JOIN_PROJECT then
// carries the project stream's position in the envelope's `since`, so the server replays the
// edits and broadcasts missed meanwhile (or reports `notRecovered`).

/** The v2 stream of a project's room. */
export const projectStream = (projectId) => `project:${projectId}`;

import { ClientError, ReconnectingClient, expectStatus, httpBase, httpRequest, withTimeout } from './base.js';

export const DEFAULT_URL = 'ws://localhost:3001/ws';

export const EDIT_TYPES = [
  'TASK_CREATE',
  'TASK_UPDATE',
  'TASK_DELETE',
  'COMMENT_CREATE',
  'COMMENT_UPDATE',
  'COMMENT_DELETE',
  'PROJECT_UPDATE',
];
export const SERVER_TYPES = ['CONNECTION_ESTABLISHED', 'USER_PRESENCE', 'ERROR'];

/** The server answered with an ERROR frame. */
export class CollabError extends ClientError {
  constructor(frame) {
    super(`${frame?.message}: ${frame?.details}`);
    this.frame = frame;
  }
}

/** An edit or a backend broadcast (it has a `projectId`), not a greeting, presence or error. */
export const isUpdate = (msg) => msg != null && typeof msg === 'object' && 'projectId' in msg;

/** USER_PRESENCE. */
export const isPresence = (msg) => msg?.type === 'USER_PRESENCE' && !('projectId' in msg);

/** The user ids listed in a USER_PRESENCE message. */
export const presenceUsers = (msg) => (msg?.payload?.activeUsers ?? []).map((u) => u.userId);

export class CollabClient extends ReconnectingClient {
  static appPing = false;

  /**
   * @param {string} [url]
   * @param {object} [opts] ReconnectingClient options, plus `userId`.
   */
  constructor(url = DEFAULT_URL, opts = {}) {
    super(url, opts);
    this.userId = opts.userId ?? null;
    this._projects = new Set();
    /** This connection's clientId (changes on reconnect). */
    this.clientId = null;
  }

  /** The projects this client is in (re-joined after a reconnect). */
  get projects() {
    return [...this._projects];
  }

  async _handshake(conn) {
    const greeting = await this._readGreeting(conn, 'CONNECTION_ESTABLISHED');
    this.clientId = greeting.clientId ?? null;
  }

  // Project positions go in JOIN_PROJECT's envelope, not in the upgrade URL.
  _presentInUrl(stream) {
    return !stream.startsWith('project:');
  }

  async _resume() {
    for (const p of this._projects) this._sendNow(this._joinMsg(p, null), { since: this._sinceFor(projectStream(p)) });
    if (this.userId && !this._projects.size) {
      this._sendNow({ type: 'SET_USER', payload: { userId: this.userId } });
    }
  }

  _joinMsg(projectId, userId) {
    const msg = { type: 'JOIN_PROJECT', projectId };
    const uid = userId || this.userId;
    if (uid) msg.userId = uid;
    return msg;
  }

  /** Name the user behind this connection (no reply; members get USER_PRESENCE). */
  async setUser(userId) {
    if (!userId) throw new TypeError('userId must be a non-empty string');
    await this._updateState(() => {
      this.userId = userId;
    }, { type: 'SET_USER', payload: { userId } });
  }

  /**
   * Join `projectId` (optionally naming the user first). With `wait`, resolves to the
   * USER_PRESENCE the join produced; rejects with CollabError if the server answered ERROR.
   */
  async joinProject(projectId, { userId, wait = true, timeout = 10_000 } = {}) {
    if (!projectId) throw new TypeError('projectId must be a non-empty string');
    const reply = wait
      ? this.expect((m) => m?.type === 'ERROR' || (m?.type === 'USER_PRESENCE' && m?.payload?.projectId === projectId))
      : null;
    const msg = this._joinMsg(projectId, userId);
    await this._updateState(() => {
      if (userId) this.userId = userId;
      this._projects.add(projectId);
    }, msg);
    if (!reply) return null;
    let got;
    try {
      got = await withTimeout(reply, timeout, 'no USER_PRESENCE');
    } finally {
      reply.cancel();
    }
    if (got.type === 'ERROR') {
      this._projects.delete(projectId);
      this._forgetStream(projectStream(projectId));
      throw new CollabError(got);
    }
    return got;
  }

  /** Leave `projectId` (no reply; the remaining members get USER_PRESENCE). */
  async leaveProject(projectId) {
    await this._updateState(() => {
      this._projects.delete(projectId);
      this._forgetStream(projectStream(projectId));
    }, { type: 'LEAVE_PROJECT', projectId });
  }

  /**
   * Send an edit to the other members of `projectId` (which must have been joined). The server
   * answers only on error (ERROR "Not a member of this project"), as a queued message.
   * On v2 resolves to the ack (`{stream, epoch, offset}` once published), like `send`.
   */
  async sendEdit(type, projectId, payload, { operationId, timeout } = {}) {
    if (!EDIT_TYPES.includes(type)) throw new TypeError(`unknown edit type ${type}`);
    const msg = { type, projectId, payload: payload === undefined ? null : payload };
    if (operationId !== undefined) msg.operationId = operationId;
    return this.send(msg, { timeout });
  }

  sendTaskCreate(projectId, task, opts) {
    return this.sendEdit('TASK_CREATE', projectId, task, opts);
  }

  sendTaskUpdate(projectId, task, opts) {
    return this.sendEdit('TASK_UPDATE', projectId, task, opts);
  }

  sendTaskDelete(projectId, task, opts) {
    return this.sendEdit('TASK_DELETE', projectId, task, opts);
  }

  sendCommentCreate(projectId, comment, opts) {
    return this.sendEdit('COMMENT_CREATE', projectId, comment, opts);
  }

  sendCommentUpdate(projectId, comment, opts) {
    return this.sendEdit('COMMENT_UPDATE', projectId, comment, opts);
  }

  sendCommentDelete(projectId, comment, opts) {
    return this.sendEdit('COMMENT_DELETE', projectId, comment, opts);
  }

  sendProjectUpdate(projectId, project, opts) {
    return this.sendEdit('PROJECT_UPDATE', projectId, project, opts);
  }
}

/**
 * POST /broadcast to every member of `projectId`. Resolves to
 * {success, message, projectId, clientCount}. Leave `payload` undefined to send none.
 * `apiKey` is needed when the server sets COLLAB_API_KEY. Throws HttpError on 4xx.
 */
export async function broadcast(baseUrl, type, projectId, payload, { operationId, timestamp, userId, apiKey, timeout } = {}) {
  const json = { type, projectId };
  if (payload !== undefined) json.payload = payload;
  if (operationId !== undefined) json.operationId = operationId;
  if (timestamp !== undefined) json.timestamp = timestamp;
  if (userId !== undefined) json.userId = userId;
  const resp = await httpRequest('POST', `${httpBase(baseUrl)}/broadcast`, { json, apiKey, timeout });
  return expectStatus(resp, 200);
}

/** GET /health: {status: "healthy", timestamp, clients, projects, uptime}. */
export async function health(baseUrl, { timeout } = {}) {
  return expectStatus(await httpRequest('GET', `${httpBase(baseUrl)}/health`, { timeout }), 200);
}

/** GET /stats: {totalClients, totalProjects, projectStats}. */
export async function stats(baseUrl, { timeout } = {}) {
  return expectStatus(await httpRequest('GET', `${httpBase(baseUrl)}/stats`, { timeout }), 200);
}

// AFC Stack events (docs/protocol/afc-v1.md).
//
// Listeners on ws://<host>:4001/ws receive every event {type: "<entity>:<action>", payload};
// backends publish with POST /events/<entity>-<action> (publishEvent). The only client message
// is the application-level {"type":"ping"}, used as the heartbeat (its pongs are not queued).

import { ReconnectingClient, expectStatus, httpBase, httpRequest } from './base.js';

export const DEFAULT_URL = 'ws://localhost:4001/ws';

const NAME = /^[A-Za-z0-9_-]+-[A-Za-z0-9_]+$/;

/** A published event (`<entity>:<action>`), not a `pong` or `error` reply. */
export const isEvent = (msg) => typeof msg?.type === 'string' && msg.type.includes(':');

export class AfcClient extends ReconnectingClient {
  static appPing = true;

  constructor(url = DEFAULT_URL, opts = {}) {
    super(url, opts);
  }

  /** Take queued messages until an event of `eventType` (`todo:created`) arrives. */
  waitEvent(eventType, timeout = 5_000) {
    return this.recvMatch(eventType, timeout);
  }
}

/** `/events/todo-created` for `todo:created` or `todo-created`; throws for an invalid name. */
export function eventPath(event) {
  let name = event;
  const colon = name.lastIndexOf(':');
  if (colon >= 0) name = `${name.slice(0, colon)}-${name.slice(colon + 1)}`;
  if (!NAME.test(name)) throw new TypeError(`invalid event name ${JSON.stringify(event)}: expected \`<entity>-<action>\``);
  return `/events/${name}`;
}

/**
 * POST /events/<entity>-<action> with `payload` as the JSON body; expects 204.
 * `apiKey` is needed when the server sets AFC_API_KEY. Throws HttpError otherwise.
 */
export async function publishEvent(baseUrl, event, payload, { apiKey, timeout } = {}) {
  const resp = await publishEventRaw(baseUrl, event, JSON.stringify(payload), { apiKey, timeout });
  expectStatus(resp, 204);
}

/** Like publishEvent with the body as text (kept byte for byte); returns the response. */
export function publishEventRaw(baseUrl, event, body, { apiKey, timeout } = {}) {
  return httpRequest('POST', httpBase(baseUrl) + eventPath(event), { body, apiKey, timeout });
}

/** GET /health: {status, clients, uptime}. */
export async function health(baseUrl, { timeout } = {}) {
  return expectStatus(await httpRequest('GET', `${httpBase(baseUrl)}/health`, { timeout }), 200);
}

// Heartbeat: a server that stops answering (SIGSTOP) is detected (the app-level ping for AFC,
// WebSocket pings for laptimes); once it runs again, the clients are back by themselves.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { AfcClient } from '../src/afc.js';
import { LaptimesClient } from '../src/laptimes.js';
import { FAST, Server, WS, eventually } from './helpers.js';

const server = new Server(['laptimes', 'afc']);
after(() => server.stop());

test('heartbeat replaces a connection to a frozen server', async () => {
  await server.start();
  const beat = { backoff: FAST, heartbeatInterval: 200, heartbeatTimeout: 500, openTimeout: 1000 };
  // WebSocket-level pings from the client need the `ws` package (a browser cannot send them).
  const lt = new LaptimesClient(server.ws('laptimes'), { ...beat, WebSocket: WS });
  const afc = new AfcClient(server.ws('afc', '/ws'), beat);
  try {
    for (const c of [lt, afc]) await c.start().waitConnected(5000);
    await new Promise((r) => setTimeout(r, 600)); // several heartbeats succeed: nothing changes
    assert.ok(lt.connected && afc.connected);
    assert.equal(lt.connections, 1);
    assert.equal(afc.connections, 1);

    server.freeze();
    await eventually(() => !lt.connected && !afc.connected, 10_000);
    server.thaw();

    for (const c of [lt, afc]) await eventually(() => c.connections >= 2 && c.connected, 15_000);
    assert.equal((await afc.ping(5000)).type, 'pong');
    assert.deepEqual(afc.drain(), []); // heartbeat pongs are not queued
  } finally {
    server.thaw();
    for (const c of [lt, afc]) await c.close();
  }
});

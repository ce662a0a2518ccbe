// Laptimes flow: a change notice reaches every other client, never the sender.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { LaptimesClient, isError, isNotice } from '../src/laptimes.js';
import { FAST, Server, assertSilent } from './helpers.js';

const server = new Server(['laptimes']);
before(() => server.start());
after(() => server.stop());

test('laptimes notice is relayed to the others only', async () => {
  const url = server.ws('laptimes', '/any/path');
  const [a, b, c] = [0, 1, 2].map(() => new LaptimesClient(url, { backoff: FAST }).start());
  try {
    await Promise.all([a, b, c].map((cl) => cl.waitConnected(5000)));
    await assertSilent(a, 100); // no greeting

    const sent = await a.notify('times');
    for (const other of [b, c]) {
      const got = await other.recv(5000);
      assert.ok(isNotice(got));
      assert.deepEqual(got, sent);
    }
    await assertSilent(a);

    const extra = await b.notify('tracks', { timestamp: null, extra: { by: 'lab-3', ids: [4, 7] } });
    assert.deepEqual(await a.recv(5000), extra);
    assert.deepEqual(await c.recv(5000), extra);
    await assertSilent(b);

    // The exact text is relayed (key order kept).
    await c.sendText('{"operation":"CHANGE","table":"cars"}');
    for (const other of [a, b]) assert.deepEqual(Object.keys(await other.recv(5000)), ['operation', 'table']);

    // Broken notices are answered to the sender alone.
    await a.sendText('[1]');
    let err = await a.recv(5000);
    assert.ok(isError(err));
    assert.equal(err.message, 'Invalid change notice');
    assert.equal(err.details, 'expected a JSON object');
    await a.sendJson({ table: 'cars' });
    err = await a.recv(5000);
    assert.equal(err.details, 'missing field `operation`');
    await assertSilent(b);
    await assertSilent(c, 50);
    assert.equal(a.connections, 1);
  } finally {
    await Promise.all([a, b, c].map((cl) => cl.close()));
  }
});

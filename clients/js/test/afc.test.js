// AFC flow: HTTP-published events reach every listener; ping/pong; errors.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { HttpError } from '../src/base.js';
import { AfcClient, eventPath, health, publishEvent, publishEventRaw } from '../src/afc.js';
import { FAST, KEYS, Server, assertSilent } from './helpers.js';

const server = new Server(['afc']);
before(() => server.start());
after(() => server.stop());

test('afc events reach every listener', async () => {
  const url = server.ws('afc', '/ws');
  const http = server.http('afc');
  const apiKey = KEYS.afc;
  const a = new AfcClient(url, { backoff: FAST }).start();
  const b = new AfcClient(url, { backoff: FAST }).start();
  try {
    await a.waitConnected(5000);
    await b.waitConnected(5000);
    assert.equal((await health(http)).clients, 2);

    await publishEvent(http, 'todo-created', { id: 1, title: 'New Todo' }, { apiKey });
    for (const cl of [a, b]) {
      assert.deepEqual(await cl.recv(5000), { type: 'todo:created', payload: { id: 1, title: 'New Todo' } });
    }

    await publishEvent(http, 'line-item:created', { orderId: 12, qty: 2 }, { apiKey });
    await publishEvent(http, 'counter-changed', 42, { apiKey });
    for (const cl of [a, b]) {
      assert.deepEqual((await cl.waitEvent('line-item:created')).payload, { orderId: 12, qty: 2 });
      assert.deepEqual(await cl.recv(5000), { type: 'counter:changed', payload: 42 });
    }

    const resp = await publishEventRaw(http, 'user-updated', '  {"z":1,"a":2}\n', { apiKey });
    assert.equal(resp.status, 204);
    assert.deepEqual(Object.keys((await a.recv(5000)).payload), ['z', 'a']);
    await b.recv(5000);

    const pong = await a.ping();
    assert.equal(pong.type, 'pong');
    assert.match(pong.payload.timestamp, /Z$/);
    await assertSilent(b);

    await a.sendJson({ type: 'todo:created', payload: {} });
    const err = await a.recv(5000);
    assert.equal(err.type, 'error');
    assert.equal(err.payload.message, 'Unknown message type');
    await assertSilent(b);

    await assert.rejects(publishEvent(http, 'todo-created', { id: 2 }), (e) => e instanceof HttpError && e.status === 401);
    await assert.rejects(publishEvent(http, 'todo-created', { id: 2 }, { apiKey: 'wrong' }), (e) => e.status === 401);
    const bad = await publishEventRaw(http, 'todo-created', '', { apiKey });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error, 'invalid body');
    assert.throws(() => eventPath('todo'), TypeError);
    await assertSilent(a, 100);
    await assertSilent(b, 100);
  } finally {
    await a.close();
    await b.close();
  }
});

// DCDock flow: JWT auth, direction filters, conflicts to their user only, publish, stats.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { AuthenticationFailed, HttpError } from '../src/base.js';
import { DcdockClient, publish, publishAssignment, publishConflict, stats } from '../src/dcdock.js';
import { FAST, JWT_SECRET, KEYS, Server, assertSilent, makeToken } from './helpers.js';

const server = new Server(['dcdock']);
before(() => server.start());
after(() => server.stop());

const assignment = (id, direction) => (direction ? { id, version: 1, load: { id: 9, direction } } : { id, version: 1 });

test('dcdock filters and conflicts', async () => {
  const url = server.ws('dcdock', '/api/ws');
  const http = server.http('dcdock');
  const apiKey = KEYS.dcdock;
  const tok4 = makeToken(JWT_SECRET, { sub: '4', email: 'operator2@dcdock.com' });
  const a = new DcdockClient(url, { token: makeToken(JWT_SECRET, { user_id: 3 }), backoff: FAST }).start();
  const b = new DcdockClient(url, { token: async () => tok4, backoff: FAST }).start();
  try {
    await a.waitConnected(5000);
    await b.waitConnected(5000);
    assert.match(a.clientId, /^user_3_/);
    assert.match(b.clientId, /^user_4_/);

    assert.deepEqual((await a.subscribe('IB')).filters, { direction: 'IB' });
    assert.equal(a.direction, 'IB');

    const send = (type, id, direction) =>
      publishAssignment(http, type, { assignmentId: id, userId: 4, userEmail: 'operator2@dcdock.com', data: assignment(id, direction), apiKey });

    assert.equal(await send('assignment_created', 7, 'IB'), 2);
    for (const cl of [a, b]) {
      const got = await cl.recvMatch('assignment_created');
      assert.equal(got.assignment_id, 7);
      assert.equal(got.action, 'CREATE');
      assert.equal(got.timestamp.length, 19);
    }
    assert.equal(await send('assignment_updated', 8, 'OB'), 1);
    assert.equal((await b.recvMatch('assignment_updated')).assignment_id, 8);
    assert.equal(await send('assignment_deleted', 9, null), 1);
    assert.deepEqual((await b.recvMatch('assignment_deleted')).data, assignment(9));
    await assertSilent(a);

    const n = await publishConflict(http, {
      assignmentId: 7, userId: '3', currentVersion: 5, attemptedVersion: 4, currentData: { id: 7, version: 5 }, apiKey,
    });
    assert.equal(n, 1);
    const conflict = await a.recvMatch('conflict_detected');
    assert.equal(conflict.current_version, 5);
    assert.equal(conflict.attempted_version, 4);
    await assertSilent(b);

    assert.equal((await a.unsubscribe()).type, 'unsubscribed');
    assert.equal(await send('assignment_updated', 10, 'OB'), 2);
    await a.recvMatch('assignment_updated');
    await b.recvMatch('assignment_updated');

    assert.equal((await a.ping()).type, 'pong');
    await a.sendJson({ type: 'subscribe', filters: { direction: 'INBOUND' } });
    assert.equal((await a.recvMatch('error')).message, 'Invalid message format');

    const st = await stats(http);
    const ids = st.clients.map((c) => c.client_id);
    assert.ok(ids.includes(a.clientId) && ids.includes(b.clientId));

    await assert.rejects(publish(http, { type: 'assignment_created' }, { apiKey: 'wrong' }), (e) => e instanceof HttpError && e.status === 401);
    await assert.rejects(
      publish(http, { type: 'assignment_created', assignment_id: 1, action: 'DELETE', user_id: 1, user_email: 'x', data: {} }, { apiKey }),
      (e) => e.status === 400,
    );
  } finally {
    await a.close();
    await b.close();
  }
});

test('dcdock bad tokens are refused', async () => {
  const url = server.ws('dcdock', '/api/ws');
  const bad = [makeToken('wrong-secret', { user_id: 1 }), makeToken(JWT_SECRET, { user_id: 1 }, -3600), ''];
  for (const token of bad) {
    const c = new DcdockClient(url, { token, backoff: FAST }).start();
    await assert.rejects(c.waitConnected(5000), AuthenticationFailed);
    assert.equal(c.lastClose.code, 1008);
    await c.close();
  }
});

// Collab flow: greeting, presence, edits to other members, broadcast, leave.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { HandshakeRefused, HttpError } from '../src/base.js';
import { CollabClient, CollabError, broadcast, presenceUsers, stats } from '../src/collab.js';
import { FAST, KEYS, Server, WS, assertSilent } from './helpers.js';

const server = new Server(['collab']);
before(() => server.start());
after(() => server.stop());

const P = 'project-123';

test('collab project flow', async () => {
  const url = server.ws('collab', '/ws');
  const http = server.http('collab');
  const apiKey = KEYS.collab;
  const a = new CollabClient(url, { userId: 'alice', backoff: FAST }).start();
  await a.waitConnected(5000); // a's connection opens first: presence lists it first
  const b = new CollabClient(url, { backoff: FAST }).start();
  try {
    await b.waitConnected(5000);
    assert.match(a.clientId, /^client_/);
    assert.notEqual(a.clientId, b.clientId);

    let presence = await a.joinProject(P);
    assert.deepEqual(presenceUsers(presence), ['alice']);
    presence = await b.joinProject(P, { userId: 'bob' });
    assert.deepEqual(presenceUsers(presence), ['alice', 'bob']);
    const seen = await a.recvMatch((m) => m.type === 'USER_PRESENCE' && m.payload.userCount === 2);
    assert.deepEqual(seen.payload.activeUsers.map((u) => u.clientId), [a.clientId, b.clientId]);
    a.drain();
    b.drain();

    const task = { id: 'task-456', title: 'Updated task title' };
    await a.sendTaskUpdate(P, task, { operationId: 'op-789' });
    const got = await b.recvMatch('TASK_UPDATE');
    assert.deepEqual(got.payload, task);
    assert.equal(got.operationId, 'op-789');
    assert.equal(got.projectId, P);
    assert.equal(got.userId, 'alice');
    assert.equal(typeof got.timestamp, 'number');
    await assertSilent(a);

    await b.sendCommentCreate(P, { id: 'comment-12', body: 'Looks good' });
    const comment = await a.recvMatch('COMMENT_CREATE');
    assert.equal(comment.userId, 'bob');
    assert.ok(!('operationId' in comment));

    await a.sendTaskCreate('project-999', { id: 't' });
    assert.equal((await a.recvMatch('ERROR')).message, 'Not a member of this project');
    await assertSilent(b);

    const res = await broadcast(http, 'TASKS_REORDERED', P, undefined, { apiKey });
    assert.equal(res.success, true);
    assert.equal(res.clientCount, 2);
    for (const cl of [a, b]) {
      const m = await cl.recvMatch('TASKS_REORDERED');
      assert.ok(!('payload' in m));
      assert.equal(m.userId, null);
      assert.match(m.operationId, /^broadcast-/);
    }
    await assert.rejects(broadcast(http, 'TASK_UPDATE', P, { id: 1 }), (e) => e instanceof HttpError && e.status === 401);
    await assert.rejects(broadcast(http, 'USER_PRESENCE', P, undefined, { apiKey }), (e) => e.status === 400);

    const st = await stats(http);
    assert.deepEqual(st.projectStats[P].clients, [a.clientId, b.clientId]);

    await a.leaveProject(P);
    assert.deepEqual(presenceUsers(await b.recvMatch('USER_PRESENCE')), ['bob']);
    assert.deepEqual(a.projects, []);
  } finally {
    await a.close();
    await b.close();
  }
});

test('collab room limit is reported by joinProject()', async () => {
  const a = new CollabClient(server.ws('collab', '/ws'), { backoff: FAST }).start();
  try {
    await a.waitConnected(5000);
    for (let i = 0; i < 64; i++) await a.joinProject(`p-${i}`);
    await assert.rejects(a.joinProject('p-64'), CollabError);
    assert.equal(a.projects.length, 64);
  } finally {
    await a.close();
  }
});

test('collab refused upgrades stop the client', async () => {
  const cases = [
    [server.ws('collab', '/nope'), undefined, 404],
    [server.ws('collab', '/ws'), 'http://evil.example', 403],
  ];
  for (const [url, origin, status] of cases) {
    // The `ws` package sets Origin and reports the refused status (a browser's WebSocket cannot).
    const c = new CollabClient(url, { origin, backoff: FAST, WebSocket: WS }).start();
    await assert.rejects(c.waitConnected(5000), (e) => e instanceof HandshakeRefused && e.status === status);
    await c.close();
  }
  const ok = new CollabClient(server.ws('collab', '/ws'), { origin: 'http://localhost:3000', WebSocket: WS }).start();
  await ok.waitConnected(5000);
  await ok.close();
});

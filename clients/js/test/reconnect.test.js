// Reconnect: the server stops and comes back on the same ports; clients reconnect, restore their
// state (projects, sessions, filters) and work again.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { CollabClient, presenceUsers } from '../src/collab.js';
import { DcdockClient, publishAssignment } from '../src/dcdock.js';
import { LaptimesClient } from '../src/laptimes.js';
import { RaceClient, publishUpdate } from '../src/race.js';
import { FAST, JWT_SECRET, KEYS, Server, eventually, makeToken } from './helpers.js';

const server = new Server(['laptimes', 'race', 'collab', 'dcdock']);
after(() => server.stop());

test('clients reconnect after a server restart', async () => {
  await server.start();
  const downs = [];
  const ltA = new LaptimesClient(server.ws('laptimes'), { backoff: FAST, onDisconnect: (i) => downs.push(i) });
  const ltB = new LaptimesClient(server.ws('laptimes'), { backoff: FAST });
  const coA = new CollabClient(server.ws('collab', '/ws'), { userId: 'alice', backoff: FAST });
  const coB = new CollabClient(server.ws('collab', '/ws'), { userId: 'bob', backoff: FAST });
  const race = new RaceClient(server.ws('race', '/ws'), { backoff: FAST });
  const dock = new DcdockClient(server.ws('dcdock', '/api/ws'), { token: makeToken(JWT_SECRET, { user_id: 3 }), backoff: FAST });
  const clients = [ltA, ltB, coA, coB, race, dock];
  try {
    for (const c of clients) await c.start().waitConnected(5000);
    await coA.joinProject('p1');
    await coB.joinProject('p1');
    await race.subscribe('race-2024');
    await dock.subscribe('OB');
    const firstIds = [coA.clientId, dock.clientId];

    await server.stop();
    await eventually(() => clients.every((c) => !c.connected));
    assert.ok(downs.length >= 1);
    assert.equal(downs[0].code, 1012); // the server says it is restarting
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(clients.every((c) => c.connections === 1));

    await server.start();
    for (const c of clients) await c.waitConnected(10_000);
    assert.ok(clients.every((c) => c.connections === 2));
    assert.notDeepEqual([coA.clientId, dock.clientId], firstIds);
    for (const c of clients) c.drain();

    const sent = await ltA.notify('drivers');
    assert.deepEqual(await ltB.recvMatch((m) => m.table === 'drivers'), sent);

    await coA.sendTaskUpdate('p1', { id: 't1' }, { operationId: 'op-1' });
    const edit = await coB.recvMatch('TASK_UPDATE');
    assert.equal(edit.userId, 'alice');
    const presence = await coA.joinProject('p1');
    assert.deepEqual(presenceUsers(presence).sort(), ['alice', 'bob']);

    const res = await publishUpdate(server.http('race'), 'race-2024', 'lap_update', { lapNumber: 2 }, { apiKey: KEYS.race });
    assert.equal(res.delivered, 1);
    assert.deepEqual((await race.recvMatch('lap_update')).data, { lapNumber: 2 });

    for (const [id, direction] of [[1, 'IB'], [2, 'OB']]) {
      await publishAssignment(server.http('dcdock'), 'assignment_created', {
        assignmentId: id, userId: 1, userEmail: 'a@b', data: { id, load: { direction } }, apiKey: KEYS.dcdock,
      });
    }
    assert.equal((await dock.recvMatch('assignment_created')).assignment_id, 2);

    ltB.dropConnection();
    await eventually(() => ltB.connections === 3 && ltB.connected);
    const again = await ltA.notify('cars');
    assert.deepEqual(await ltB.recvMatch((m) => m.table === 'cars'), again);
  } finally {
    for (const c of clients) await c.close();
  }
});

// Race flow: sessions via query and message, isolated updates, ping, errors.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { HttpError } from '../src/base.js';
import { RaceClient, RaceError, health, publishUpdate } from '../src/race.js';
import { FAST, KEYS, Server, assertSilent } from './helpers.js';

const server = new Server(['race']);
before(() => server.start());
after(() => server.stop());

const LAP = { driverId: 'VER', lapTime: '1:15.234', isFastest: true, lapNumber: 45 };

test('race updates reach the followers of their session only', async () => {
  const url = server.ws('race', '/ws');
  const http = server.http('race');
  const apiKey = KEYS.race;
  const a = new RaceClient(url, { sessions: ['race-2024'], backoff: FAST }).start();
  const b = new RaceClient(url, { backoff: FAST }).start();
  try {
    await a.waitConnected(5000);
    const sub = await a.recvMatch('subscribed');
    assert.deepEqual(sub.data, { sessionId: 'race-2024' });
    assert.match(sub.timestamp, /Z$/);

    await b.waitConnected(5000);
    assert.deepEqual((await b.subscribe('race-2025')).data, { sessionId: 'race-2025' });
    assert.deepEqual(b.sessions, ['race-2025']);
    // Helpers return the reply without taking it off the queue.
    assert.equal((await b.recv(5000)).type, 'subscribed');
    assert.equal((await health(http)).sessions, 2);

    assert.deepEqual(await publishUpdate(http, 'race-2024', 'lap_update', LAP, { apiKey }), { sessionId: 'race-2024', delivered: 1 });
    const got = await a.recvMatch('lap_update');
    assert.deepEqual(got.data, LAP);
    await assertSilent(b);

    const timestamp = '2024-05-26T15:05:00.500+02:00';
    await publishUpdate(http, 'race-2025', 'drs_update', { enabled: false }, { apiKey, timestamp });
    assert.deepEqual(await b.recvMatch('drs_update'), { type: 'drs_update', data: { enabled: false }, timestamp });
    await assertSilent(a);

    await a.subscribe('race-2025');
    await a.subscribe('race-2025');
    assert.equal((await publishUpdate(http, 'race-2025', 'tire_change', { driverId: 'NOR' }, { apiKey })).delivered, 2);
    assert.deepEqual((await a.recvMatch('tire_change')).data, { driverId: 'NOR' });
    await assertSilent(a, 200);

    const pong = await a.ping();
    assert.equal(pong.type, 'pong');
    assert.deepEqual(pong.data, {});

    await b.sendJson({ type: 'lap_update', data: LAP });
    assert.match((await b.recvMatch('error')).data.details, /clients may not publish/);

    const unsub = await b.unsubscribe('race-2025');
    assert.equal(unsub.type, 'unsubscribed');
    assert.deepEqual(await b.recv(5000), unsub);
    assert.equal((await publishUpdate(http, 'race-2025', 'status_change', { driverId: 'SAI', status: 'PIT' }, { apiKey })).delivered, 1);
    await a.recvMatch('status_change');
    await assertSilent(b);

    await assert.rejects(publishUpdate(http, 'race-2024', 'lap_update', LAP, { apiKey: 'wrong' }), (e) => e instanceof HttpError && e.status === 401);
    await assert.rejects(publishUpdate(http, 'bad id!', 'lap_update', LAP, { apiKey }), TypeError);
    await assert.rejects(a.subscribe('bad id!'), TypeError);
  } finally {
    await a.close();
    await b.close();
  }
});

test('race room limit is reported by subscribe()', async () => {
  const a = new RaceClient(server.ws('race', '/ws'), { backoff: FAST }).start();
  try {
    await a.waitConnected(5000);
    for (let i = 0; i < 64; i++) await a.subscribe(`s-${i}`);
    await assert.rejects(a.subscribe('s-64'), (e) => e instanceof RaceError && /at most 64 rooms/.test(e.message));
    assert.ok(!a.sessions.includes('s-64'));
  } finally {
    await a.close();
  }
});

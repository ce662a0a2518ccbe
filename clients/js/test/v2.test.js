// Protocol v2 against the real server: negotiation, unchanged v1 messages, resume after a dropped
// connection (replay, `recovered`, `notRecovered`), acks and resends, and the v1 opt-out/fallback.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BufferFull, Backoff, SUBPROTOCOL } from '../src/base.js';
import { AfcClient, publishEvent } from '../src/afc.js';
import { CollabClient, broadcast } from '../src/collab.js';
import { DcdockClient, publishAssignment } from '../src/dcdock.js';
import { LaptimesClient, isError } from '../src/laptimes.js';
import { RaceClient, publishUpdate } from '../src/race.js';
import { FAST, JWT_SECRET, KEYS, Server, TcpProxy, assertSilent, eventually, makeToken } from './helpers.js';

const server = new Server(['laptimes', 'afc', 'race', 'collab', 'dcdock']);
const trimmed = new Server(['afc'], ['--history-max-entries', '2']);
const noHistory = new Server(['laptimes', 'afc'], ['--history-max-entries', '0']);
before(() => Promise.all([server.start(), trimmed.start(), noHistory.start()]));
after(() => Promise.all([server.stop(), trimmed.stop(), noHistory.stop()]));

const SESSION = /^[0-9a-f]{32}$/;

/** Messages and events a client reported, in the order it reported them. */
function record(client) {
  const log = [];
  client.onMessage = (m) => log.push(['msg', m]);
  for (const name of ['session', 'subscribed', 'recovered', 'notRecovered', 'gap', 'error']) {
    client.on(name, (e) => log.push([name, e]));
  }
  return log;
}

const messagesOf = (log) => log.filter(([k]) => k === 'msg').map(([, m]) => m);

function assertV2(client) {
  assert.equal(client.protocol, 'v2');
  assert.equal(client.subprotocol, SUBPROTOCOL);
  assert.match(client.session, SESSION);
}

async function withProxy(port, fn) {
  const proxy = await new TcpProxy(port).start();
  try {
    return await fn(proxy);
  } finally {
    await proxy.close();
  }
}

test('v2 is negotiated and every system delivers its v1 messages unchanged', async () => {
  const lt = [0, 1].map(() => new LaptimesClient(server.ws('laptimes'), { backoff: FAST }).start());
  const afc = new AfcClient(server.ws('afc', '/ws'), { backoff: FAST }).start();
  const coA = new CollabClient(server.ws('collab', '/ws'), { userId: 'alice', backoff: FAST }).start();
  const coB = new CollabClient(server.ws('collab', '/ws'), { userId: 'bob', backoff: FAST }).start();
  const race = new RaceClient(server.ws('race', '/ws'), { sessions: ['gp-1'], backoff: FAST }).start();
  const dock = new DcdockClient(server.ws('dcdock', '/api/ws'), { token: makeToken(JWT_SECRET, { user_id: 3 }), backoff: FAST }).start();
  const all = [...lt, afc, coA, coB, race, dock];
  try {
    const subscribedAll = lt[1].expectEvent('subscribed', (e) => e.stream === 'all');
    for (const c of all) await c.waitConnected(5000);
    for (const c of all) assertV2(c);
    const sub = await subscribedAll;
    assert.match(sub.epoch, /^[0-9a-f]{16}$/);
    assert.equal(typeof sub.offset, 'number');

    // Laptimes: the notice arrives as sent (byte order kept), never to its sender; the ack has
    // the notice's position, which the receiver now holds.
    await assertSilent(lt[0], 100); // session and subscribed frames are not messages
    const notice = { table: 'times', operation: 'CHANGE', timestamp: '2025-10-25T12:34:56.789Z', by: 'lab-3' };
    const ack = await lt[0].send(notice);
    assert.equal(ack.stream, 'all');
    assert.equal(ack.epoch, sub.epoch);
    assert.equal(ack.offset, sub.offset + 1);
    assert.deepEqual(await lt[1].recv(5000), notice);
    assert.deepEqual(lt[1].positions.all, { epoch: ack.epoch, offset: ack.offset });
    await lt[1].sendText('{"operation":"CHANGE","table":"cars"}');
    assert.deepEqual(Object.keys(await lt[0].recv(5000)), ['operation', 'table']);
    await assertSilent(lt[1], 100);
    // A refused notice: the v1 error reply, to the sender; the message is still acked (no position).
    assert.deepEqual(await lt[0].sendText('[1]'), {});
    const err = await lt[0].recv(5000);
    assert.ok(isError(err));
    assert.equal(err.details, 'expected a JSON object');

    // AFC: the event frame, exactly.
    await publishEvent(server.http('afc'), 'todo-created', { id: 1, title: 'New Todo' }, { apiKey: KEYS.afc });
    assert.deepEqual(await afc.recv(5000), { type: 'todo:created', payload: { id: 1, title: 'New Todo' } });
    assert.equal((await afc.ping()).type, 'pong');
    assert.equal(afc.unacked, 0);

    // Collab: greeting consumed as in v1, presence and edits as v1 shapes.
    assert.match(coA.clientId, /^client_/);
    await coA.joinProject('p-shape');
    await coB.joinProject('p-shape');
    coA.drain();
    const editAck = await coA.sendTaskUpdate('p-shape', { id: 't-1', title: 'T' }, { operationId: 'op-1' });
    assert.equal(editAck.stream, 'project:p-shape');
    const edit = await coB.recvMatch('TASK_UPDATE');
    assert.deepEqual(Object.keys(edit).sort(), ['operationId', 'payload', 'projectId', 'timestamp', 'type', 'userId']);
    assert.deepEqual(edit.payload, { id: 't-1', title: 'T' });
    assert.equal(edit.userId, 'alice');
    await broadcast(server.http('collab'), 'TASKS_REORDERED', 'p-shape', undefined, { apiKey: KEYS.collab });
    for (const c of [coA, coB]) assert.equal((await c.recvMatch('TASKS_REORDERED')).projectId, 'p-shape');
    assert.equal(coB.positions['project:p-shape'].offset, 2);

    // Race (room from the URL) and DCDock (greeting, filter reply).
    assert.deepEqual((await race.recvMatch('subscribed')).data, { sessionId: 'gp-1' });
    await publishUpdate(server.http('race'), 'gp-1', 'lap_update', { lapNumber: 3 }, { apiKey: KEYS.race });
    const lap = await race.recvMatch('lap_update');
    assert.deepEqual(Object.keys(lap), ['type', 'data', 'timestamp']);
    assert.ok('session:gp-1' in race.positions);
    assert.equal((await dock.subscribe('IB')).type, 'subscribed');
    await publishAssignment(server.http('dcdock'), 'assignment_created', {
      assignmentId: 9, userId: 3, userEmail: 'a@b', data: { id: 9, load: { direction: 'IB' } }, apiKey: KEYS.dcdock,
    });
    assert.equal((await dock.recvMatch('assignment_created')).assignment_id, 9);
    assert.ok('assignments' in dock.positions);
  } finally {
    for (const c of all) await c.close();
  }
});

test('afc: a dropped client gets exactly what it missed, once, in order, then live events', async () => {
  const http = server.http('afc');
  const apiKey = KEYS.afc;
  await withProxy(server.ports.afc, async (proxy) => {
    const a = new AfcClient(proxy.ws('/ws'), { backoff: FAST });
    const log = record(a);
    a.start();
    try {
      await a.waitConnected(5000);
      assertV2(a);
      const session = a.session;
      await publishEvent(http, 'job-started', { n: 0 }, { apiKey });
      await a.waitEvent('job:started');

      proxy.hold(); // the reconnection waits until the events are published
      proxy.cut();
      await eventually(() => !a.connected);
      const N = 5;
      for (let n = 1; n <= N; n++) await publishEvent(http, 'job-progressed', { n }, { apiKey });
      const recovered = a.expectEvent('recovered');
      proxy.release();
      const rec = await recovered;
      assert.equal(rec.stream, 'events');
      assert.equal(rec.replayed, N);
      assert.equal(a.connections, 2);
      assert.equal(a.session, session);
      assert.equal(a.sessionResumed, true);
      await publishEvent(http, 'job-finished', { n: 6 }, { apiKey });
      await a.waitEvent('job:finished');
      await assertSilent(a, 200);

      assert.deepEqual(messagesOf(log), [
        { type: 'job:started', payload: { n: 0 } },
        ...[1, 2, 3, 4, 5].map((n) => ({ type: 'job:progressed', payload: { n } })),
        { type: 'job:finished', payload: { n: 6 } },
      ]);
      // The replayed events came before `recovered`, the live one after.
      const kinds = log.filter(([k]) => k !== 'subscribed').map(([k, e]) => (k === 'msg' ? e.payload.n : k));
      assert.deepEqual(kinds, ['session', 0, 'session', 1, 2, 3, 4, 5, 'recovered', 6]);
      assert.deepEqual(log.filter(([k]) => k === 'session').map(([, e]) => e.resumed), [false, true]);
    } finally {
      await a.close();
    }
  });
});

test('laptimes: notices published by another client while away are replayed', async () => {
  const url = server.ws('laptimes');
  const b = new LaptimesClient(url, { backoff: FAST }).start();
  await withProxy(server.ports.laptimes, async (proxy) => {
    const a = new LaptimesClient(proxy.ws('/'), { backoff: FAST });
    const log = record(a);
    a.start();
    try {
      await Promise.all([a.waitConnected(5000), b.waitConnected(5000)]);
      await a.notify('cars'); // a's own notice: not for a, not live and not replayed
      await b.recv(5000);
      proxy.hold();
      proxy.cut();
      await eventually(() => !a.connected);
      const sent = [];
      for (const table of ['times', 'drivers', 'tracks']) sent.push(await b.notify(table));
      const recovered = a.expectEvent('recovered');
      proxy.release();
      assert.equal((await recovered).replayed, 3);
      const live = await b.notify('times');
      assert.deepEqual(await a.recvMatch((m) => m.table === 'times' && m.timestamp === live.timestamp), live);
      assert.deepEqual(messagesOf(log), [...sent, live]);
    } finally {
      await a.close();
    }
  });
  await b.close();
});

test('collab: a re-joined project replays the missed edits (position in JOIN_PROJECT since)', async () => {
  const P = 'p-resume';
  const b = new CollabClient(server.ws('collab', '/ws'), { userId: 'bob', backoff: FAST }).start();
  await withProxy(server.ports.collab, async (proxy) => {
    const a = new CollabClient(proxy.ws('/ws'), { userId: 'alice', backoff: FAST });
    const log = record(a);
    a.start();
    try {
      await a.waitConnected(5000);
      await b.waitConnected(5000);
      await a.joinProject(P);
      await b.joinProject(P);
      await b.sendTaskCreate(P, { id: 't0' });
      await a.recvMatch('TASK_CREATE');
      proxy.hold();
      proxy.cut();
      await eventually(() => !a.connected);
      for (const id of ['t1', 't2', 't3']) await b.sendTaskUpdate(P, { id });
      const recovered = a.expectEvent('recovered');
      proxy.release();
      const rec = await recovered;
      assert.equal(rec.stream, `project:${P}`);
      assert.equal(rec.replayed, 3);
      const edits = messagesOf(log).filter((m) => m.type.startsWith('TASK_'));
      assert.deepEqual(edits.map((m) => [m.type, m.payload.id, m.userId]), [
        ['TASK_CREATE', 't0', 'bob'],
        ['TASK_UPDATE', 't1', 'bob'],
        ['TASK_UPDATE', 't2', 'bob'],
        ['TASK_UPDATE', 't3', 'bob'],
      ]);
    } finally {
      await a.close();
    }
  });
  await b.close();
});

test('not recovered: history trimmed while away (--history-max-entries 2)', async () => {
  const http = trimmed.http('afc');
  const apiKey = KEYS.afc;
  await withProxy(trimmed.ports.afc, async (proxy) => {
    const a = new AfcClient(proxy.ws('/ws'), { backoff: FAST });
    const log = record(a);
    a.start();
    try {
      await a.waitConnected(5000);
      await publishEvent(http, 'x-first', 1, { apiKey });
      await a.waitEvent('x:first');
      proxy.hold();
      proxy.cut();
      await eventually(() => !a.connected);
      for (let n = 1; n <= 5; n++) await publishEvent(http, 'x-missed', n, { apiKey });
      const lost = a.expectEvent('notRecovered');
      proxy.release();
      const e = await lost;
      assert.equal(e.stream, 'events');
      assert.equal(e.reason, 'trimmed');
      assert.equal(a.positions.events.offset, 6); // carries on from the top
      await publishEvent(http, 'x-after', 7, { apiKey });
      await a.waitEvent('x:after');
      assert.deepEqual(messagesOf(log).map((m) => m.type), ['x:first', 'x:after']);
      assert.ok(!log.some(([k]) => k === 'recovered'));
    } finally {
      await a.close();
    }
  });
});

test('acks: a message whose ack was lost is resent with its id and published once', async () => {
  const b = new LaptimesClient(server.ws('laptimes'), { backoff: FAST }).start();
  await withProxy(server.ports.laptimes, async (proxy) => {
    const a = new LaptimesClient(proxy.ws('/'), { backoff: FAST, maxUnacked: 2 }).start();
    try {
      await Promise.all([a.waitConnected(5000), b.waitConnected(5000)]);
      const first = { table: 'cars', operation: 'CHANGE', n: 1 };
      const ack1 = await a.send(first);
      assert.equal(ack1.stream, 'all');
      assert.ok(!ack1.duplicate);
      assert.deepEqual(await b.recv(5000), first);
      assert.equal(b.positions.all.offset, ack1.offset);

      // The server's answers to `a` are lost from now on: the notice is published, the ack is not seen.
      proxy.swallowReplies();
      const second = { table: 'times', operation: 'CHANGE', n: 2 };
      const pending = a.send(second);
      assert.deepEqual(await b.recv(5000), second);
      const published = b.positions.all;
      assert.equal(a.unacked, 1);
      // The buffer of unacked messages is bounded.
      const third = a.send({ table: 'drivers', operation: 'CHANGE', n: 3 });
      await eventually(() => a.unacked === 2);
      await assert.rejects(a.send({ table: 'x', operation: 'CHANGE' }), BufferFull);

      // The connection dies; the client comes back with its session and resends c-2 and c-3.
      proxy.cut();
      const ack2 = await pending;
      assert.equal(a.sessionResumed, true);
      assert.equal(a.connections, 2);
      assert.deepEqual(ack2, { stream: 'all', epoch: published.epoch, offset: published.offset, duplicate: true });
      const ack3 = await third;
      assert.equal(ack3.offset, published.offset + 1);
      assert.equal((await b.recv(5000)).n, 3); // the third was published (once) ...
      await assertSilent(b, 300); // ... and the second not again
      assert.equal(a.unacked, 0);
    } finally {
      await a.close();
    }
  });
  await b.close();
});

test('v1 on request, and a v2 client falls back to v1 on a server without history', async () => {
  // protocol: 'v1' on a v2 server: plain v1 frames both ways, mixed with v2 clients.
  const v1 = new LaptimesClient(server.ws('laptimes'), { backoff: FAST, protocol: 'v1' }).start();
  const v2 = new LaptimesClient(server.ws('laptimes'), { backoff: FAST }).start();
  try {
    await Promise.all([v1.waitConnected(5000), v2.waitConnected(5000)]);
    assert.equal(v1.protocol, 'v1');
    assert.equal(v1.subprotocol, '');
    assert.equal(v1.session, null);
    assert.equal(v2.protocol, 'v2');
    const n1 = { table: 'cars', operation: 'CHANGE' };
    assert.equal(await v1.send(n1), null); // nothing is acked in v1
    assert.deepEqual(await v2.recv(5000), n1);
    const n2 = await v2.notify('tracks');
    assert.deepEqual(await v1.recv(5000), n2);
    await v1.sendFrame('[1]'); // v1 frames are the messages themselves
    assert.equal((await v1.recv(5000)).details, 'expected a JSON object');
    assert.deepEqual(v1.positions, {});
  } finally {
    await v1.close();
    await v2.close();
  }

  // --history-max-entries 0: the server echoes no subprotocol; the v2-default clients speak v1.
  const events = [];
  const a = new LaptimesClient(noHistory.ws('laptimes'), { backoff: FAST, onSession: (e) => events.push(e) }).start();
  const b = new LaptimesClient(noHistory.ws('laptimes'), { backoff: FAST }).start();
  const afc = new AfcClient(noHistory.ws('afc', '/ws'), { backoff: FAST }).start();
  try {
    await Promise.all([a, b, afc].map((c) => c.waitConnected(5000)));
    for (const c of [a, b, afc]) {
      assert.equal(c.requestedProtocol, 'v2');
      assert.equal(c.protocol, 'v1');
      assert.equal(c.subprotocol, '');
      assert.equal(c.session, null);
    }
    const sent = await a.notify('drivers');
    assert.deepEqual(await b.recv(5000), sent);
    assert.equal(await b.send({ table: 'cars', operation: 'CHANGE' }), null);
    assert.equal((await a.recv(5000)).table, 'cars');
    await publishEvent(noHistory.http('afc'), 'todo-created', { id: 2 }, { apiKey: KEYS.afc });
    assert.deepEqual(await afc.recv(5000), { type: 'todo:created', payload: { id: 2 } });
    assert.equal((await afc.ping()).type, 'pong');
    assert.deepEqual(events, []);
    // It reconnects (as v1 again) after a drop.
    a.dropConnection();
    await eventually(() => a.connections === 2 && a.connected);
    assert.equal(a.protocol, 'v1');
  } finally {
    for (const c of [a, b, afc]) await c.close();
  }
});

test('events can be listened to with on() and constructor options', async () => {
  const seen = [];
  const c = new AfcClient(server.ws('afc', '/ws'), {
    backoff: new Backoff({ base: 50, factor: 1, cap: 50 }),
    onSession: (e) => seen.push(['session', e.resumed]),
    onSubscribed: (e) => seen.push(['subscribed', e.stream]),
  });
  const errors = [];
  c.on('error', (e) => errors.push(e.error));
  c.start();
  try {
    await c.waitConnected(5000);
    await eventually(() => seen.length === 2);
    assert.deepEqual(seen, [['session', false], ['subscribed', 'events']]);
    await c.sendFrame('{"sb":"nope"}'); // an envelope the server cannot read
    await eventually(() => errors.length === 1);
    assert.match(errors[0], /sb|msg/);
    assert.throws(() => c.on('nope', () => {}), TypeError);
    assert.throws(() => new AfcClient(server.ws('afc', '/ws'), { protocol: 'v3' }), TypeError);
    await assert.rejects(c.sendText('not json'), TypeError);
  } finally {
    await c.close();
  }
});

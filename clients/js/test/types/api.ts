// The client API as an application uses it, type-checked (tsc -p tsconfig.json, run by
// test/types.test.js) and never run. Lines marked @ts-expect-error must fail to type-check: they
// show what the types refuse.

import {
  AfcClient,
  Backoff,
  CollabClient,
  DcdockClient,
  LaptimesClient,
  RaceClient,
  SUBPROTOCOL,
  type Json,
  type MessageOfType,
} from 'switchboard-clients';
import * as afc from 'switchboard-clients/afc';
import * as collab from 'switchboard-clients/collab';
import * as dcdock from 'switchboard-clients/dcdock';
import * as laptimes from 'switchboard-clients/laptimes';
import * as race from 'switchboard-clients/race';
import * as v2 from 'switchboard-clients/v2';

declare function use(...values: unknown[]): void;

export async function laptimesUsage(): Promise<void> {
  const lt = new LaptimesClient('ws://localhost:3002/', {
    backoff: new Backoff({ base: 100 }),
    onMessage: (m) => {
      if (laptimes.isNotice(m)) use(m.table.toUpperCase(), m.timestamp);
      else use(m.message);
    },
  }).start();
  const sent: laptimes.ChangeNotice = await lt.notify('times', { extra: { by: 'lab-3' } });
  use(sent.table, sent['by']);
  const msg: laptimes.ServerMessage = await lt.recv(1000);
  use(msg);
  // A notice may carry any extra field.
  await lt.send({ table: 'cars', operation: 'CHANGE', by: 'lab-3' });
  // @ts-expect-error a notice needs `operation`
  await lt.send({ table: 'cars' });
  const err = await lt.recvMatch('error');
  use(err.message, err.details);
  await lt.close();
}

export async function afcUsage(): Promise<void> {
  const client = new AfcClient(undefined, { protocol: 'v1', heartbeatInterval: null });
  const ev: afc.Event = await client.waitEvent('todo:created');
  use(ev.type, ev.payload);
  // @ts-expect-error an event type is `<entity>:<action>`
  await client.waitEvent('todo-created');
  for await (const m of client) {
    if (afc.isEvent(m)) use(m.type.split(':'));
    else if (m.type === 'pong') use(m.payload.timestamp);
    else use(m.payload.details); // the error reply: nothing else is left
  }
  await afc.publishEvent('http://localhost:4001', 'todo-created', { id: 1, title: 'New' }, { apiKey: 'k' });
  const h: afc.Health = await afc.health('http://localhost:4001');
  use(h.uptime);
  // @ts-expect-error a client sends only `ping`
  await client.send({ type: 'todo:created', payload: {} });
}

export async function raceUsage(): Promise<void> {
  const r = new RaceClient('ws://localhost:3000/ws', { sessions: ['race-2024'] }).start();
  const sub: race.Subscribed = await r.subscribe('race-2025');
  use(sub.data.sessionId);
  const maybe: race.Subscribed | null = await r.subscribe('race-2026', { wait: false });
  use(maybe);
  const any = await r.recvMatch(race.isUpdate);
  use(any.data);
  const lap = await r.recvMatch('lap_update');
  const same: race.Update = lap;
  use(same.data, lap.timestamp);
  const pending = r.expect((m): m is race.ErrorMessage => m.type === 'error');
  const e: race.ErrorMessage = await pending;
  pending.cancel();
  use(e.data.message);
  await race.publishUpdate('http://localhost:3000', 'race-2024', 'lap_update', { driverId: 'VER' }, { apiKey: 'k' });
  // @ts-expect-error not an update type
  await race.publishUpdate('http://localhost:3000', 'race-2024', 'lap_updated', {}, { apiKey: 'k' });
  // @ts-expect-error clients may not publish updates
  await r.send({ type: 'lap_update', data: {} });
  const update: MessageOfType<race.ServerMessage, 'drs_update'> = {
    type: 'drs_update',
    data: { enabled: true },
    timestamp: '2024-01-01T12:00:05Z',
  };
  use(update);
}

export async function collabUsage(): Promise<void> {
  const c = new CollabClient('ws://localhost:3001/ws', {
    userId: 'user_2abc',
    onRecovered: (ev) => use(ev.replayed + 1),
    onNotRecovered: (ev) => use(ev.reason === 'trimmed'),
  }).start();
  const presence: collab.UserPresence = await c.joinProject('project-123');
  use(presence.payload.activeUsers.map((u) => u.userId), collab.presenceUsers(presence));
  const ack: v2.Ack | null = await c.sendTaskUpdate('project-123', { id: 'task-456', title: 'New' }, { operationId: 'op-1' });
  use(ack?.offset);
  // @ts-expect-error not an edit type
  await c.sendEdit('TASK_EXPLODE', 'project-123', {});
  await c.send({ type: 'SET_USER', userId: 'u' });
  await c.send({ type: 'SET_USER', payload: { userId: 'u' } });
  // @ts-expect-error SET_USER names a user, one way or the other
  await c.send({ type: 'SET_USER' });
  const next = await c.recv();
  if (collab.isUpdate(next)) use(next.projectId, next.userId);
  else if (next.type === 'USER_PRESENCE') use(next.payload.userCount);
  else if (next.type === 'ERROR') use(next.details);
  const r: collab.BroadcastResponse = await collab.broadcast('http://localhost:3001', 'TASKS_REORDERED', 'project-123');
  use(r.clientCount);
  const s: collab.Stats = await collab.stats('http://localhost:3001');
  use(s.projectStats['project-123']?.clients, s.truncated);
}

export async function dcdockUsage(): Promise<void> {
  const d = new DcdockClient('ws://localhost:8000/api/ws', { token: async () => 'jwt', direction: 'IB' }).start();
  const sub: dcdock.Subscribed = await d.subscribe('OB');
  use(sub.filters.direction);
  // @ts-expect-error a direction is IB or OB
  await d.subscribe('INBOUND');
  // @ts-expect-error a board needs a token
  use(new DcdockClient('ws://localhost:8000/api/ws', {}));
  const m = await d.recv();
  if (dcdock.isAssignmentEvent(m)) use(m.action, m.data['load']);
  else if (m.type === 'conflict_detected') use(m.current_version - m.attempted_version);
  await dcdock.publishAssignment('http://localhost:8000', 'assignment_created', {
    assignmentId: 7,
    userId: 3,
    userEmail: 'op@dcdock.com',
    data: { id: 7, load: { direction: 'IB' } },
    apiKey: 'k',
  });
  // @ts-expect-error `action` must match `type`
  await dcdock.publish('http://localhost:8000', { type: 'assignment_created', assignment_id: 7, action: 'DELETE', user_id: 3, user_email: 'a@b', data: {} });
}

export function eventsAndFrames(client: LaptimesClient): void {
  client.on('gap', (e) => use(e.from, e.to, e.stream));
  client.on('session', (e) => use(e.id, e.resumed));
  // @ts-expect-error no such event
  client.on('gaps', () => {});
  const p = client.expectEvent('notRecovered', (e) => e.reason === 'epoch');
  p.cancel();
  use(SUBPROTOCOL === 'switchboard.v2', client.positions['all']?.offset);

  const frame: v2.ServerFrame<laptimes.ServerMessage> = JSON.parse('{}') as v2.ServerFrame<laptimes.ServerMessage>;
  switch (frame.sb) {
    case 'pub':
      use(frame.msg, frame.offset);
      break;
    case 'subscribed':
      if (frame.recovered === true) use(frame.replayed);
      else if (frame.recovered === false) use(frame.reason);
      break;
    case 'ack':
      if (frame.stream !== undefined) use(frame.epoch.length + frame.offset);
      break;
    default:
      use(frame);
  }
  const wrapped: v2.ClientFrame<collab.ClientMessage> = {
    sb: 'msg',
    id: 'c-1',
    since: [{ stream: 'project:p-1', epoch: '5d0c2b7e9a113f40', offset: 54 }],
    msg: { type: 'JOIN_PROJECT', projectId: 'p-1' },
  };
  use(wrapped);
  // @ts-expect-error a client sends only `msg` frames
  const bad: v2.ClientFrame = { sb: 'pub', msg: {} };
  // @ts-expect-error recovered: true comes with `replayed`
  const bad2: v2.SubscribedFrame = { sb: 'subscribed', stream: 'all', recovered: true };
  // @ts-expect-error a reason the server never gives
  const bad3: v2.SubscribedFrame = { sb: 'subscribed', stream: 'all', recovered: false, reason: 'lost' };
  const json: Json = { a: [1, 'b', null, true] };
  use(bad, bad2, bad3, json);
}

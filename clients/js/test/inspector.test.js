// The live inspector page (the admin listener of the real `switchboard` binary) in headless
// Chromium, checked by what a person would see on it: the connection count changes when clients
// connect, their project's room appears (and goes when they leave), the numbers move when they
// publish, a connection's detail names its user and room, and the tail of the room shows a
// publication. A screenshot is kept at target/inspector.png (or $INSPECTOR_SCREENSHOT).
//
// Needs Debian's chromium at /usr/bin/chromium (clients/ensure-chromium.sh installs it with
// apt-get); puppeteer-core drives it and downloads nothing. Without chromium this test fails.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { launchChromium } from './chromium.js';
import { Server, WS, freePort } from './helpers.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const SCREENSHOT = process.env.INSPECTOR_SCREENSHOT || path.join(REPO, 'target', 'inspector.png');
const WAIT = { timeout: 20_000 };

let server;
let adminPort;
let browser;
let profile;
const clients = [];

function listening(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** A raw collab client (protocol v1) that joined `project` as `user`. */
async function member(user, project) {
  const ws = new WS(server.ws('collab', '/ws'));
  clients.push(ws);
  const inbox = [];
  ws.on('message', (data) => inbox.push(JSON.parse(String(data))));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.send(JSON.stringify({ type: 'JOIN_PROJECT', projectId: project, userId: user }));
  const deadline = Date.now() + 5000;
  while (!inbox.some((m) => m.type === 'USER_PRESENCE')) {
    if (Date.now() > deadline) throw new Error(`${user} got no presence: ${JSON.stringify(inbox)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return ws;
}

function closed(ws) {
  return new Promise((resolve) => {
    if (ws.readyState === WS.CLOSED) resolve();
    else {
      ws.once('close', resolve);
      ws.close();
    }
  });
}

before(async () => {
  // The page is opened on loopback without a token: a token from the environment would ask for one.
  delete process.env.SWITCHBOARD_ADMIN_TOKEN;
  adminPort = await freePort();
  server = new Server(['collab', 'laptimes'], ['--admin-bind', `127.0.0.1:${adminPort}`]);
  await server.start();
  const deadline = Date.now() + 10_000;
  while (!(await listening(adminPort))) {
    if (Date.now() > deadline) throw new Error(`the inspector did not listen on ${adminPort}: ${server.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
});

after(async () => {
  for (const ws of clients) ws.terminate();
  await browser?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  await server?.stop();
});

test('the inspector shows connections, rooms, rates, a connection and a tail as they happen', { timeout: 120_000 }, async () => {
  ({ browser, profile } = await launchChromium('switchboard-inspector-chromium-'));
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  const origin = `http://127.0.0.1:${adminPort}`;
  const problems = [];
  const elsewhere = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`${r.status()}: ${r.url()}`);
  });
  page.on('request', (r) => {
    if (!r.url().startsWith(`${origin}/`)) elsewhere.push(r.url());
  });
  page.on('requestfailed', (r) => {
    // A stream the page replaces (another system, another search) is aborted on purpose.
    if (!(r.url().includes('/api/') && r.failure()?.errorText === 'net::ERR_ABORTED')) {
      problems.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`);
    }
  });

  const text = (selector) => page.$eval(selector, (e) => e.textContent.trim());
  const card = (field) => `[data-system="collab"] [data-field="${field}"]`;

  await page.goto(`${origin}/`, { waitUntil: 'load' });
  assert.equal(await page.title(), 'switchboard inspector');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'Live', WAIT);
  await page.waitForSelector(card('connections'), WAIT);
  await page.select('#system', 'collab');
  await page.waitForFunction(
    () => document.getElementById('connections-count').textContent.includes('in collab'),
    WAIT,
  );
  assert.equal(await text(card('connections')), '0');
  assert.equal(await text(card('rooms')), '0');
  assert.equal(await page.$eval('#rooms-empty', (e) => e.hidden), false, 'no rooms yet');
  assert.equal(await text('#tail-status'), 'Off.', 'the tail is off until asked for');

  // Two people join project p-1: the count and the room appear.
  const ada = await member('ada', 'p-1');
  await member('grace', 'p-1');
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === '2', WAIT, card('connections'));
  await page.waitForFunction(
    () => [...document.querySelectorAll('#rooms tbody tr')].some(
      (r) => r.cells[0].textContent === 'project:p-1' && r.cells[1].textContent === '2',
    ),
    WAIT,
  );
  assert.equal(await text(card('rooms')), '1');
  const rows = await page.$$eval('#connections tbody tr', (rs) => rs.map((r) => r.cells[2].textContent));
  assert.deepEqual(rows, ['ada', 'grace'], 'the connections, oldest first, by user');

  // The search narrows the rooms.
  await page.type('#search', 'nothing-like-it');
  await page.waitForFunction(() => document.querySelectorAll('#rooms tbody tr').length === 0, WAIT);
  await page.click('#search', { count: 3 });
  await page.keyboard.press('Backspace');
  await page.type('#search', 'P-1');
  await page.waitForFunction(() => document.querySelectorAll('#rooms tbody tr').length === 1, WAIT);

  // Tail the room from its row, then publish: the tail shows the publication.
  await page.click('#rooms tbody tr[data-room="project:p-1"] button');
  await page.waitForFunction(() => document.getElementById('tail-status').textContent.startsWith('Watching project:p-1'), WAIT);
  const deliveriesBefore = Number((await text(card('deliveries'))).replace(/,/g, ''));
  const edit = { type: 'TASK_UPDATE', projectId: 'p-1', payload: { id: 'task-42', title: 'Ship the inspector' } };
  const publishing = setInterval(() => ada.send(JSON.stringify(edit)), 250);
  try {
    await page.waitForFunction(
      () => [...document.querySelectorAll('#tail-events li')].some((li) => li.textContent.includes('Ship the inspector')),
      WAIT,
    );
    // The numbers move: messages in per second above zero, more deliveries.
    await page.waitForFunction(
      (sel) => Number(document.querySelector(`${sel} [data-value]`).textContent) > 0,
      WAIT,
      card('in-rate'),
    );
    await page.waitForFunction(
      (sel, before) => Number(document.querySelector(sel).textContent.replace(/,/g, '')) > before,
      WAIT,
      card('deliveries'),
      deliveriesBefore,
    );
  } finally {
    clearInterval(publishing);
  }
  const chart = await page.$eval(`${card('in-rate')} polyline`, (p) => p.getAttribute('points') || '');
  assert.ok(chart.split(' ').length >= 2, `the chart draws the rate: ${chart}`);

  // One connection in detail.
  await page.click('#connections tbody tr:first-child button');
  await page.waitForFunction(() => {
    const d = document.getElementById('detail');
    return !d.hidden && d.textContent.includes('ada') && d.textContent.includes('project:p-1');
  }, WAIT);

  mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.ok(existsSync(SCREENSHOT), `no screenshot at ${SCREENSHOT}`);
  assert.ok(statSync(SCREENSHOT).size > 20_000, `the screenshot is ${statSync(SCREENSHOT).size} bytes: blank?`);

  // Everyone leaves: the count goes back to zero and the room goes.
  await Promise.all(clients.map(closed));
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === '0', WAIT, card('connections'));
  await page.waitForFunction(() => document.querySelectorAll('#rooms tbody tr').length === 0, WAIT);
  assert.equal(await text(card('rooms')), '0');
  await page.waitForFunction(() => document.getElementById('detail-fields').textContent.includes('closed'), WAIT);

  // Stopping the tail leaves the room untapped.
  await page.click('#tail-stop');
  assert.equal(await text('#tail-status'), 'Off.');

  assert.deepEqual(elsewhere, [], 'nothing loaded from anywhere but the inspector');
  assert.deepEqual(problems, []);
});

// Browser smoke test: the clients as native ES modules in headless Chromium (no bundler), on the
// browser's own WebSocket, speaking protocol v2 with the real server; and the browser's own
// EventSource reading a system's server-sent-event stream, resuming with Last-Event-ID.
//
// Needs Debian's chromium at /usr/bin/chromium (clients/ensure-chromium.sh installs it with
// apt-get); puppeteer-core drives it and downloads nothing. Without chromium this test fails.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { launchChromium } from './chromium.js';
import { Server, WS } from './helpers.js';

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src');

// The page imports the client module by a relative path, as a browser app without a bundler does.
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>switchboard clients</title>
<script type="module">
  import { LaptimesClient, isNotice } from './src/laptimes.js';
  import { SUBPROTOCOL, defaultWebSocket } from './src/base.js';
  window.sb = { LaptimesClient, isNotice, SUBPROTOCOL, defaultWebSocket };
  window.sbLoaded = true;
</script>
`;

/** A static server on 127.0.0.1 (port 0): the page at `/`, clients/js/src under `/src/`. */
function startStatic(requests) {
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    requests.push(url.pathname);
    if (url.pathname === '/' || url.pathname === '/index.html') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(PAGE);
      return;
    }
    if (url.pathname === '/favicon.ico') {
      res.writeHead(204);
      res.end();
      return;
    }
    const m = /^\/src\/([A-Za-z0-9_-]+\.js)$/.exec(url.pathname);
    if (m && existsSync(path.join(SRC, m[1]))) {
      res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8' });
      res.end(readFileSync(path.join(SRC, m[1])));
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found');
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
}

const requests = [];
let web;
let origin;
let server;
let browser;
let profile;

before(async () => {
  web = await startStatic(requests);
  origin = `http://127.0.0.1:${web.address().port}`;
  // Only the test page's origin may connect to laptimes.
  server = new Server(['laptimes'], ['--laptimes-allowed-origins', origin]);
  await server.start();
});

after(async () => {
  await browser?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  await server?.stop();
  await new Promise((resolve) => (web ? web.close(() => resolve()) : resolve()));
});

test('laptimes clients in headless Chromium speak v2 as native ES modules', async () => {
  ({ browser, profile } = await launchChromium('switchboard-chromium-'));
  const page = await browser.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('requestfailed', (r) => problems.push(`requestfailed: ${r.url()}`));

  await page.goto(`${origin}/`, { waitUntil: 'load' });
  await page.waitForFunction(() => window.sbLoaded === true, { timeout: 10_000 });

  const wsUrl = server.ws('laptimes', '/');
  const result = await page.evaluate(async (url) => {
    const { LaptimesClient, isNotice, SUBPROTOCOL, defaultWebSocket } = window.sb;
    const a = new LaptimesClient(url).start();
    const b = new LaptimesClient(url).start();
    try {
      await Promise.all([a.waitConnected(5000), b.waitConnected(5000)]);
      const got = b.expect(isNotice);
      const ack = await a.send({ table: 'times', operation: 'CHANGE', timestamp: '2025-10-25T12:34:56.789Z' });
      const received = await got;
      return {
        SUBPROTOCOL,
        nativeWebSocket: (await defaultWebSocket()) === window.WebSocket && a._ws instanceof window.WebSocket,
        socketProtocol: a._ws.protocol,
        subprotocols: [a.subprotocol, b.subprotocol],
        protocols: [a.protocol, b.protocol],
        sessions: [a.session, b.session],
        ack,
        received,
        positionB: b.positions.all,
        queuedA: a.drain(),
      };
    } finally {
      await a.close();
      await b.close();
    }
  }, wsUrl);

  assert.equal(result.SUBPROTOCOL, 'switchboard.v2');
  assert.equal(result.nativeWebSocket, true, "the browser's own WebSocket is used");
  assert.equal(result.socketProtocol, 'switchboard.v2');
  assert.deepEqual(result.subprotocols, ['switchboard.v2', 'switchboard.v2']);
  assert.deepEqual(result.protocols, ['v2', 'v2']);
  for (const s of result.sessions) assert.match(s, /^[0-9a-f]{32}$/);
  assert.notEqual(result.sessions[0], result.sessions[1]);
  assert.deepEqual(result.received, { table: 'times', operation: 'CHANGE', timestamp: '2025-10-25T12:34:56.789Z' });
  assert.equal(result.ack.stream, 'all');
  assert.deepEqual(result.positionB, { epoch: result.ack.epoch, offset: result.ack.offset });
  assert.deepEqual(result.queuedA, []); // never its own notice
  // Native modules only: the page, laptimes.js and base.js; never the `ws` package.
  assert.deepEqual([...new Set(requests)].filter((p) => p !== '/favicon.ico').sort(), ['/', '/src/base.js', '/src/laptimes.js']);
  assert.deepEqual(problems, []);
});

test("Chromium's EventSource reads the laptimes stream and resumes with Last-Event-ID", async () => {
  // Its own server: an outbound budget of 4 KiB, so one larger notice closes the stream (4008),
  // as a slow consumer would be, and the browser reconnects on its own.
  const small = new Server(['laptimes'], ['--laptimes-allowed-origins', origin, '--max-queued-bytes', '4096']);
  await small.start();
  const sender = new WS(small.ws('laptimes', '/'));
  try {
    await new Promise((resolve, reject) => {
      sender.once('open', resolve);
      sender.once('error', reject);
    });
    if (!browser) ({ browser, profile } = await launchChromium('switchboard-chromium-'));
    const page = await browser.newPage();
    const problems = [];
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    await page.goto(`${origin}/`, { waitUntil: 'load' });
    // Cross-origin: the page is served from another port, which laptimes allows.
    await page.evaluate((url) => {
      window.got = [];
      window.opens = 0;
      const es = new EventSource(url);
      es.onopen = () => {
        window.opens += 1;
      };
      es.onmessage = (e) => window.got.push({ frame: JSON.parse(e.data), id: e.lastEventId });
      window.es = es;
    }, `${small.http('laptimes')}/sse?sb=2`);
    const until = (fn, arg) => page.waitForFunction(fn, { timeout: 20_000 }, arg);
    const notice = (i, pad = '') =>
      sender.send(JSON.stringify({ table: 'times', operation: 'CHANGE', i, ...(pad ? { pad } : {}) }));
    const pubs = (n) => window.got.filter((g) => g.frame.sb === 'pub').length >= n;

    await until(() => window.got.some((g) => g.frame.sb === 'subscribed'));
    notice(1);
    notice(2);
    await until(pubs, 2);
    // Larger than the whole budget: the stream is closed, and the browser reconnects.
    notice(3, 'x'.repeat(8192));
    notice(4);
    await until(() => window.opens >= 2 && window.got.filter((g) => g.frame.sb === 'subscribed').length >= 2);
    notice(5);
    await until(pubs, 4);
    const got = await page.evaluate(() => {
      window.es.close();
      return window.got;
    });

    const sessions = got.filter((g) => g.frame.sb === 'session');
    assert.equal(sessions.length, 2, JSON.stringify(got));
    assert.equal(sessions[1].frame.session, sessions[0].frame.session);
    assert.equal(sessions[1].frame.resumed, true);
    const session = sessions[0].frame.session;
    // Every notice but the one too large for the budget, once each, in order.
    assert.deepEqual(
      got.filter((g) => g.frame.sb === 'pub').map((g) => g.frame.msg.i),
      [1, 2, 4, 5],
    );
    const resumed = got.filter((g) => g.frame.sb === 'subscribed')[1].frame;
    assert.equal(resumed.recovered, true, JSON.stringify(resumed));
    // The one it could not be given is reported, not silently skipped.
    assert.ok(got.some((g) => g.frame.sb === 'gap'), JSON.stringify(got));
    // Each pub event's id is the session and the stream's position.
    for (const g of got.filter((g) => g.frame.sb === 'pub')) {
      assert.equal(g.id, `${session}.all~${g.frame.epoch}~${g.frame.offset}`);
    }
    assert.deepEqual(problems, []);
    await page.close();
  } finally {
    sender.close();
    await small.stop();
  }
});

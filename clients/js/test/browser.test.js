// Browser smoke test: the clients as native ES modules in headless Chromium (no bundler), on the
// browser's own WebSocket, speaking protocol v2 with the real server.
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
import { Server } from './helpers.js';

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

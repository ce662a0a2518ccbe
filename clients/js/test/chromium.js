// Debian's chromium, headless, for the browser tests (installed by clients/ensure-chromium.sh with
// apt-get; puppeteer-core drives it and downloads nothing). Without chromium a test fails.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import puppeteer from 'puppeteer-core';

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

// Start headless chromium with a fresh profile (under a temporary directory named `prefix`...):
// `{ browser, profile }`; the caller closes the browser and removes the profile.
export async function launchChromium(prefix) {
  assert.ok(
    existsSync(CHROMIUM),
    `chromium is not installed at ${CHROMIUM}: run clients/ensure-chromium.sh ` +
      '(apt-get install -y --no-install-recommends chromium); this test needs it',
  );
  const profile = mkdtempSync(path.join(tmpdir(), prefix));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    // The flags keep chromium off the network this machine does not have.
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--user-data-dir=${profile}`,
    ],
  });
  return { browser, profile };
}

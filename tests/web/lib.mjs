// Shared by the browser scenarios: Debian's Chromium through playwright-core, one browser
// context per user, sign-in through the page, screenshots of every page on failure, and the
// line protocol with the Rust test that owns the natter process (`@@<command>` out, one
// line back on stdin).

import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

export const URL_ = process.env.NATTER_WEB_URL;
const SHOTS = process.env.NATTER_WEB_SCREENSHOTS || 'target/web-screenshots';
const WAIT_MS = Number(process.env.NATTER_WEB_WAIT_MS || 20_000);

// Without the background-networking flags Chromium keeps dialing Google, which this
// machine's closed network refuses. Playwright gives each launch a fresh user-data-dir.
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const pages = [];
const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();

/** Asks the Rust test to do something (`kill`, `restart`) and waits until it is done. */
export async function harness(command) {
  console.log(`@@${command}`);
  const { value, done } = await lines.next();
  if (done || value.trim() !== 'ok') throw new Error(`harness did not ${command}: ${value}`);
}

/** A user in a browser context of their own, signed in with a dev token and online. */
export async function user(browser, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('console', (m) => m.type() === 'error' && console.log(`[${name} console] ${m.text()}`));
  page.on('pageerror', (e) => console.log(`[${name} pageerror] ${e.message}`));
  pages.push({ name, page });
  await page.goto(URL_);
  await page.fill('#signin-user', name);
  await page.click('#signin-dev');
  await online(page);
  return page;
}

export const online = (page) => page.waitForSelector('#status[data-state="online"]');

export async function openChat(page, peer) {
  await page.fill('#new-chat-user', peer);
  await page.press('#new-chat-user', 'Enter');
  await page.waitForSelector('#chat:not([hidden])');
}

export async function openConversation(page, id) {
  await page.click(`#conversations li[data-conversation="${id}"]`);
  await page.waitForSelector(`#conversations li.open[data-conversation="${id}"]`);
}

export async function say(page, text) {
  await page.fill('#composer-text', text);
  await page.press('#composer-text', 'Enter');
  // SENT: the message has its permanent id.
  await page.waitForSelector(`#messages li.own:has-text("${text}") .tick:not([data-state="pending"])`);
}

export const sees = (page, text) => page.waitForSelector(`#messages li.message:has-text("${text}")`);

/** Runs a scenario; exits 0 when it passes, 1 (with screenshots) when it fails. */
export async function scenario(name, body) {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: FLAGS });
  let failed = null;
  try {
    await body(browser);
  } catch (err) {
    failed = err;
  }
  if (failed) {
    const dir = join(SHOTS, name);
    mkdirSync(dir, { recursive: true });
    for (const { name: who, page } of pages) {
      await page.screenshot({ path: join(dir, `${who}.png`), fullPage: true }).catch(() => {});
    }
    console.error(`FAILED ${name}: ${failed.stack || failed}`);
    console.error(`screenshots: ${dir}`);
  } else {
    console.log(`passed ${name}`);
  }
  await browser.close();
  stdin.close();
  process.exit(failed ? 1 : 0);
}

// Killing the server shows "reconnecting…"; after the restart the pages reconnect by
// themselves and a message sent afterwards arrives.
import { scenario, user, openChat, say, sees, harness } from './lib.mjs';

await scenario('restart', async (browser) => {
  const alice = await user(browser, 'alice');
  const bob = await user(browser, 'bob');
  await openChat(alice, 'bob');
  await say(alice, 'before the crash');
  await openChat(bob, 'alice');
  await sees(bob, 'before the crash');

  await harness('kill');
  for (const page of [alice, bob]) {
    await page.waitForSelector('#status[data-state="reconnecting"]:has-text("reconnecting")');
  }
  await harness('restart');
  // Backoff: up to 1+2+4+8 s of waiting after a restart of a few seconds.
  for (const page of [alice, bob]) {
    await page.waitForSelector('#status[data-state="online"]', { timeout: 45_000 });
  }

  await say(alice, 'after the restart');
  await sees(bob, 'after the restart');
  await say(bob, 'welcome back');
  await sees(alice, 'welcome back');
  // History from before the crash is still there.
  await sees(bob, 'before the crash');
});

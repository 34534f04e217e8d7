// A reload keeps the session, the open conversation and its history.
import { scenario, user, online, openChat, say, sees } from './lib.mjs';

await scenario('reload', async (browser) => {
  const alice = await user(browser, 'alice');
  const bob = await user(browser, 'bob');
  await openChat(alice, 'bob');
  for (let i = 1; i <= 3; i++) await say(alice, `before reload ${i}`);
  await openChat(bob, 'alice');
  await sees(bob, 'before reload 3');
  await say(bob, 'reply before reload');

  for (const page of [alice, bob]) {
    await page.reload();
    await online(page);
    await page.waitForSelector('#chat-title:has-text("' + (page === alice ? 'bob' : 'alice') + '")');
    for (let i = 1; i <= 3; i++) await sees(page, `before reload ${i}`);
    await sees(page, 'reply before reload');
  }
  // The ticks come back with the history: bob read alice's messages before the reload, and
  // alice's open chat read bob's reply.
  for (let i = 1; i <= 3; i++) {
    await alice.waitForSelector(`#messages li.own:has-text("before reload ${i}") .tick[data-state="seen"]`);
  }
  await bob.waitForSelector('#messages li.own:has-text("reply before reload") .tick[data-state="seen"]');
  // Live traffic still flows after the reload (resumed from the stored cursor).
  await say(alice, 'after reload');
  await sees(bob, 'after reload');
});

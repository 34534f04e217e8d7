// A group of three: everyone sees everyone's messages.
import { scenario, user, openConversation, say, sees } from './lib.mjs';

await scenario('group', async (browser) => {
  const alice = await user(browser, 'alice');
  const bob = await user(browser, 'bob');
  const carol = await user(browser, 'carol');

  await alice.fill('#new-group-name', 'Team');
  await alice.fill('#new-group-members', 'bob, carol');
  await alice.click('#new-group button');
  await alice.waitForSelector('#chat-title:has-text("Team")');
  const id = await alice.evaluate(() => decodeURIComponent(location.hash.slice(1)));
  if (!id.startsWith('g:')) throw new Error(`expected a group conversation, got ${id}`);
  await say(alice, 'hi team');

  for (const [page, text] of [
    [bob, 'bob here'],
    [carol, 'carol here'],
  ]) {
    await page.waitForSelector(`#conversations li[data-conversation="${id}"]:has-text("Team")`);
    await openConversation(page, id);
    await sees(page, 'hi team');
    await say(page, text);
  }
  for (const page of [alice, bob, carol]) {
    for (const text of ['hi team', 'bob here', 'carol here']) await sees(page, text);
  }
  // Both others read it.
  await alice.waitForSelector('#messages li.own:has-text("hi team") .tick[data-state="seen"]');
});

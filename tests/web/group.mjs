// A group of three: only contacts may be added, then everyone sees everyone's messages.
import { scenario, user, openChat, openConversation, say, sees } from './lib.mjs';

await scenario('group', async (browser) => {
  const alice = await user(browser, 'alice');
  const bob = await user(browser, 'bob');
  const carol = await user(browser, 'carol');

  const create = async () => {
    await alice.fill('#new-group-name', 'Team');
    await alice.fill('#new-group-members', 'bob, carol');
    await alice.click('#new-group button');
  };
  // Only contacts may add a user to a group: alice has not exchanged a message with them.
  await create();
  await alice.waitForSelector('#app-error:has-text("bob and carol can be added only by")');

  // They write to her; once the server has stored that (a moment), she may add them.
  for (const page of [bob, carol]) {
    await openChat(page, 'alice');
    await say(page, 'hi alice');
  }
  for (const peer of ['bob', 'carol']) {
    await alice.waitForSelector(`#conversations li[data-conversation="dm:alice:${peer}"]`);
  }
  for (let tries = 0; ; tries++) {
    await alice.evaluate(() => (document.getElementById('app-error').textContent = ''));
    await create();
    const done = await Promise.race([
      alice.waitForSelector('#chat-title:has-text("Team")').then(() => true),
      alice.waitForSelector('#app-error:has-text("can be added only by")').then(() => false),
    ]);
    if (done) break;
    if (tries >= 20) throw new Error('alice never became a contact of bob and carol');
    await alice.waitForTimeout(100 * (tries + 1)); // backoff between attempts
  }
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

// Scrolling back: a conversation longer than one history page loads its newest messages,
// and the older ones arrive when bob asks for them.
import { scenario, user, openChat, openConversation, say, sees } from './lib.mjs';

const COUNT = 60;

await scenario('scroll_back', async (browser) => {
  const alice = await user(browser, 'alice');
  await openChat(alice, 'bob');
  for (let i = 1; i <= COUNT; i++) await say(alice, `line ${i} of ${COUNT}`);

  // bob signs in afterwards: everything comes from history, newest page first.
  const bob = await user(browser, 'bob');
  await openConversation(bob, 'dm:alice:bob');
  await sees(bob, `line ${COUNT} of ${COUNT}`);
  const first = `#messages li.message:has-text("line 1 of ${COUNT}")`;
  if (await bob.locator(first).count() !== 0) throw new Error('the first page holds everything');
  // The button sits at the top of the scrolled list: a click that scrolls it into view
  // reaches the top, which loads the older page by itself and hides the button before the
  // click lands. Press it where it is.
  await bob.locator('#older').waitFor({ state: 'visible' });
  await bob.locator('#older').dispatchEvent('click');
  await sees(bob, `line 1 of ${COUNT}`);
  const shown = await bob.locator('#messages li.message').count();
  if (shown !== COUNT) throw new Error(`${shown} messages shown, expected ${COUNT}`);
});

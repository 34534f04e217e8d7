// bob sees alice's message; alice's tick goes SENT → DELIVERED → SEEN once bob opens the chat;
// typing, a reply, an edit, a delete for everyone, a reaction and a file.
import fs from 'node:fs/promises';
import { scenario, user, openChat, openConversation, say, sees } from './lib.mjs';

await scenario('one_to_one', async (browser) => {
  const alice = await user(browser, 'alice');
  const bob = await user(browser, 'bob');

  await openChat(alice, 'bob');
  await say(alice, 'hi bob');

  // bob has the conversation in his list, unread, with the last message.
  const row = '#conversations li[data-conversation="dm:alice:bob"]';
  await bob.waitForSelector(`${row}:has-text("hi bob") .unread`);
  // bob's page acked it: DELIVERED, not yet SEEN.
  await alice.waitForSelector('#messages li.own:has-text("hi bob") .tick[data-state="delivered"]');

  await openConversation(bob, 'dm:alice:bob');
  await sees(bob, 'hi bob');
  await alice.waitForSelector('#messages li.own:has-text("hi bob") .tick[data-state="seen"]');
  await bob.waitForSelector(`${row}:not(:has(.unread))`);

  // And back, with bob's typing shown to alice first.
  await bob.type('#composer-text', 'hel');
  await alice.waitForSelector('#typing:has-text("bob is typing")');
  await bob.fill('#composer-text', '');
  await say(bob, 'hello alice');
  await sees(alice, 'hello alice');
  // Their message ends "is typing" at once, not when the indicator would have expired.
  await alice.waitForSelector('#typing:not(:has-text("bob is typing"))', { timeout: 1000 });
  await bob.waitForSelector('#messages li.own:has-text("hello alice") .tick[data-state="seen"]');
  // bob answers alice's first message: both see the quote above his reply.
  await bob.click('#messages li.message:has-text("hi bob") button.reply');
  await bob.waitForSelector('#replying:has-text("Replying to alice: hi bob")');
  await say(bob, 'that was quick');
  const quoted = '#messages li.message:has-text("that was quick") blockquote.quote:has-text("alice: hi bob")';
  await bob.waitForSelector(quoted);
  await alice.waitForSelector(quoted);
  // alice edits her first message: both see the new text, marked edited.
  await alice.click('#messages li.own:has-text("hi bob") button.edit');
  await alice.waitForSelector('#editing:not([hidden])');
  await alice.fill('#composer-text', 'hi bob, edited');
  await alice.press('#composer-text', 'Enter');
  const edited = '#messages li.message:has-text("hi bob, edited") .edited';
  await alice.waitForSelector(edited);
  await bob.waitForSelector(edited);
  // bob deletes his reply for everyone: both see it gone, and so does a reload.
  await bob.click('#messages li.own:has-text("that was quick") button.delete');
  const gone = '#messages li.deleted:has-text("message deleted")';
  await bob.waitForSelector(gone);
  await alice.waitForSelector(gone);
  await alice.waitForSelector('#messages li:has-text("that was quick")', { state: 'detached' });
  // bob reacts 👍 to alice's message, then changes it to ❤️: alice sees one reaction, his.
  const hers = '#messages li.message:has-text("hi bob, edited")';
  await bob.click(`${hers} button.react[data-emoji="👍"]`);
  await alice.waitForSelector(`${hers} .reaction:has-text("👍 1")`);
  await bob.click(`${hers} button.react[data-emoji="❤️"]`);
  await alice.waitForSelector(`${hers} .reaction:has-text("❤️ 1")`);
  await alice.waitForSelector(`${hers} .reaction:has-text("👍")`, { state: 'detached' });
  await bob.waitForSelector(`${hers} .reaction.mine:has-text("❤️ 1")`);
  await alice.reload();
  await alice.waitForSelector(gone);
  await alice.waitForSelector(edited);
  await alice.waitForSelector(`${hers} .reaction:not(.mine):has-text("❤️ 1")`);
  // alice sends a file; bob downloads exactly what she sent.
  const content = 'natter attachment '.repeat(20_000);
  await alice.setInputFiles('#attach', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from(content) });
  const link = '#messages li.message a.attachment:has-text("notes.txt")';
  await bob.waitForSelector(link);
  const [download] = await Promise.all([bob.waitForEvent('download'), bob.click(link)]);
  const saved = await fs.readFile(await download.path(), 'utf8');
  if (saved !== content) throw new Error(`downloaded ${saved.length} bytes, not the ${content.length} sent`);
  if (download.suggestedFilename() !== 'notes.txt') throw new Error(download.suggestedFilename());
  // Presence of the 1:1 peer.
  await alice.waitForSelector('#chat-presence[data-online="true"]');
});

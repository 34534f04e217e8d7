// app.js: wires the page together — sign-in, the connection's frames into the store, the
// store into the UI, and the user's actions into frames (receipts, typing, history, groups).

import { Connection, newId } from './protocol.js';
import * as storage from './store.js';
import { Store, dmId } from './store.js';
import * as ui from './ui.js';

const TYPING_EVERY_MS = 3_000;
const TYPING_SHOWN_MS = 5_000;
const HISTORY_PAGE = 50;

const $ = (id) => document.getElementById(id);
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;

let conn = null;
let store = null;
// Presence is only granted for users we exchanged a message with, and the server may learn
// of the exchange a moment after we do: a user counts as watched once their `presence`
// frame arrives, and is asked for again (not more than every few seconds) until then.
let watched = new Set();
let asked = new Map(); // user -> when we last asked
const PRESENCE_ASK_AGAIN_MS = 5_000;
const PRESENCE_RETRIES = 3;
let lastTyping = 0;

// ---- sign-in ----

async function devToken(user) {
  const res = await fetch('/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user }),
  });
  if (res.status === 404) throw new Error('this server gives no dev tokens: paste a token');
  if (!res.ok) throw new Error(await res.text());
  return (await res.json()).token;
}

function tokenExpired(token) {
  try {
    const exp = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).exp;
    return exp * 1000 < Date.now();
  } catch {
    return true;
  }
}

$('signin-dev-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const user = $('signin-user').value.trim();
  try {
    signIn({ user, token: await devToken(user), dev: true });
  } catch (err) {
    ui.showSignIn(err.message);
  }
});

$('signin-token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = $('signin-token').value.trim();
  const user = storage.tokenUser(token);
  if (!user) return ui.showSignIn('that is not a natter token');
  signIn({ user, token, dev: false });
});

$('signout').addEventListener('click', () => {
  conn?.stop();
  conn = null;
  storage.saveSession(null);
  location.hash = '';
  ui.showSignIn();
});

function signIn(session) {
  storage.saveSession(session);
  start(session);
}

function start(session) {
  store = new Store(session.user);
  store.addEventListener('change', render);
  ui.showApp(session.user);
  conn = new Connection({
    url: wsUrl,
    token: async () => {
      const s = storage.loadSession();
      if (!s) return null;
      if (tokenExpired(s.token)) {
        if (!s.dev) return null;
        s.token = await devToken(s.user).catch(() => s.token);
        storage.saveSession(s);
      }
      return s.token;
    },
    loadCursor: () => storage.loadCursor(session.user),
    saveCursor: (c) => storage.saveCursor(session.user, c),
  });
  conn.addEventListener('status', (e) => {
    ui.showStatus(e.detail);
    if (e.detail.state === 'stopped' && e.detail.reason === 'no token') ui.showSignIn('sign in again');
  });
  conn.addEventListener('welcome', () => {
    watched = new Set();
    asked = new Map();
  });
  conn.addEventListener('frame', (e) => onFrame(e.detail));
  openFromHash();
  conn.start();
}

// ---- frames from the server ----

function onFrame(f) {
  switch (f.type) {
    case 'message':
      onMessage(f);
      break;
    case 'sent': {
      // Our own edit or delete: this device gets `sent`, not the event, so it applies it.
      const change = pendingChanges.get(f.cid);
      if (change) {
        pendingChanges.delete(f.cid);
        store.applyChange(store.conversation(f.conversation), change.change, change.body, f.ts, store.user);
        break;
      }
      store.confirm(f);
      const c = store.conversation(f.conversation);
      if (c.kind === 'dm') watchPresence([c.peer]);
      break;
    }
    case 'delivered': {
      store.conversation(f.conversation).delivered.add(f.id);
      store.changed();
      break;
    }
    case 'seen': {
      const c = store.conversation(f.conversation);
      if (f.up_to > c.seenUpTo) c.seenUpTo = f.up_to;
      store.changed();
      break;
    }
    case 'typing': {
      const c = store.conversation(f.conversation);
      c.typing = { by: f.by, until: Date.now() + TYPING_SHOWN_MS };
      setTimeout(() => store.changed(), TYPING_SHOWN_MS + 50);
      store.changed();
      break;
    }
    case 'presence':
      watched.add(f.user);
      store.online.set(f.user, { online: f.online, last_seen: f.last_seen });
      store.changed();
      break;
    case 'synced':
      resync(f).catch((err) => ui.showError(`could not refresh: ${err.message}`));
      break;
    case 'error':
      if (f.cid) pendingChanges.delete(f.cid);
      if (!f.qid && f.code !== 1004) ui.showError(`${f.reason} (${f.code})`);
      break;
  }
}

function onMessage(m) {
  const own = m.from === store.user;
  if (!own) conn.send({ type: 'ack', conversation: m.conversation, id: m.id });
  const c = store.conversation(m.conversation);
  // A message from who was typing ends their typing, as every chat app shows it.
  if (c.typing && c.typing.by === m.from) c.typing = null;
  if (!store.addMessage(m)) return;
  if (!own && !isVisible(c)) c.unread += 1;
  if (c.kind === 'group' && !c.name) nameGroup(c);
  if (c.kind === 'dm') watchPresence([c.peer]);
  markRead();
}

/** After a (re)connect: refresh the list and refetch what the replay did not bring. */
async function resync(synced) {
  await loadConversations();
  const refetch = [...store.conversations.values()].filter(
    (c) => c.loaded && (!synced.recovered || (synced.history || []).includes(c.id)),
  );
  for (const c of refetch) await fetchNewer(c);
  const open = store.openId && store.conversations.get(store.openId);
  if (open && !open.loaded) await fetchNewest(open);
  markRead();
}

async function loadConversations() {
  const [list, groups] = await Promise.all([conn.query({ type: 'conversations', limit: 100 }), myGroups()]);
  for (const g of groups) store.conversation(g.conversation).name = g.name;
  for (const e of list.conversations) {
    const c = store.conversation(e.conversation);
    if (!c.last || e.last_id >= c.last.id) {
      c.last = { id: e.last_id, ts: e.last_ts, from: e.last_from, preview: e.preview, deleted: !!e.deleted };
    }
    c.unread = isVisible(c) ? 0 : e.unread;
  }
  watchPresence([...store.conversations.values()].filter((c) => c.kind === 'dm' && c.last).map((c) => c.peer));
  store.changed();
}

/** Every group of the user, page by page (`mine` answers up to 200 at a time). */
async function myGroups() {
  const groups = [];
  for (let after; ; ) {
    const page = await conn.query({ type: 'group', op: 'mine', ...(after && { after }) });
    groups.push(...page.groups);
    if (!page.more || page.groups.length === 0) return groups;
    after = page.groups[page.groups.length - 1].group;
  }
}

async function nameGroup(c) {
  c.name = '…';
  try {
    c.name = (await conn.query({ type: 'group', op: 'info', group: c.group })).group.name;
  } catch {
    c.name = null;
  }
  store.changed();
}

function watchPresence(users, retries = PRESENCE_RETRIES) {
  if (!conn || !store) return; // signed out meanwhile
  const now = Date.now();
  const fresh = [...new Set(users)].filter(
    (u) => u && u !== store.user && !watched.has(u) && !(now - (asked.get(u) ?? -Infinity) < PRESENCE_ASK_AGAIN_MS),
  );
  if (!fresh.length || watched.size + fresh.length > 256) return;
  if (conn.send({ type: 'presence', users: fresh })) fresh.forEach((u) => asked.set(u, now));
  // Refused because the server has not stored our exchange yet: ask again by ourselves, a
  // few times, rather than waiting for the next message to remind us.
  if (retries > 0) setTimeout(() => watchPresence(fresh, retries - 1), PRESENCE_ASK_AGAIN_MS + 100);
}

// ---- history ----

async function fetchNewest(c) {
  const page = await conn.query({ type: 'history', conversation: c.id, limit: HISTORY_PAGE });
  page.messages.forEach((m) => store.addMessage(m));
  c.loaded = true;
  c.more = page.more;
  store.changed();
}

async function fetchOlder(c) {
  if (c.fetchingOlder) return;
  const before = store.oldestId(c);
  if (!before) return fetchNewest(c);
  c.fetchingOlder = true;
  try {
    const page = await conn.query({ type: 'history', conversation: c.id, before, limit: HISTORY_PAGE });
    page.messages.forEach((m) => store.addMessage(m));
    c.more = page.more;
  } finally {
    c.fetchingOlder = false;
    store.changed();
  }
}

async function fetchNewer(c) {
  for (;;) {
    const after = store.newestId(c);
    if (!after) return fetchNewest(c);
    const page = await conn.query({ type: 'history', conversation: c.id, after, limit: HISTORY_PAGE });
    page.messages.forEach((m) => store.addMessage(m));
    if (!page.more || !page.messages.length) return;
  }
}

// ---- the open conversation ----

function isVisible(c) {
  return store.openId === c.id && document.visibilityState === 'visible';
}

/** Sends `read` for the open conversation when the user can see it. */
function markRead() {
  const c = store.openId && store.conversations.get(store.openId);
  if (!c || !isVisible(c)) return;
  const upTo = store.unreadUpTo(c);
  c.unread = 0;
  if (upTo && conn.send({ type: 'read', conversation: c.id, up_to: upTo })) c.readSent = upTo;
  store.changed();
}

function open(id) {
  store.openId = id;
  const c = store.conversation(id);
  if (location.hash !== `#${id}`) history.replaceState(null, '', `#${id}`);
  if (!c.loaded && conn.online) fetchNewest(c).then(markRead, (err) => ui.showError(err.message));
  if (c.kind === 'dm' && c.last) watchPresence([c.peer]);
  if (c.kind === 'group' && !c.name && conn.online) nameGroup(c);
  markRead();
  store.changed();
  $('composer-text').focus();
}

function openFromHash() {
  const id = decodeURIComponent(location.hash.slice(1));
  if (/^(dm:[A-Za-z0-9_-]+:[A-Za-z0-9_-]+|g:[A-Za-z0-9_-]+)$/.test(id)) open(id);
}

$('conversations').addEventListener('click', (e) => {
  const li = e.target.closest('li[data-conversation]');
  if (li) open(li.dataset.conversation);
});

$('new-chat').addEventListener('submit', (e) => {
  e.preventDefault();
  const peer = $('new-chat-user').value.trim();
  $('new-chat-user').value = '';
  open(dmId(store.user, peer));
});

$('new-group').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = $('new-group-name').value.trim();
  const members = $('new-group-members')
    .value.split(/[\s,]+/)
    .filter(Boolean);
  try {
    const answer = await conn.query({ type: 'group', op: 'create', name, members });
    $('new-group-name').value = '';
    $('new-group-members').value = '';
    store.conversation(answer.group.conversation).name = answer.group.name;
    open(answer.group.conversation);
  } catch (err) {
    ui.showError(`could not create the group: ${err.message}`);
  }
});

// The message the next send answers ({id, from, preview}), chosen with its ↩ button; or the
// one it replaces ({id, conversation}), chosen with ✎.
let replyTo = null;
let editing = null;
// Our edits and deletes waiting for `sent`, by cid: {change, body}.
const pendingChanges = new Map();

function setReplyTo(quote) {
  replyTo = quote;
  if (quote) setEditing(null);
  $('replying').hidden = !quote;
  $('replying-text').textContent = quote ? `Replying to ${quote.from}: ${quote.preview}` : '';
  if (quote) $('composer-text').focus();
}

function setEditing(message) {
  editing = message;
  if (message) setReplyTo(null);
  $('editing').hidden = !message;
  if (message) {
    $('composer-text').value = message.body;
    $('composer-text').focus();
  }
}

/** Sends an edit or delete; this device applies it when `sent` arrives. */
function sendChange(c, change, body = '') {
  const cid = newId('c');
  const frame = { type: change.kind, conversation: c.id, cid, id: change.id };
  if (change.kind === 'edit') frame.body = body;
  if (change.kind === 'react') frame.emoji = change.emoji;
  pendingChanges.set(cid, { change, body });
  conn.sendMessage(frame);
}

$('messages').addEventListener('click', (e) => {
  const button = e.target.closest('button.reply, button.edit, button.delete, button.react, button.reaction');
  const c = button && store.openId && store.conversations.get(store.openId);
  const m = c && c.messages.get(button.dataset.id);
  if (!m) return;
  if (button.classList.contains('react') || button.classList.contains('reaction')) {
    // One reaction per user: it replaces ours; our own again (or its chip) removes it.
    const mine = (m.reactions || []).find((r) => r.mine)?.emoji || '';
    const emoji = button.dataset.emoji === mine ? '' : button.dataset.emoji;
    return sendChange(c, { kind: 'react', id: m.id, emoji, replaces: mine });
  }
  if (button.classList.contains('edit')) return setEditing({ conversation: c.id, id: m.id, body: m.body });
  if (button.classList.contains('delete')) return sendChange(c, { kind: 'delete', id: m.id });
  setReplyTo({ conversation: c.id, id: m.id, from: m.from, preview: [...(m.body || '')].slice(0, 100).join('') });
});
$('replying-cancel').addEventListener('click', () => setReplyTo(null));
$('editing-cancel').addEventListener('click', () => {
  setEditing(null);
  $('composer-text').value = '';
});

$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  const c = store.openId && store.conversations.get(store.openId);
  const body = $('composer-text').value;
  if (!c || !body) return;
  $('composer-text').value = '';
  if (editing && editing.conversation === c.id) {
    const id = editing.id;
    setEditing(null);
    return sendChange(c, { kind: 'edit', id }, body);
  }
  setEditing(null);
  const frame = { type: 'send', cid: newId('c'), body };
  if (c.kind === 'dm') frame.to = c.peer;
  else frame.group = c.group;
  const reply = replyTo && replyTo.conversation === c.id ? replyTo : null;
  if (reply) frame.reply_to = reply.id;
  setReplyTo(null);
  const pending = { conversation: c.id, cid: frame.cid, from: store.user, body, ts: Date.now() };
  if (reply) pending.reply = { id: reply.id, from: reply.from, preview: reply.preview };
  store.addMessage(pending, { pending: true });
  conn.sendMessage(frame);
});

// ---- attachments ----

/** The token of the signed-in session, for the attachment endpoints. */
const bearer = () => ({ authorization: `Bearer ${storage.loadSession()?.token}` });

// A file is uploaded for the open conversation (streamed by the browser), then sent in a
// message whose text is what the composer holds, or the file's name.
$('attach').addEventListener('change', async () => {
  const c = store.openId && store.conversations.get(store.openId);
  const file = $('attach').files[0];
  $('attach').value = '';
  if (!c || !file) return;
  const query = new URLSearchParams({ conversation: c.id, name: file.name });
  try {
    const res = await fetch(`/v1/attachments?${query}`, {
      method: 'POST',
      headers: { ...bearer(), 'content-type': file.type || 'application/octet-stream' },
      body: file,
    });
    if (res.status !== 201) throw new Error(await res.text());
    const attachment = await res.json();
    const body = $('composer-text').value || file.name;
    $('composer-text').value = '';
    const frame = { type: 'send', cid: newId('c'), body, attachment: attachment.id };
    if (c.kind === 'dm') frame.to = c.peer;
    else frame.group = c.group;
    store.addMessage({ conversation: c.id, cid: frame.cid, from: store.user, body, ts: Date.now(), attachment }, { pending: true });
    conn.sendMessage(frame);
  } catch (err) {
    ui.showError(`could not send the file: ${err.message}`);
  }
});

// Downloads carry the token in a header, so the file comes through fetch and is saved from
// memory on the browser's side.
$('messages').addEventListener('click', async (e) => {
  const link = e.target.closest('a.attachment');
  if (!link) return;
  e.preventDefault();
  try {
    const res = await fetch(`/v1/attachments/${link.dataset.attachment}`, { headers: bearer() });
    if (!res.ok) throw new Error(await res.text());
    const url = URL.createObjectURL(await res.blob());
    const a = Object.assign(document.createElement('a'), { href: url, download: link.dataset.name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    ui.showError(`could not download the file: ${err.message}`);
  }
});

$('composer-text').addEventListener('input', () => {
  const c = store.openId;
  if (!c || Date.now() - lastTyping < TYPING_EVERY_MS) return;
  if (conn.send({ type: 'typing', conversation: c })) lastTyping = Date.now();
});

$('older').addEventListener('click', () => {
  const c = store.conversations.get(store.openId);
  if (c) fetchOlder(c).catch((err) => ui.showError(err.message));
});

$('scroller').addEventListener('scroll', () => {
  const c = store?.conversations.get(store.openId);
  if (c && c.more && $('scroller').scrollTop === 0) fetchOlder(c).catch(() => {});
});

document.addEventListener('visibilitychange', () => store && markRead());
window.addEventListener('hashchange', () => store && openFromHash());

function render() {
  ui.renderConversations(store);
  ui.renderChat(store);
}

// ---- boot ----

const session = storage.loadSession();
if (session) start(session);
else ui.showSignIn();

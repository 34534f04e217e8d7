// store.js: what the client knows — the signed-in session and per-device cursor (in
// localStorage), and the conversations with their messages, receipts, presence and typing
// (in memory). It changes state and says so with a `change` event; it sends nothing.

const SESSION_KEY = 'natter.session';
const DEVICE_KEY = 'natter.device';

export function loadSession() {
  try {
    return JSON.parse(localStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}

export function saveSession(session) {
  if (session) localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else localStorage.removeItem(SESSION_KEY);
}

/** This browser profile's device id, made once. */
export function deviceId() {
  let id = localStorage.getItem(DEVICE_KEY);
  if (!id) {
    id = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
    localStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}

const cursorKey = (user) => `natter.cursor.${user}.${deviceId()}`;
export const loadCursor = (user) => localStorage.getItem(cursorKey(user)) || '';
export const saveCursor = (user, cursor) => localStorage.setItem(cursorKey(user), cursor);

/** The `sub` of a JWT, read without checking it (the gateway checks). */
export function tokenUser(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).sub || null;
  } catch {
    return null;
  }
}

/** The 1:1 conversation id: the two user ids in byte order. */
export function dmId(a, b) {
  return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

export class Store extends EventTarget {
  constructor(user) {
    super();
    this.user = user;
    this.conversations = new Map();
    this.online = new Map(); // user -> {online, last_seen}
    this.openId = null;
    this.scheduled = false;
  }

  /** Coalesces changes into one `change` event per frame. */
  changed() {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.dispatchEvent(new Event('change'));
    });
  }

  conversation(id) {
    let c = this.conversations.get(id);
    if (!c) {
      const dm = id.startsWith('dm:');
      const [, a, b] = id.split(':');
      c = {
        id,
        kind: dm ? 'dm' : 'group',
        peer: dm ? (a === this.user ? b : a) : null,
        group: dm ? null : id.slice(2),
        name: null,
        messages: new Map(), // id (or cid while pending) -> message
        loaded: false, // newest page fetched
        more: false, // older messages exist
        unread: 0,
        last: null, // {id, ts, from, preview}
        delivered: new Set(), // ids of own messages a recipient device acked
        seenUpTo: '', // own messages up to this id were read
        readSent: '', // our read marker as last sent
        typing: null, // {by, until}
      };
      this.conversations.set(id, c);
    }
    return c;
  }

  title(c) {
    return c.kind === 'dm' ? c.peer : c.name || 'group';
  }

  /** Adds a message (live, replayed or from history); returns false for a repeat, and for
   * an edit or delete event, which changes the message it names instead. */
  addMessage(m, { pending = false } = {}) {
    const c = this.conversation(m.conversation);
    if (m.change) {
      this.applyChange(c, m.change, m.body, m.ts, m.from);
      return false;
    }
    this.applyState(c, m);
    const key = pending ? m.cid : m.id;
    if (c.messages.has(key)) return false;
    c.messages.set(key, { ...m, pending });
    if (!pending && (!c.last || m.id > c.last.id)) {
      c.last = { id: m.id, ts: m.ts, from: m.from, preview: (m.body || '').slice(0, 100), deleted: !!m.deleted };
    }
    this.changed();
    return true;
  }

  /** An edit (new text) or delete of a message we hold; a delete is final. Applying one
   * twice changes nothing. */
  applyChange(c, change, body, ts, from) {
    const m = c.messages.get(change.id);
    if (!m || m.deleted) return;
    if (change.kind === 'react') {
      this.applyReaction(m, change, from === this.user);
      this.changed();
      return;
    }
    if (change.kind === 'delete') {
      Object.assign(m, { body: '', reply: null, deleted: true, reactions: [] });
      // Deleted for everyone: also where a reply quoted it.
      for (const r of c.messages.values()) {
        if (r.reply && r.reply.id === m.id) r.reply = { ...r.reply, preview: '', deleted: true };
      }
    } else if (change.kind === 'edit' && !(m.edited > ts)) {
      Object.assign(m, { body, edited: ts });
    } else return;
    if (c.last && c.last.id === m.id) {
      c.last = { ...c.last, preview: [...m.body].slice(0, 100).join(''), deleted: m.deleted };
    }
    this.changed();
  }

  /** Moves one reaction from `change.replaces` to `change.emoji` in the message's counts. */
  applyReaction(m, change, mine) {
    const counts = (m.reactions || []).map((r) => ({ ...r }));
    const bump = (emoji, by) => {
      if (!emoji) return;
      let r = counts.find((x) => x.emoji === emoji);
      if (!r) counts.push((r = { emoji, count: 0 }));
      r.count += by;
      if (mine) r.mine = by > 0;
    };
    bump(change.replaces, -1);
    bump(change.emoji, 1);
    m.reactions = counts.filter((r) => r.count > 0).sort((a, b) => b.count - a.count);
  }

  /** A history page's `state` of one of our messages: the ticks it had live. */
  applyState(c, m) {
    if (m.state === 'seen' && m.id > c.seenUpTo) c.seenUpTo = m.id;
    else if (m.state === 'delivered' && !c.delivered.has(m.id)) c.delivered.add(m.id);
    else return;
    this.changed();
  }

  /** A pending send got its permanent id. */
  confirm(sent) {
    const c = this.conversation(sent.conversation);
    const m = c.messages.get(sent.cid);
    if (!m) return;
    c.messages.delete(sent.cid);
    this.addMessage({ ...m, id: sent.id, ts: sent.ts, conversation: sent.conversation });
  }

  /** Messages oldest first; pending ones last. */
  ordered(c) {
    const all = [...c.messages.values()];
    const done = all.filter((m) => !m.pending).sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
    return done.concat(all.filter((m) => m.pending));
  }

  oldestId(c) {
    const o = this.ordered(c).find((m) => !m.pending);
    return o ? o.id : null;
  }

  newestId(c) {
    const done = this.ordered(c).filter((m) => !m.pending);
    return done.length ? done[done.length - 1].id : null;
  }

  /** SENT, DELIVERED or SEEN of one of our own messages. */
  tickState(c, m) {
    if (m.pending) return 'pending';
    if (c.seenUpTo && m.id <= c.seenUpTo) return 'seen';
    if (c.delivered.has(m.id)) return 'delivered';
    return 'sent';
  }

  /** The newest message from someone else that our read marker does not cover yet. */
  unreadUpTo(c) {
    let up = null;
    for (const m of c.messages.values()) {
      if (!m.pending && m.from !== this.user && m.id > c.readSent && (!up || m.id > up)) up = m.id;
    }
    return up;
  }
}

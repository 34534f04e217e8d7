// ui.js: draws the store into the page (conversation list, open chat, status line) and
// nothing else. User text only ever goes into textContent.

const $ = (id) => document.getElementById(id);

const STATUS_TEXT = {
  idle: '',
  connecting: 'connecting…',
  online: 'online',
  reconnecting: 'reconnecting…',
  stopped: 'disconnected',
};

/** The reactions offered on every message; any other counted one can be joined. */
const QUICK_REACTIONS = ['👍', '❤️', '😂'];

const TICKS = { pending: '🕓', sent: '✓', delivered: '✓✓', seen: '✓✓' };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('data-')) node.setAttribute(k, v);
    else node[k] = v;
  }
  node.append(...children.filter(Boolean));
  return node;
}

export function showSignIn(error = '') {
  $('signin').hidden = false;
  $('app').hidden = true;
  $('signout').hidden = true;
  $('me').textContent = '';
  $('signin-error').textContent = error;
}

export function showApp(user) {
  $('signin').hidden = true;
  $('app').hidden = false;
  $('signout').hidden = false;
  $('me').textContent = user;
}

export function showStatus({ state, reason }) {
  const s = $('status');
  s.dataset.state = state;
  s.textContent = STATUS_TEXT[state] ?? state;
  s.title = reason || '';
}

export function showError(text) {
  $('app-error').textContent = text;
}

const size = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(0)} KB` : `${(n / (1 << 20)).toFixed(1)} MB`);

const time = (ts) => (ts ? new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '');

export function renderConversations(store) {
  const list = [...store.conversations.values()]
    .filter((c) => c.last || c.id === store.openId)
    .sort((a, b) => (b.last?.ts ?? Infinity) - (a.last?.ts ?? Infinity));
  const items = list.map((c) => {
    const presence = c.kind === 'dm' ? store.online.get(c.peer) : null;
    const text = c.last?.deleted ? 'message deleted' : c.last?.preview;
    const preview = c.last ? `${c.last.from === store.user ? 'you' : c.last.from}: ${text}` : '';
    return el(
      'li',
      { 'data-conversation': c.id, class: c.id === store.openId ? 'open' : '' },
      el('span', { class: `title${presence?.online ? ' online' : ''}`, text: store.title(c) }),
      c.unread > 0 ? el('span', { class: 'unread', text: String(c.unread) }) : null,
      el('span', { class: 'preview', text: preview }),
    );
  });
  $('conversations').replaceChildren(...items);
}

export function renderChat(store) {
  const c = store.openId && store.conversations.get(store.openId);
  $('chat').hidden = !c;
  if (!c) return;
  $('chat-title').textContent = store.title(c);
  const presence = c.kind === 'dm' ? store.online.get(c.peer) : null;
  $('chat-presence').textContent = presence
    ? presence.online
      ? 'online'
      : presence.last_seen
        ? `last seen ${time(presence.last_seen)}`
        : 'offline'
    : '';
  $('chat-presence').dataset.online = presence?.online ? 'true' : 'false';
  $('older').hidden = !c.more;

  const scroller = $('scroller');
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const items = store.ordered(c).map((m) => {
    const own = m.from === store.user;
    if (m.event) return el('li', { class: 'message event', 'data-id': m.id, text: m.body });
    const state = own ? store.tickState(c, m) : null;
    const live = !m.pending && !m.deleted;
    const button = (cls, title, text) => el('button', { class: cls, type: 'button', title, 'data-id': m.id, text });
    return el(
      'li',
      {
        class: `message${own ? ' own' : ''}${m.deleted ? ' deleted' : ''}`,
        'data-id': m.id || m.cid,
        'data-from': m.from,
      },
      c.kind === 'group' && !own ? el('span', { class: 'from', text: m.from }) : null,
      m.reply
        ? el('blockquote', {
            class: `quote${m.reply.deleted ? ' deleted' : ''}`,
            text: `${m.reply.from}: ${m.reply.deleted ? 'message deleted' : m.reply.preview}`,
          })
        : null,
      el('span', { class: 'body', text: m.deleted ? 'message deleted' : m.body }),
      m.attachment && !m.deleted
        ? el('a', {
            class: 'attachment',
            href: '#',
            'data-attachment': m.attachment.id,
            'data-name': m.attachment.name,
            text: `📎 ${m.attachment.name} (${size(m.attachment.size)})`,
          })
        : null,
      m.edited && !m.deleted ? el('span', { class: 'edited', text: ' (edited)' }) : null,
      el('span', { class: 'meta', text: time(m.ts) }),
      own ? el('span', { class: 'tick', 'data-state': state, title: state, text: ` ${TICKS[state]}` }) : null,
      live && m.reactions?.length
        ? el(
            'span',
            { class: 'reactions' },
            ...m.reactions.map((r) =>
              el('button', {
                class: `reaction${r.mine ? ' mine' : ''}`,
                type: 'button',
                title: r.mine ? 'Remove your reaction' : `React ${r.emoji}`,
                'data-id': m.id,
                'data-emoji': r.mine ? '' : r.emoji,
                text: `${r.emoji} ${r.count}`,
              }),
            ),
          )
        : null,
      live ? button('reply', 'Reply', '↩') : null,
      ...(live ? QUICK_REACTIONS.map((e) => el('button', { class: 'react', type: 'button', title: `React ${e}`, 'data-id': m.id, 'data-emoji': e, text: e })) : []),
      live && own ? button('edit', 'Edit', '✎') : null,
      live && own ? button('delete', 'Delete for everyone', '🗑') : null,
    );
  });
  $('messages').replaceChildren(...items);
  // Stay at the bottom for new messages; keep the view still when older ones are added.
  scroller.scrollTop = atBottom ? scroller.scrollHeight : scroller.scrollHeight - fromBottom;

  const typing = c.typing && c.typing.until > Date.now() ? `${c.typing.by} is typing…` : '';
  $('typing').textContent = typing;
}

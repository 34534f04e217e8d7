// protocol.js: one logical session with the gateway (docs/protocol.md). It connects with
// the stored cursor, pings every 30 s, reconnects by itself with exponential backoff and
// equal jitter, resends every `send` that has no `sent` yet (same cid), and matches query
// answers to their `qid`. It knows frames, not the UI.

const PING_INTERVAL_MS = 30_000;
const PONG_TIMEOUT_MS = 10_000;
const BACKOFF_BASE_MS = 1_000;
const BACKOFF_CAP_MS = 60_000;

/** Equal jitter: a random delay between half the nominal step and all of it. */
export function backoffDelay(attempt) {
  const nominal = Math.min(BACKOFF_BASE_MS * 2 ** attempt, BACKOFF_CAP_MS);
  return nominal / 2 + Math.random() * (nominal / 2);
}

/** An id for `cid` and `qid`: [A-Za-z0-9_-], unique enough per user. */
export function newId(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export class QueryError extends Error {
  constructor(frame) {
    super(frame.reason || 'query failed');
    this.code = frame.code;
  }
}

/**
 * Events: `status` ({state: 'connecting' | 'online' | 'reconnecting' | 'stopped', reason}),
 * `frame` (every server frame, after queries are matched), `welcome`.
 */
export class Connection extends EventTarget {
  /**
   * @param {object} o
   * @param {string} o.url WebSocket URL without query
   * @param {() => Promise<string|null>} o.token the current token (null: cannot connect)
   * @param {() => string} o.loadCursor
   * @param {(cursor: string) => void} o.saveCursor
   */
  constructor({ url, token, loadCursor, saveCursor }) {
    super();
    this.url = url;
    this.token = token;
    this.loadCursor = loadCursor;
    this.saveCursor = saveCursor;
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.online = false;
    this.timer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.unconfirmed = new Map(); // cid -> send frame, until `sent` or a final error
    this.queries = new Map(); // qid -> {resolve, reject}
  }

  start() {
    this.stopped = false;
    this.#status('connecting');
    this.#connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.#stopHeartbeat();
    if (this.ws) this.ws.close(1000, 'bye');
    this.#status('stopped', 'signed out');
  }

  /** Sends a frame now if the socket is open; returns whether it did. */
  send(frame) {
    if (!this.online) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Sends a chat message; kept and resent after reconnects until `sent` arrives. */
  sendMessage(frame) {
    this.unconfirmed.set(frame.cid, frame);
    this.send(frame);
  }

  /** Sends a query and resolves with its answer (rejects on `error` or a lost connection). */
  query(frame) {
    const qid = newId('q');
    return new Promise((resolve, reject) => {
      if (!this.send({ ...frame, qid })) {
        reject(new Error('offline'));
        return;
      }
      this.queries.set(qid, { resolve, reject });
    });
  }

  async #connect() {
    const token = await this.token();
    if (this.stopped) return;
    if (!token) {
      this.#status('stopped', 'no token');
      return;
    }
    const cursor = this.loadCursor() || '';
    const url = `${this.url}?access_token=${token}&cursor=${encodeURIComponent(cursor)}`;
    let ws;
    try {
      ws = new WebSocket(url, ['natter.v1.json']);
    } catch (e) {
      this.#scheduleReconnect(backoffDelay(this.attempt++), String(e));
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => this.#receive(ev.data);
    ws.onclose = (ev) => this.#closed(ws, ev.code, ev.reason);
  }

  #receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame.type) {
      case 'welcome':
        this.online = true;
        this.attempt = 0;
        this.#startHeartbeat();
        this.#status('online');
        this.dispatchEvent(new CustomEvent('welcome', { detail: frame }));
        for (const send of this.unconfirmed.values()) this.send(send);
        break;
      case 'pong':
        clearTimeout(this.pongTimer);
        break;
      case 'sent':
        this.unconfirmed.delete(frame.cid);
        break;
      case 'error':
        if (frame.cid && frame.code < 1500) this.unconfirmed.delete(frame.cid);
        if (frame.cid && frame.code >= 1500) {
          // Temporary: try the same cid again shortly.
          const again = this.unconfirmed.get(frame.cid);
          if (again) setTimeout(() => this.send(again), backoffDelay(1));
        }
        break;
    }
    if (frame.qid && this.queries.has(frame.qid)) {
      const q = this.queries.get(frame.qid);
      this.queries.delete(frame.qid);
      if (frame.type === 'error') q.reject(new QueryError(frame));
      else q.resolve(frame);
    }
    this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
    // Stored after the frame was processed, so a crash replays rather than loses it.
    if ((frame.type === 'message' || frame.type === 'synced') && frame.cursor) {
      this.saveCursor(frame.cursor);
    }
  }

  #closed(ws, code, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.online = false;
    this.#stopHeartbeat();
    for (const q of this.queries.values()) q.reject(new Error('connection lost'));
    this.queries.clear();
    if (this.stopped) return;
    if (code >= 4500 && code <= 4999) {
      this.#status('stopped', `closed by the server: ${reason || code}`);
      return;
    }
    if (code === 4000) {
      // The gateway is draining: go at once, spread out a little.
      this.#scheduleReconnect(Math.random() * 500, 'server restarting');
      return;
    }
    this.#scheduleReconnect(backoffDelay(this.attempt++), reason || `closed (${code})`);
  }

  #scheduleReconnect(delayMs, reason) {
    this.#status('reconnecting', reason);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.#connect(), delayMs);
  }

  #startHeartbeat() {
    this.#stopHeartbeat();
    this.pingTimer = setInterval(() => {
      this.send({ type: 'ping', ts: Date.now() });
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => this.ws && this.ws.close(), PONG_TIMEOUT_MS);
    }, PING_INTERVAL_MS);
  }

  #stopHeartbeat() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }

  #status(state, reason = '') {
    this.dispatchEvent(new CustomEvent('status', { detail: { state, reason } }));
  }
}

// The HTTP side of the console: JSON calls with the bearer key, the error body of API.md §0,
// stream tokens for EventSource (§12), and a reader of SSE bodies fetched with the key.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || "unknown";
    this.issues = body?.issues || [];
    this.requestId = body?.request_id || null;
  }

  /** One line for a person: the server's message, its code and the request id to quote. */
  describe() {
    const issues = this.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    const id = this.requestId ? ` (request ${this.requestId})` : "";
    return `${this.message}${issues ? ` — ${issues}` : ""} [${this.code}]${id}`;
  }
}

// The event types the server streams today (and those API.md names). EventSource delivers
// a named event only to a listener for that name; a frame of a type not listed here leaves a
// gap in `seq`, which the timeline fills from the paged events route.
export const EVENT_TYPES = [
  "run.created",
  "run.started",
  "run.completed",
  "run.failed",
  "run.cancelled",
  "message.delta",
  "message.completed",
  "message.discarded",
  "model.retry_scheduled",
  "tool.called",
  "tool.started",
  "tool.deferred",
  "tool.completed",
  "approval.requested",
  "approval.resolved",
  "thread.created",
  "thread.renamed",
  "thread.deleted",
  "thread.message_added",
  "thread.run_admitted",
  "thread.run_queued",
  "thread.run_released",
  "agent.created",
  "agent.updated",
  "agent.deleted",
  "policy.changed",
  "key.created",
  "key.revoked",
  "tenant.created",
  "connector.recovered",
  "webhook.received",
];

export const TERMINAL = new Set(["run.completed", "run.failed", "run.cancelled"]);
export const ENDED = new Set(["completed", "failed", "cancelled"]);

export class Api {
  constructor(key, { onUnauthorized } = {}) {
    this.key = key;
    this.onUnauthorized = onUnauthorized || (() => {});
  }

  headers(extra = {}) {
    return {
      Authorization: `Bearer ${this.key}`,
      "X-Nome-Client-Surface": "console",
      ...extra,
    };
  }

  url(path, query) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== null && value !== undefined && value !== "") params.set(name, value);
    }
    const text = params.toString();
    return text ? `${path}?${text}` : path;
  }

  /** A JSON call; resolves to {data, headers, status}, rejects with ApiError. */
  async call(method, path, { query, body, minPosition, signal } = {}) {
    const headers = this.headers();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    // Read-your-writes (API.md §0): wait until the read models have seen this position.
    if (minPosition) headers["X-Nome-Min-Position"] = String(minPosition);
    const response = await fetch(this.url(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
    return this.answer(response);
  }

  async answer(response) {
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = { error: text.slice(0, 200), code: "not_json" };
      }
    }
    if (!response.ok) {
      const error = new ApiError(response.status, data);
      if (response.status === 401) this.onUnauthorized(error);
      throw error;
    }
    return { data, headers: response.headers, status: response.status };
  }

  async get(path, options) {
    return (await this.call("GET", path, options)).data;
  }

  async post(path, body, options) {
    return this.call("POST", path, { ...options, body });
  }

  /** A stream token for one SSE path, and the log head it was issued at. */
  async streamToken(path) {
    const { data, headers } = await this.post("/v1/stream-tokens", { path });
    return {
      token: data.token,
      expiresAt: data.expires_at,
      position: Number(headers.get("X-Nome-Position") || 0),
    };
  }

  /** A GET whose body is kept as a Blob (the NDJSON export), with the bearer header. */
  async blob(path, query) {
    const response = await fetch(this.url(path, query), {
      headers: this.headers(),
      cache: "no-store",
    });
    if (!response.ok) return this.answer(response);
    return response.blob();
  }

  /** A GET of an SSE body with the bearer header: `onFrame(frame, bytes)` per frame as it
   * arrives; resolves to every byte received once the server ends the stream. */
  async readSse(path, { onFrame, signal } = {}) {
    const response = await fetch(path, { headers: this.headers(), signal, cache: "no-store" });
    if (!response.ok) return this.answer(response);
    const reader = response.body.getReader();
    const parser = new SseParser(onFrame || (() => {}));
    const chunks = [];
    let size = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
      parser.push(value);
    }
    const all = new Uint8Array(size);
    let at = 0;
    for (const chunk of chunks) {
      all.set(chunk, at);
      at += chunk.length;
    }
    return all;
  }
}

/** Splits an SSE byte stream into frames {id, event, data}; comments are skipped. */
export class SseParser {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.decoder = new TextDecoder();
    this.buffer = "";
  }

  push(bytes) {
    this.buffer += this.decoder.decode(bytes, { stream: true });
    let end;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const frame = { id: null, event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") frame.id = value;
        else if (field === "event") frame.event = value;
        else if (field === "data") frame.data.push(value);
      }
      if (frame.data.length) this.onFrame({ ...frame, data: frame.data.join("\n") });
    }
  }
}

/**
 * An SSE route followed with EventSource and a stream token. The browser reconnects on its
 * own (sending Last-Event-ID) while the token is valid; once it gives up (the token expired,
 * the server restarted) a new token is fetched and the stream resumes after the last id seen.
 */
export class LiveStream {
  constructor(api, path, { after = 0, onEvent, onState, until } = {}) {
    this.api = api;
    this.path = path;
    this.last = after;
    this.onEvent = onEvent;
    this.onState = onState || (() => {});
    // A stream the server ends (a run's, after its terminal event) is closed by us at that
    // event: EventSource would otherwise reconnect to it for ever.
    this.until = until || (() => false);
    this.source = null;
    this.stopped = false;
    this.retry = 0;
    this.timer = null;
  }

  async start() {
    if (this.stopped) return;
    this.onState("connecting");
    let grant;
    try {
      grant = await this.api.streamToken(this.path);
    } catch (error) {
      if (error instanceof ApiError && error.status < 500 && error.status !== 429) {
        this.onState("failed", error);
        return;
      }
      this.later();
      return;
    }
    if (this.stopped) return;
    // No position to resume from yet: start where the log was when the token was issued.
    if (this.last === null) this.last = grant.position;
    const url = this.api.url(this.path, { after: this.last, stream_token: grant.token });
    const source = new EventSource(url);
    this.source = source;
    const handle = (message) => {
      const envelope = JSON.parse(message.data);
      const id = Number(message.lastEventId);
      if (Number.isFinite(id) && id > this.last) this.last = id;
      this.retry = 0;
      this.onEvent(envelope);
      if (this.until(envelope)) this.stop("ended");
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, handle);
    source.onopen = () => this.onState("live");
    source.onerror = () => {
      if (this.stopped) return;
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        this.later();
      } else {
        this.onState("reconnecting");
      }
    };
  }

  later() {
    this.onState("reconnecting");
    const wait = Math.min(1000 * 2 ** this.retry, 15000);
    this.retry += 1;
    this.timer = setTimeout(() => this.start(), wait);
  }

  stop(state = "stopped") {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.onState(state);
  }
}
